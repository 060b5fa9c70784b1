"""HF PyTorch ELECTRA state dicts <-> electra-jax param pytrees.

The mapping is one rule table, `ENCODER_RULES` plus `HEAD_RULES[head]`: each
rule pairs a HF module path with ours (placeholders such as `{i}` match a layer
index on either side), and says what kind of module it is, which fixes how the
leaves rename (`weight` -> `kernel` transposed for a Linear, `weight` ->
`scale` for a LayerNorm, `weight` -> `embedding` for an Embedding). The same
table runs in both directions.

Conversion is strict: a key no rule knows, a param the model expects but the
checkpoint lacks, or a tensor of the wrong shape aborts with an `ElectraError`
that lists the keys. Two exceptions, on purpose: the `embeddings.position_ids`
and `embeddings.token_type_ids` buffers that older checkpoints store are
skipped (they are `arange` / zeros, not weights), and the masked-LM decoder
weight `generator_lm_head.weight` is dropped because our decoder is tied to
the word embeddings (we check that it equals them).

Weights are read by `hf_files.load_hf_state_dict` (safetensors preferred, a
`.bin` only through `torch.load(..., weights_only=True)`); writing (`--to-hf`)
produces `config.json` + `model.safetensors` only.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from electra_jax.config import ElectraConfig
from electra_jax.errors import ElectraError
from electra_jax.hf_files import (
  copy_tokenizer_files,
  load_hf_state_dict,
  prepare_output_dir,
  read_hf_config,
  staged_dir,
)

log = logging.getLogger(__name__)

# Module kinds: how a module's HF leaves map to ours, and whether to transpose.
LINEAR = "linear"
NORM = "layer_norm"
EMBED = "embedding"
TIED_DECODER = "tied_decoder"

# HF leaf -> (our leaf, transpose?). A `None` leaf is dropped (tied weight).
_LEAVES = {
  LINEAR: {"weight": ("kernel", True), "bias": ("bias", False)},
  NORM: {"weight": ("scale", False), "bias": ("bias", False)},
  EMBED: {"weight": ("embedding", False)},
  TIED_DECODER: {"weight": (None, False), "bias": ("bias", False)},
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

# Each head's own modules, outside the `electra.` / `electra/` prefix.
HEAD_RULES: dict[str | None, tuple[tuple[str, str, str], ...]] = {
  None: (),
  "pretraining": (
    ("discriminator_predictions.{disc}", "discriminator_predictions/{disc}", LINEAR),
  ),
  "masked_lm": (
    ("generator_predictions.dense", "generator_predictions/dense", LINEAR),
    ("generator_predictions.LayerNorm", "generator_predictions/LayerNorm", NORM),
    ("generator_lm_head", "generator_lm_head", TIED_DECODER),
  ),
  "sequence_classification": (("classifier.{cls}", "classifier/{cls}", LINEAR),),
  "question_answering": (("qa_outputs", "qa_outputs", LINEAR),),
  "token_classification": (("classifier", "classifier", LINEAR),),
  "multiple_choice": (
    ("sequence_summary.summary", "sequence_summary/summary", LINEAR),
    ("classifier", "classifier", LINEAR),
  ),
}

# Non-persistent buffers that older HF checkpoints saved anyway.
SKIPPED_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")

# HF class name <-> our head name.
ARCHITECTURES: dict[str | None, str] = {
  None: "ElectraModel",
  "pretraining": "ElectraForPreTraining",
  "masked_lm": "ElectraForMaskedLM",
  "sequence_classification": "ElectraForSequenceClassification",
  "question_answering": "ElectraForQuestionAnswering",
  "token_classification": "ElectraForTokenClassification",
  "multiple_choice": "ElectraForMultipleChoice",
}
HEAD_OF_ARCHITECTURE = {v: k for k, v in ARCHITECTURES.items()}

# Heads whose output size is `num_labels` (HF `id2label`).
LABELED_HEADS = ("sequence_classification", "token_classification")


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
_HEADS = {head: _rules(table) for head, table in HEAD_RULES.items()}


def _match(rules, module: str, side: str):
  """Returns (rule, groups) of the first rule whose `side` pattern matches `module`."""
  for rule in rules:
    m = (rule.hf if side == "hf" else rule.ours).fullmatch(module)
    if m:
      return rule, m.groupdict()
  return None, None


# -- param trees ----------------------------------------------------------------


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


def format_keys(keys, limit: int = 12) -> str:
  keys = sorted(keys)
  shown = ", ".join(keys[:limit])
  return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


# -- HF -> ours -----------------------------------------------------------------


class ConversionReport(NamedTuple):
  """What `hf_to_params` did besides mapping keys one to one."""

  skipped: list[str]  # buffers skipped on purpose, tied weights dropped
  unexpected: list[str]  # keys of another head (dropped when not strict)
  missing: list[str]  # our head params the checkpoint lacks (only when not strict)


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
    state_dict: HF key -> numpy array (as `load_hf_state_dict` returns).
    config: the architecture; every tensor is checked against its shapes.
    head: our head name (see `model.HEADS`).
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
  if head not in HEAD_RULES:
    raise ElectraError(f"unknown head {head!r}: choose one of {', '.join(map(str, HEAD_RULES))}")
  expected = expected_shapes(config, head, **dict(head_kwargs or {}))
  enc_prefix = "electra/" if head is not None else ""
  other_heads = [r for h, rules in _HEADS.items() if h != head for r in rules]
  flat: dict[str, np.ndarray] = {}
  source: dict[str, str] = {}
  skipped, unexpected, unmapped, misshaped = [], [], [], []
  tied_weight = None
  for key, value in state_dict.items():
    # Heads prefix the encoder with `electra.`; a bare ElectraModel does not.
    name = key.removeprefix("electra.")
    if name in SKIPPED_KEYS:
      skipped.append(key)
      continue
    module, _, leaf = name.rpartition(".")
    rule, groups = _match(_ENCODER, module, "hf")
    prefix = enc_prefix
    if rule is None:
      rule, groups = _match(_HEADS[head], module, "hf")
      prefix = ""
    if rule is None:
      if _match(other_heads, module, "hf")[0] is not None and leaf in ("weight", "bias"):
        unexpected.append(key)
      else:
        unmapped.append(key)
      continue
    our_leaf, transpose = _LEAVES[rule.kind].get(leaf, ("?", False))
    if our_leaf == "?":
      unmapped.append(key)
      continue
    if our_leaf is None:
      tied_weight = (key, value)
      skipped.append(key)
      continue
    path = prefix + rule.our_template.format(**groups) + "/" + our_leaf
    array = np.asarray(value)
    if transpose:
      array = np.ascontiguousarray(array.T)
    if path not in expected:
      unexpected.append(key)
      continue
    if path in flat:
      raise ElectraError(f"checkpoint holds {path} twice: {source[path]} and {key}")
    if tuple(array.shape) != expected[path]:
      if not strict and not _is_encoder_path(path, head):
        # A head of another size (e.g. num_labels): re-initialised by the caller.
        unexpected.append(key)
        continue
      misshaped.append(
        f"{key} {tuple(value.shape)} (config expects {_hf_shape(expected[path], transpose)})"
      )
      continue
    flat[path] = array
    source[path] = key
  if unmapped:
    raise ElectraError(
      f"{len(unmapped)} checkpoint keys match no conversion rule (not an ELECTRA checkpoint?): "
      f"{format_keys(unmapped)}"
    )
  if misshaped:
    raise ElectraError(
      f"shape mismatch between config and weights for {len(misshaped)} keys: {format_keys(misshaped, 6)}; "
      "check that config.json belongs to these weights"
    )
  missing = sorted(set(expected) - set(flat))
  encoder_missing = [p for p in missing if _is_encoder_path(p, head)]
  encoder_unexpected = [k for k in unexpected if _is_encoder_key(k)]
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
  if strict and (unexpected or missing):
    what = []
    if unexpected:
      what.append(f"unexpected keys (another head?): {format_keys(unexpected)}")
    if missing:
      what.append(f"missing params: {format_keys(missing)}")
    raise ElectraError(
      f"checkpoint does not match head {head!r}: {'; '.join(what)}; choose the checkpoint's "
      "head (--head / head=), or load with strict=False to re-initialise the head"
    )
  if tied_weight is not None:
    _check_tied(tied_weight, flat.get(enc_prefix + "embeddings/word_embeddings/embedding"))
  return unflatten(flat), ConversionReport(skipped, unexpected, missing)


def _hf_shape(shape: tuple, transpose: bool) -> tuple:
  return tuple(reversed(shape)) if transpose else shape


def _is_encoder_key(key: str) -> bool:
  name = key.removeprefix("electra.")
  return _match(_ENCODER, name.rpartition(".")[0], "hf")[0] is not None


def _is_encoder_path(path: str, head: str | None) -> bool:
  if head is None:
    return True
  return path.startswith("electra/")


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
  """Our param tree (unrolled or scanned) -> a HF state dict for `ARCHITECTURES[head]`.

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
  if head not in HEAD_RULES:
    raise ElectraError(f"unknown head {head!r}: choose one of {', '.join(map(str, HEAD_RULES))}")
  flat = flatten(unrolled(params, config))
  out: dict[str, np.ndarray] = {}
  unmapped = []
  inverse = {}
  for kind, leaves in _LEAVES.items():
    inverse[kind] = {ours: (hf, t) for hf, (ours, t) in leaves.items() if ours is not None}
  for path, value in flat.items():
    module, _, leaf = path.rpartition("/")
    hf_prefix = ""
    rule = None
    if head is None or module.startswith("electra/"):
      inner = module[len("electra/") :] if head is not None else module
      rule, groups = _match(_ENCODER, inner, "ours")
      hf_prefix = "electra." if head is not None else ""
    if rule is None:
      rule, groups = _match(_HEADS[head], module, "ours")
      hf_prefix = ""
    if rule is None or leaf not in inverse[rule.kind]:
      unmapped.append(path)
      continue
    hf_leaf, transpose = inverse[rule.kind][leaf]
    array = np.asarray(value)
    if transpose:
      array = array.T
    out[hf_prefix + rule.hf_template.format(**groups) + "." + hf_leaf] = np.ascontiguousarray(array)
  if unmapped:
    raise ElectraError(f"params with no HF equivalent for head {head!r}: {format_keys(unmapped)}")
  return out


