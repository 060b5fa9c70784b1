"""Param-tree helpers shared by conversion, checkpoints and export.

Flat `{"a/b/kernel": leaf}` views of nested param dicts, the shapes a model
expects (traced abstractly, no weights allocated), the per-layer vs scanned
layouts, and error messages that list keys. jax and the model are imported
only by the two functions that trace or restack params, so that the pure
helpers stay cheap to import.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from electra_jax.config import ElectraConfig
from electra_jax.errors import ElectraError


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
  """Nested dict -> {"a/b/c": leaf}."""
  out = {}
  for k, v in tree.items():
    path = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out.update(flatten(v, path))
    else:
      out[path] = v
  return out


def unflatten(flat: Mapping[str, Any]) -> dict:
  """{"a/b/c": leaf} -> nested dict."""
  tree: dict = {}
  for path, v in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return tree


def format_keys(keys, limit: int = 12) -> str:
  """The sorted keys, comma-separated, at most `limit` of them (then a count)."""
  keys = sorted(keys)
  shown = ", ".join(keys[:limit])
  return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def expected_shapes(config: ElectraConfig, head: str | None, **head_kwargs) -> dict[str, tuple]:
  """{"a/b/kernel": shape} of the params `build_model(config, head)` creates (unrolled layers)."""
  try:
    key = tuple(sorted(head_kwargs.items()))
    hash(key)
  except TypeError:
    raise ElectraError(f"head arguments must be plain values, got {head_kwargs!r}") from None
  return dict(_expected_shapes(config, head, key))


@functools.lru_cache(maxsize=32)
def _expected_shapes(config: ElectraConfig, head: str | None, head_kwargs: tuple) -> dict:
  # Traced abstractly (no weights allocated); cached because loading checks
  # shapes more than once and tracing a 24-layer model takes a while.
  import jax
  from flax import linen as nn

  from electra_jax import model as model_lib

  try:
    module = model_lib.build_model(config, head, **dict(head_kwargs))
  except TypeError:
    raise ElectraError(
      f"head {head!r} does not take arguments {', '.join(k for k, _ in head_kwargs)}"
    ) from None
  inputs = model_lib.dummy_inputs(module, 1, 2)
  # Unboxed inside the trace: outside it, under the train loop's mesh (fine-tuning
  # saves checkpoints mid-run), unbox's sharding constraint rejects abstract values.
  params = jax.eval_shape(lambda: nn.meta.unbox(module.init(jax.random.key(0), inputs)["params"]))
  return {path: tuple(leaf.shape) for path, leaf in flatten(params).items()}


def check_shapes(flat: Mapping[str, Any], expected: Mapping[str, tuple], head) -> None:
  """Raises `ElectraError` listing params missing, unexpected or of the wrong shape."""
  missing = sorted(set(expected) - set(flat))
  unexpected = sorted(set(flat) - set(expected))
  bad = [
    f"{p} {tuple(np.shape(flat[p]))} (expected {expected[p]})"
    for p in sorted(set(flat) & set(expected))
    if tuple(np.shape(flat[p])) != expected[p]
  ]
  if missing or unexpected or bad:
    parts = []
    if missing:
      parts.append(f"missing {format_keys(missing)}")
    if unexpected:
      parts.append(f"unexpected {format_keys(unexpected)}")
    if bad:
      parts.append(f"shape mismatch {format_keys(bad, 6)}")
    raise ElectraError(f"params do not match the config and head {head!r}: {'; '.join(parts)}")


def is_scanned(params: Mapping) -> bool:
  """Whether `params` use the scan-over-layers layout (`encoder/layer/layer/...`)."""
  root = params.get("electra", params)
  encoder = root.get("encoder", {}) if isinstance(root, Mapping) else {}
  return "layer" in encoder


def unrolled(params: Mapping, config: ElectraConfig) -> dict:
  """`params` in the per-layer layout (`layer_0`, ...), converting a scanned tree."""
  if not is_scanned(params):
    return dict(params)
  from electra_jax.model import scan_to_layers

  return scan_to_layers(dict(params), config.num_hidden_layers)
