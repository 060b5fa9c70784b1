"""Experiment configs: Python files with `get_config(arg)` plus command-line overrides.

`--config experiments/configs/pretrain.py:size=small --config.batch_size=64`
is parsed by `ml_collections.config_flags` (big_vision / Flax-examples
style); this module only wraps it so that every mistake becomes a one-line
`ElectraError` instead of an absl traceback. `parse_arg` is the config files'
shared parser for their own argument (the `size=small` after the colon).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from collections.abc import Iterable, Mapping

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


def parse_arg(
  arg: str | None,
  defaults: Mapping[str, str],
  choices: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, str]:
  """Parses a config file's argument, `"size=tiny,objective=mlm"`, for `get_config`.

  The argument picks a preset; it is not an override mechanism (that is
  `--config.KEY=VALUE`), so a key it does not take is an error, never ignored.
  Errors are `ValueError`s, which `load_config` reports as one line.

  Args:
    arg: the text after `:` in `--config path.py:ARG`; None or "" for defaults.
    defaults: every key the argument takes, in the order the error lists
      them, with its default value.
    choices: for some keys, the values allowed (e.g. `{"size": SIZES}`).

  Returns:
    `defaults` updated with the argument's values (whitespace stripped).
  """
  out = dict(defaults)
  keys = tuple(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or key not in keys:
      close = difflib.get_close_matches(key, keys, n=1)
      hint = f" (did you mean {close[0]!r}?)" if close and sep else ""
      raise ValueError(
        f"unknown argument {item.strip()!r}{hint}: the argument takes "
        f"{', '.join(k + '=...' for k in keys)}; set any other key with --config.KEY=VALUE"
      )
    out[key] = value.strip()
  for key, allowed in (choices or {}).items():
    allowed = list(allowed)
    if out[key] not in allowed:
      raise ValueError(f"unknown {key} {out[key]!r}; choose from {', '.join(allowed)}")
  return out


# Keys of experiments/configs/glue.py that only sentence(-pair) classification reads.
CLASSIFICATION_ONLY_KEYS = (
  "data_dir",
  "text_column",
  "text_pair_column",
  "label_column",
  "regression",
  "class_weights",
  "augment",
  "head",
  "double_unordered",
  "scale_regression",
  "write_test_predictions",
)


def finetuning_base_config(
  config_file: str, size: str, keep: Iterable[str] = ()
) -> ml_collections.ConfigDict:
  """`glue.py`'s config beside `config_file` for `size`, minus the classification-only keys.

  The fine-tuning configs of other tasks (SQuAD, token classification,
  multiple choice) start from it: the keys every task shares (model,
  optimizer, seeds, mesh, recipe switches) stay `glue.py`'s. `keep` names
  classification-only keys the task reads too (e.g. SQuAD's `head`).
  """
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), "glue.py")
  spec = importlib.util.spec_from_file_location("_electra_glue_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(f"task=custom,size={size}")
  for key in CLASSIFICATION_ONLY_KEYS:
    if key not in keep:
      del c[key]
  return c


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
    raise ElectraError(_flag_error(spec, e)) from None
  except (AttributeError, KeyError) as e:
    # ml_collections' message is a repr of a repr with "Did you mean" on a
    # second line; find the key ourselves and say it plainly.
    raise ElectraError(_unknown_key(spec, overrides) or _one_line(spec, e)) from None
  except ElectraError:
    raise
  except Exception as e:  # the config file itself raised
    raise ElectraError(_one_line(spec, e)) from None
  return cfg


def _root_cause(e: BaseException) -> BaseException:
  """The first exception of a chain (absl and ml_collections each re-wrap it)."""
  seen = set()
  while id(e) not in seen:
    seen.add(id(e))
    parent = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    if parent is None:
      break
    e = parent
  return e


def _one_line(spec: str, e: BaseException) -> str:
  """`spec: reason` on one line, for an error the config file raised."""
  root = _root_cause(e)
  reason = " ".join(str(root).split())
  if not isinstance(root, ValueError):  # a bug in the file rather than a refused argument
    reason = f"{type(root).__name__}: {reason}"
  return f"{spec}: {reason}"


def _flag_error(spec: str, e: Exception) -> str:
  if "Error whilst parsing config file" in str(e):  # get_config raised
    return _one_line(spec, e)
  # A bad override value: "flag --config.batch_size=abc: invalid literal ...".
  return " ".join(str(e).removeprefix("flag ").split())


def _unknown_key(spec: str, overrides) -> str | None:
  """The message for the first override naming no key of the config, if any."""
  try:
    cfg = load_config(spec)
  except ElectraError:
    return None
  for override in overrides:
    key = override.removeprefix("--config.").split("=", 1)[0]
    node, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
      if isinstance(node, ml_collections.ConfigDict) and part in node:
        node = node[part]
        continue
      siblings = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      close = difflib.get_close_matches(part, siblings, n=1)
      prefix = "".join(p + "." for p in parts[:i])
      hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
      return f"unknown config key '{key}'{hint}; run with --help-config to list the keys"
  return None


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