# -- HF directories ---------------------------------------------------------------


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
  modules = {k.removeprefix("electra.").rpartition(".")[0] for k in keys}
  for head, rules in _HEADS.items():
    if head is not None and rules and all(any(r.hf.fullmatch(m) for m in modules) for r in rules):
      if head == "token_classification" and "sequence_summary.summary" in modules:
        continue
      return head
  return None


def head_kwargs_from_hf(hf_config: Mapping, head: str | None) -> dict[str, Any]:
  """Head arguments a HF config implies (`num_labels`, `summary_last_dropout`)."""
  num_labels = (
    len(hf_config["id2label"]) if hf_config.get("id2label") else hf_config.get("num_labels", 2)
  )
  if head in LABELED_HEADS:
    return {"num_labels": int(num_labels)}
  if head == "multiple_choice":
    wanted = {"summary_type": "first", "summary_use_proj": True, "summary_activation": "gelu"}
    for k, v in wanted.items():
      if hf_config.get(k, v) != v:
        raise ElectraError(
          f"multiple choice with {k}={hf_config[k]!r} is not supported (only the ELECTRA default {v!r})"
        )
    if hf_config.get("summary_proj_to_labels") or hf_config.get("summary_first_dropout"):
      raise ElectraError(
        "multiple choice with summary_proj_to_labels / summary_first_dropout is not supported"
      )
    return {"summary_last_dropout": float(hf_config.get("summary_last_dropout", 0.1))}
  return {}


