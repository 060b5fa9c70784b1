"""HF PyTorch ELECTRA state dicts <-> electra-jax param pytrees: the rule table.

The mapping is one rule table, `ENCODER_RULES` plus each head's `hf_rules`
(in the head registry, `heads.py`): each rule pairs a HF module path with ours
(placeholders such as `{i}` match a layer index on either side), and says what
kind of module it is, which fixes how the leaves rename (`weight` -> `kernel`
transposed for a Linear, `weight` -> `scale` for a LayerNorm, `weight` ->
`embedding` for an Embedding). The same table runs in both directions.

Conversion is strict: a key no rule knows, a param the model expects but the
checkpoint lacks, or a tensor of the wrong shape aborts with an `ElectraError`
that lists the keys. Two exceptions, on purpose: the `embeddings.position_ids`
and `embeddings.token_type_ids` buffers that older checkpoints store are
skipped (they are `arange` / zeros, not weights), and the masked-LM decoder
weight `generator_lm_head.weight` is dropped because our decoder is tied to
the word embeddings (we check that it equals them).

Pure: state dicts and config dicts in, param trees and config dicts out; no
files. Reading and writing HF directories (`load_hf`, `save_hf`, the
`convert` subcommand) is in `pretrained.py`, next to `from_pretrained`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from electra_jax.config import ElectraConfig
from electra_jax.errors import ElectraError
from electra_jax.heads import (
  EMBED,
  HEAD_OF_ARCHITECTURE,
  HEADS,
  LINEAR,
  NORM,
  TIED_DECODER,
  check_head,
  check_hf_exportable,
)
from electra_jax.trees import expected_shapes, flatten, format_keys, unflatten, unrolled

log = logging.getLogger(__name__)

# HF leaf -> (our leaf, transpose?). A `None` leaf is dropped (tied weight).
_LEAVES = {
  LINEAR: {"weight": ("kernel", True), "bias": ("bias", False)},
  NORM: {"weight": ("scale", False), "bias": ("bias", False)},
  EMBED: {"weight": ("embedding", False)},
  TIED_DECODER: {"weight": (None, False), "bias": ("bias", False)},
}
# Our leaf -> (HF leaf, transpose?), per kind.
_HF_LEAVES = {
  kind: {ours: (hf, t) for hf, (ours, t) in leaves.items() if ours is not None}
  for kind, leaves in _LEAVES.items()
}

# Placeholder -> the alternatives it matches, on both sides of a rule.
_PLACEHOLDERS = {
  "i": r"\d+",
  "emb": "word|position|token_type",
  "proj": "query|key|value",
  "disc": "dense|dense_prediction",
  "cls": "dense|out_proj",
}

# The encoder (HF `ElectraModel`). HF modules are `.`-separated, ours `/`.
ENCODER_RULES = (
  ("embeddings.{emb}_embeddings", "embeddings/{emb}_embeddings", EMBED),
  ("embeddings.LayerNorm", "embeddings/LayerNorm", NORM),
  ("embeddings_project", "embeddings_project", LINEAR),
  ("encoder.layer.{i}.attention.self.{proj}", "encoder/layer_{i}/attention/self/{proj}", LINEAR),
  ("encoder.layer.{i}.attention.output.dense", "encoder/layer_{i}/attention/output/dense", LINEAR),
  (
    "encoder.layer.{i}.attention.output.LayerNorm",
    "encoder/layer_{i}/attention/output/LayerNorm",
    NORM,
  ),
  ("encoder.layer.{i}.intermediate.dense", "encoder/layer_{i}/intermediate/dense", LINEAR),
  ("encoder.layer.{i}.output.dense", "encoder/layer_{i}/output/dense", LINEAR),
  ("encoder.layer.{i}.output.LayerNorm", "encoder/layer_{i}/output/LayerNorm", NORM),
)

# Non-persistent buffers that older HF checkpoints saved anyway.
SKIPPED_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")

# HF key prefixes of the encoder inside a head model (`electra.`). Stripped
# from every key on loading, so a bare encoder loads from any head's file.
_HF_BASE_PREFIXES = tuple(sorted({f"{h.base_model_prefix}." for h in HEADS.values()} - {"."}))


class _Rule(NamedTuple):
  hf: re.Pattern
  ours: re.Pattern
  hf_template: str
  our_template: str
  kind: str


def _compile(template: str) -> re.Pattern:
  parts = re.split(r"(\{\w+\})", template)
  out = []
  for part in parts:
    m = re.fullmatch(r"\{(\w+)\}", part)
    out.append(f"(?P<{m.group(1)}>{_PLACEHOLDERS[m.group(1)]})" if m else re.escape(part))
  return re.compile("".join(out))


def _rules(table) -> tuple[_Rule, ...]:
  return tuple(_Rule(_compile(hf), _compile(ours), hf, ours, kind) for hf, ours, kind in table)


_ENCODER = _rules(ENCODER_RULES)
_HEADS = {name: _rules(head.hf_rules) for name, head in HEADS.items()}


def _match(rules, module: str, side: str):
  """Returns (rule, groups) of the first rule whose `side` pattern matches `module`."""
  for rule in rules:
    m = (rule.hf if side == "hf" else rule.ours).fullmatch(module)
    if m:
      return rule, m.groupdict()
  return None, None


def _strip_base(key: str) -> str:
  for prefix in _HF_BASE_PREFIXES:
    if key.startswith(prefix):
      return key[len(prefix) :]
  return key


def _our_base(head: str | None) -> str:
  """Our path prefix of the encoder params for `head` (`electra/`, or empty)."""
  prefix = HEADS[head].base_model_prefix
  return f"{prefix}/" if prefix else ""


# -- HF -> ours -----------------------------------------------------------------


class ConversionReport(NamedTuple):
  """What `hf_to_params` did besides mapping keys one to one."""

  skipped: list[str]  # buffers skipped on purpose, tied weights dropped
  unexpected: list[str]  # keys of another head (dropped when not strict)
  missing: list[str]  # our head params the checkpoint lacks (only when not strict)


@dataclasses.dataclass
class _Found:
  """The keys of a state dict, sorted by what `_read_key` made of them."""

  flat: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  source: dict[str, str] = dataclasses.field(default_factory=dict)  # our path -> HF key
  skipped: list[str] = dataclasses.field(default_factory=list)
  unexpected: list[str] = dataclasses.field(default_factory=list)
  unmapped: list[str] = dataclasses.field(default_factory=list)
  misshaped: list[str] = dataclasses.field(default_factory=list)
  tied_weight: tuple[str, Any] | None = None


def hf_to_params(
  state_dict: Mapping[str, np.ndarray],
  config: ElectraConfig,
  head: str | None,
  *,
  strict: bool = True,
  head_kwargs: Mapping[str, Any] | None = None,
) -> tuple[dict, ConversionReport]:
  """Maps a HF ELECTRA state dict onto our param tree for `head`.

  Args:
    state_dict: HF key -> numpy array (as `hf_files.load_hf_state_dict` returns).
    config: the architecture; every tensor is checked against its shapes.
    head: our head name (see `heads.HEADS`).
    strict: when True, keys of another head and params missing from the
      checkpoint are errors; when False they are dropped / reported in
      `ConversionReport.missing` (head params only: missing encoder weights
      are always an error).
    head_kwargs: extra head arguments (e.g. `num_labels`) that fix shapes.

  Returns:
    `(params, report)`: a nested dict of numpy arrays (unrolled layers) and
    what was skipped, dropped or left missing.

  Raises:
    ElectraError: unmapped keys, mis-shaped tensors, or missing params.
  """
  check_head(head)
  expected = expected_shapes(config, head, **dict(head_kwargs or {}))
  other_heads = [r for h, rules in _HEADS.items() if h != head for r in rules]
  found = _Found()
  for key, value in state_dict.items():
    _read_key(found, key, value, head, expected, other_heads, strict)
  missing = _check_found(found, expected, head, strict)
  if found.tied_weight is not None:
    word_embeddings = _our_base(head) + "embeddings/word_embeddings/embedding"
    _check_tied(found.tied_weight, found.flat.get(word_embeddings))
  return unflatten(found.flat), ConversionReport(found.skipped, found.unexpected, missing)


def _read_key(found: _Found, key, value, head, expected, other_heads, strict) -> None:
  """Maps one HF key onto our path, or files it under what is wrong with it."""
  # Heads prefix the encoder with `electra.`; a bare ElectraModel does not.
  name = _strip_base(key)
  if name in SKIPPED_KEYS:
    found.skipped.append(key)
    return
  module, _, leaf = name.rpartition(".")
  rule, groups = _match(_ENCODER, module, "hf")
  prefix = _our_base(head)
  if rule is None:
    rule, groups = _match(_HEADS[head], module, "hf")
    prefix = ""
  if rule is None:
    if _match(other_heads, module, "hf")[0] is not None and leaf in ("weight", "bias"):
      found.unexpected.append(key)
    else:
      found.unmapped.append(key)
    return
  our_leaf, transpose = _LEAVES[rule.kind].get(leaf, ("?", False))
  if our_leaf == "?":
    found.unmapped.append(key)
    return
  if our_leaf is None:
    found.tied_weight = (key, value)
    found.skipped.append(key)
    return
  path = prefix + rule.our_template.format(**groups) + "/" + our_leaf
  array = np.asarray(value)
  if transpose:
    array = np.ascontiguousarray(array.T)
  if path not in expected:
    found.unexpected.append(key)
    return
  if path in found.flat:
    raise ElectraError(f"checkpoint holds {path} twice: {found.source[path]} and {key}")
  if tuple(array.shape) != expected[path]:
    if not strict and not _is_encoder_path(path, head):
      # A head of another size (e.g. num_labels): re-initialised by the caller.
      found.unexpected.append(key)
      return
    found.misshaped.append(
      f"{key} {tuple(value.shape)} (config expects {_hf_shape(expected[path], transpose)})"
    )
    return
  found.flat[path] = array
  found.source[path] = key


def _check_found(found: _Found, expected, head, strict: bool) -> list[str]:
  """Raises for what no rule maps, wrong shapes and (strict) any mismatch; returns the missing."""
  if found.unmapped:
    raise ElectraError(
      f"{len(found.unmapped)} checkpoint keys match no conversion rule (not an ELECTRA "
      f"checkpoint?): {format_keys(found.unmapped)}"
    )
  if found.misshaped:
    raise ElectraError(
      f"shape mismatch between config and weights for {len(found.misshaped)} keys: "
      f"{format_keys(found.misshaped, 6)}; check that config.json belongs to these weights"
    )
  missing = sorted(set(expected) - set(found.flat))
  encoder_missing = [p for p in missing if _is_encoder_path(p, head)]
  encoder_unexpected = [k for k in found.unexpected if _is_encoder_key(k)]
  if encoder_unexpected:
    raise ElectraError(
      f"checkpoint has encoder weights the config does not describe (more layers? "
      f"embedding_size == hidden_size?): {format_keys(encoder_unexpected)}"
    )
  if encoder_missing:
    raise ElectraError(
      f"checkpoint lacks {len(encoder_missing)} encoder params the config needs: "
      f"{format_keys(encoder_missing)}; check num_hidden_layers / embedding_size in config.json"
    )
  if strict and (found.unexpected or missing):
    what = []
    if found.unexpected:
      what.append(f"unexpected keys (another head?): {format_keys(found.unexpected)}")
    if missing:
      what.append(f"missing params: {format_keys(missing)}")
    raise ElectraError(
      f"checkpoint does not match head {head!r}: {'; '.join(what)}; choose the checkpoint's "
      "head (--head / head=), or load with strict=False to re-initialise the head"
    )
  return missing


def _hf_shape(shape: tuple, transpose: bool) -> tuple:
  return tuple(reversed(shape)) if transpose else shape


def _is_encoder_key(key: str) -> bool:
  return _match(_ENCODER, _strip_base(key).rpartition(".")[0], "hf")[0] is not None


def _is_encoder_path(path: str, head: str | None) -> bool:
  base = _our_base(head)
  return not base or path.startswith(base)


def _check_tied(tied_weight, word_embeddings) -> None:
  key, value = tied_weight
  if word_embeddings is None:
    return
  value = np.asarray(value)
  if value.shape != word_embeddings.shape:
    raise ElectraError(
      f"{key} has shape {value.shape} but the tied word embeddings are {word_embeddings.shape}"
    )
  if not np.array_equal(value, word_embeddings):
    log.warning(
      "%s differs from the word embeddings (max abs diff %.3g); electra-jax ties the decoder to the "
      "word embeddings as HF does by default, so it is dropped",
      key,
      float(np.max(np.abs(value.astype(np.float32) - word_embeddings.astype(np.float32)))),
    )


# -- ours -> HF -----------------------------------------------------------------


def params_to_hf(params: Mapping, config: ElectraConfig, head: str | None) -> dict[str, np.ndarray]:
  """Our param tree (unrolled or scanned) -> a HF state dict for `head`'s HF architecture.

  Args:
    params: nested dict of arrays, as `model.init` / `from_pretrained` give.
    config: the architecture (for the layer count of a scanned tree).
    head: which head `params` belong to.

  Returns:
    HF key -> contiguous numpy array (tied `generator_lm_head.weight` omitted,
    as `transformers` does when saving).

  Raises:
    ElectraError: a param no rule maps.
  """
  base = check_hf_exportable(head).base_model_prefix
  flat = flatten(unrolled(params, config))
  out: dict[str, np.ndarray] = {}
  unmapped = []
  for path, value in flat.items():
    module, _, leaf = path.rpartition("/")
    hf_prefix = ""
    rule = None
    if not base or module.startswith(f"{base}/"):
      inner = module[len(base) + 1 :] if base else module
      rule, groups = _match(_ENCODER, inner, "ours")
      hf_prefix = f"{base}." if base else ""
    if rule is None:
      rule, groups = _match(_HEADS[head], module, "ours")
      hf_prefix = ""
    if rule is None or leaf not in _HF_LEAVES[rule.kind]:
      unmapped.append(path)
      continue
    hf_leaf, transpose = _HF_LEAVES[rule.kind][leaf]
    array = np.asarray(value)
    if transpose:
      array = array.T
    out[hf_prefix + rule.hf_template.format(**groups) + "." + hf_leaf] = np.ascontiguousarray(array)
  if unmapped:
    raise ElectraError(f"params with no HF equivalent for head {head!r}: {format_keys(unmapped)}")
  return out


# -- HF configs -------------------------------------------------------------------


def detect_head(hf_config: Mapping, keys=()) -> str | None:
  """Our head for a HF checkpoint: from `architectures`, else from its keys."""
  archs = hf_config.get("architectures") or []
  for arch in archs:
    if arch in HEAD_OF_ARCHITECTURE:
      return HEAD_OF_ARCHITECTURE[arch]
  if archs:
    raise ElectraError(
      f"unsupported architecture {archs[0]!r}: electra-jax converts {', '.join(HEAD_OF_ARCHITECTURE)}"
    )
  modules = {_strip_base(k).rpartition(".")[0] for k in keys}
  matching = [
    head
    for head, rules in _HEADS.items()
    if head is not None and rules and all(any(r.hf.fullmatch(m) for m in modules) for r in rules)
  ]
  for head in matching:
    # A head whose modules are part of another match's (token classification's
    # `classifier` within multiple choice) is that other head.
    own = set(HEADS[head].hf_rules)
    if not any(own < set(HEADS[other].hf_rules) for other in matching):
      return head
  return None


def head_kwargs_from_hf(hf_config: Mapping, head: str | None) -> dict[str, Any]:
  """Head arguments a HF config implies (`num_labels`, `summary_last_dropout`)."""
  spec = check_head(head)
  kwargs: dict[str, Any] = {}
  if spec.labeled:
    num_labels = (
      len(hf_config["id2label"]) if hf_config.get("id2label") else hf_config.get("num_labels", 2)
    )
    kwargs["num_labels"] = int(num_labels)
  if spec.check_hf_config is not None:
    spec.check_hf_config(hf_config)
  for name, default in spec.hf_config_kwargs.items():
    # Cast like the default: HF configs written by hand may hold 0 for 0.0.
    kwargs[name] = type(default)(hf_config.get(name, default))
  return kwargs


def label_maps(hf_config: Mapping) -> dict[str, Any]:
  """The `id2label` / `label2id` of a HF config, JSON-friendly (string ids)."""
  out = {}
  if hf_config.get("id2label"):
    out["id2label"] = {str(k): v for k, v in hf_config["id2label"].items()}
  if hf_config.get("label2id"):
    out["label2id"] = {str(k): int(v) for k, v in hf_config["label2id"].items()}
  return out


def label_names(extra: Mapping[str, Any], num_labels: int) -> list[str] | None:
  """Class names in id order from a checkpoint's metadata, or None.

  In order: `extra["label_map"]` (a list, or a `tasks.custom.LabelMap` JSON
  dict), `extra["id2label"]` (converted from HF), the labels of the GLUE task
  `extra["task"]` when it has `num_labels` classes.
  """
  found = extra.get("label_map")
  if isinstance(found, dict):
    found = found.get("labels") or found.get("id2label")
  if not found:
    found = extra.get("id2label")
  if isinstance(found, dict):
    found = [found[k] for k in sorted(found, key=int)]
  if found:
    return [str(x) for x in found]
  from electra_jax.tasks import glue

  task = glue.find_task(extra.get("task"))
  return list(task.label_list) if task is not None and task.num_labels == num_labels else None


def hf_config_dict(
  config: ElectraConfig,
  head: str | None,
  head_kwargs: Mapping[str, Any] | None = None,
  extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """The `config.json` contents for exporting `head` to HF."""
  spec = check_hf_exportable(head)
  head_kwargs = dict(head_kwargs or {})
  extra = dict(extra or {})
  fields = {}
  if spec.labeled:
    n = int(head_kwargs.get("num_labels", 2))
    names = label_names(extra, n) or [f"LABEL_{i}" for i in range(n)]
    if len(names) != n:
      raise ElectraError(f"id2label has {len(names)} labels but the head has num_labels={n}")
    fields["id2label"] = {str(i): name for i, name in enumerate(names)}
    fields["label2id"] = {name: i for i, name in enumerate(names)}
  for name in spec.hf_config_kwargs:
    if name in head_kwargs:
      fields[name] = head_kwargs[name]
  return config.to_hf(architectures=[spec.hf_architecture], **fields)
