"""Experiment configs: Python files with `get_config(arg)` plus command-line overrides.

`--config experiments/configs/pretrain.py:size=small --config.batch_size=64`
is parsed by `ml_collections.config_flags` (big_vision / Flax-examples
style); this module only wraps it so that every mistake becomes a one-line
`ElectraError` instead of an absl traceback.
"""

from __future__ import annotations

import os

import ml_collections
from absl import flags
from ml_collections import config_flags

from electra_jax.errors import ElectraError


def _flatten_keys(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for k, v in cfg.items():
    name = f"{prefix}{k}"
    keys.append(name)
    if isinstance(v, ml_collections.ConfigDict):
      keys.extend(_flatten_keys(v, name + "."))
  return keys


def load_config(
  spec: str, overrides: list[str] | tuple[str, ...] = ()
) -> ml_collections.ConfigDict:
  """Loads `path.py[:arg]` and applies `--config.key=value` overrides.

  Args:
    spec: a config file path, optionally followed by `:arg` passed to
      `get_config(arg)` (e.g. `experiments/configs/pretrain.py:size=tiny`).
    overrides: strings like `--config.batch_size=32`.

  Returns:
    The locked `ConfigDict` (typos in later code raise instead of adding keys).
  """
  path = spec.split(":", 1)[0]
  if not os.path.exists(path):
    raise ElectraError(
      f"config file {path} not found (expected e.g. experiments/configs/pretrain.py:size=tiny)"
    )
  bad = [o for o in overrides if not o.startswith("--config.")]
  if bad:
    raise ElectraError(
      f"unrecognised arguments {' '.join(bad)} (config overrides look like --config.key=value)"
    )
  argv = ["electra-jax", f"--config={spec}", *overrides]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config", default=None, flag_values=fv, lock_config=True, sys_argv=argv
  )
  try:
    fv(argv)
    cfg = fv.config
    if not isinstance(cfg, ml_collections.ConfigDict):
      raise ElectraError(f"{path}: get_config() must return an ml_collections.ConfigDict")
  except flags.Error as e:
    raise ElectraError(str(e).splitlines()[0]) from None
  except (AttributeError, KeyError) as e:
    key = str(e).strip("'\"")
    raise ElectraError(
      f"unknown config key {key!r} in overrides; run with --help-config to list the keys"
    ) from None
  except ElectraError:
    raise
  except Exception as e:  # the config file itself raised
    raise ElectraError(
      f"{spec}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    ) from None
  return cfg


def describe_config(cfg: ml_collections.ConfigDict) -> str:
  """All keys and values, one per line (for `--help-config`)."""
  lines = []
  for key in _flatten_keys(cfg):
    value = cfg
    for part in key.split("."):
      value = value[part]
    if not isinstance(value, ml_collections.ConfigDict):
      lines.append(f"  config.{key} = {value!r}")
  return "\n".join(lines)


def to_dict(cfg: ml_collections.ConfigDict) -> dict:
  return cfg.to_dict()