def label_maps(hf_config: Mapping) -> dict[str, Any]:
  """The `id2label` / `label2id` of a HF config, JSON-friendly (string ids)."""
  out = {}
  if hf_config.get("id2label"):
    out["id2label"] = {str(k): v for k, v in hf_config["id2label"].items()}
  if hf_config.get("label2id"):
    out["label2id"] = {str(k): int(v) for k, v in hf_config["label2id"].items()}
  return out


class HFCheckpoint(NamedTuple):
  """A HF directory read into our terms."""

  config: ElectraConfig
  head: str | None
  head_kwargs: dict[str, Any]
  params: dict  # nested numpy arrays, unrolled layers
  extra: dict[str, Any]  # label maps
  report: ConversionReport


def load_hf(
  path: str | os.PathLike,
  head: str | None = "auto",
  *,
  strict: bool = True,
  head_kwargs: Mapping[str, Any] | None = None,
) -> HFCheckpoint:
  """Reads a HF ELECTRA directory (config + weights) into our config and params.

  Args:
    path: HF directory (`config.json` + `model.safetensors` / `pytorch_model.bin`).
    head: our head name, or "auto" for the one `architectures` names.
    strict: see `hf_to_params`.
    head_kwargs: overrides of what the HF config implies (e.g. `num_labels`).

  Returns:
    An `HFCheckpoint`.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise ElectraError(f"{path} does not exist: point at a HF model directory")
  if not os.path.isdir(path):
    raise ElectraError(f"{path} is not a directory: point at a HF model directory")
  hf_config = read_hf_config(path)
  config = ElectraConfig.from_hf(hf_config)
  state_dict = load_hf_state_dict(path)
  if head == "auto":
    head = detect_head(hf_config, state_dict.keys())
  kwargs = head_kwargs_from_hf(hf_config, head)
  kwargs.update(head_kwargs or {})
  params, report = hf_to_params(state_dict, config, head, strict=strict, head_kwargs=kwargs)
  extra = label_maps(hf_config) if head in LABELED_HEADS else {}
  if extra.get("id2label") and len(extra["id2label"]) != kwargs.get("num_labels"):
    extra = {}  # the caller asked for another label count; the names no longer apply
  return HFCheckpoint(config, head, kwargs, params, extra, report)


def hf_config_dict(
  config: ElectraConfig,
  head: str | None,
  head_kwargs: Mapping[str, Any] | None = None,
  extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """The `config.json` contents for exporting `head` to HF."""
  head_kwargs = dict(head_kwargs or {})
  extra = dict(extra or {})
  fields = {}
  if head in LABELED_HEADS:
    n = int(head_kwargs.get("num_labels", 2))
    id2label = extra.get("id2label") or {str(i): f"LABEL_{i}" for i in range(n)}
    if len(id2label) != n:
      raise ElectraError(f"id2label has {len(id2label)} labels but the head has num_labels={n}")
    fields["id2label"] = {str(k): v for k, v in id2label.items()}
    fields["label2id"] = extra.get("label2id") or {v: int(k) for k, v in id2label.items()}
  if head == "multiple_choice" and "summary_last_dropout" in head_kwargs:
    fields["summary_last_dropout"] = head_kwargs["summary_last_dropout"]
  return config.to_hf(architectures=[ARCHITECTURES[head]], **fields)


def save_hf(
  out: str | os.PathLike,
  config: ElectraConfig,
  params: Mapping,
  head: str | None,
  *,
  head_kwargs: Mapping[str, Any] | None = None,
  extra: Mapping[str, Any] | None = None,
  tokenizer_dir: str | os.PathLike | None = None,
) -> str:
  """Writes a HF directory: `config.json` + `model.safetensors` (+ tokenizer files).

  Written to a temporary sibling and renamed at the end, so a failure leaves
  nothing half-written.

  Returns:
    The output directory.
  """
  from safetensors.numpy import save_file

  out = prepare_output_dir(out)
  # Validate before writing anything: the params must be what the head expects.
  flat = flatten(unrolled(params, config))
  check_shapes(flat, expected_shapes(config, head, **dict(head_kwargs or {})), head)
  state_dict = params_to_hf(params, config, head)
  with staged_dir(out) as tmp:
    with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
      json.dump(hf_config_dict(config, head, head_kwargs, extra), f, indent=2, sort_keys=True)
    save_file(state_dict, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    copy_tokenizer_files(tokenizer_dir, tmp)
  return out


def check_shapes(flat: Mapping[str, Any], expected: Mapping[str, tuple], head) -> None:
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


# -- the `convert` subcommand -------------------------------------------------------


def convert_from_hf(
  src: str | os.PathLike, out: str | os.PathLike, head: str | None = "auto"
) -> str:
  """HF directory -> electra-jax checkpoint directory (config, Orbax params, tokenizer).

  Args:
    src: HF directory.
    out: new electra-jax checkpoint directory (must not exist or be empty).
    head: our head name, or "auto" (from `architectures`); `None` keeps the
      encoder of any checkpoint and drops its head.

  Returns:
    The output directory.
  """
  from electra_jax import pretrained

  out = prepare_output_dir(out)
  # Asking for the bare encoder drops a head on purpose; any other mismatch is an error.
  ckpt = load_hf(src, head, strict=head is not None)
  for key in ckpt.report.skipped:
    log.info("skipped %s (buffer or tied weight)", key)
  if ckpt.report.unexpected:  # only with head=None (strict otherwise): asked for
    log.info("dropped head weights: %s", format_keys(ckpt.report.unexpected))
  return pretrained.save_pretrained(
    out,
    ckpt.config,
    ckpt.params,
    head=ckpt.head,
    head_kwargs=ckpt.head_kwargs,
    tokenizer_dir=src,
    extra=ckpt.extra,
  )


def convert_to_hf(src: str | os.PathLike, out: str | os.PathLike) -> str:
  """electra-jax checkpoint directory -> HF directory (`config.json` + `model.safetensors`).

  Args:
    src: electra-jax checkpoint directory (as `save_pretrained` writes).
    out: new HF directory (must not exist or be empty).

  Returns:
    The output directory.
  """
  from electra_jax import pretrained

  out = prepare_output_dir(out)
  ckpt = pretrained.load_checkpoint(src)
  return save_hf(
    out,
    ckpt.config,
    ckpt.params,
    ckpt.head,
    head_kwargs=ckpt.head_kwargs,
    extra=ckpt.extra,
    tokenizer_dir=src,
  )
