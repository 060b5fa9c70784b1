"""`electra-jax export`: the inference function as a `jax.export` artifact.

The jitted function `(params, input_ids, attention_mask, token_type_ids) ->
{"logits", "probabilities"}` (regression: `{"logits"}`, shape (B, 1)) is
lowered to StableHLO with a symbolic batch dimension and a symbolic sequence
length bounded by `max_seq_length` (so the loader pads each batch to a length
bucket, as the live model does: on short texts such as SST-2 sentences this is
several times faster than padding to 128), or with `--fixed-length` one fixed
length `max_seq_length` (one static shape, for runtimes that want that). It is
written with everything needed to serve it:

    OUT/model.jaxexport      Exported.serialize() bytes
    OUT/params.npz           the weights, flat `{"electra/encoder/...": array}`
    OUT/vocab.txt, ...       the tokenizer files
    OUT/serving_config.json  label map, max_seq_length, task, num_labels

`electra_jax.serving.load_exported(OUT)` runs it with jax, numpy and the
tokenizer only. Weights are a separate `params.npz` by default: the
StableHLO stays small (kilobytes) and can be re-deserialized cheaply, and the
weights can be swapped (e.g. another seed of the same architecture).
`--embed-params` closes over the weights as constants instead, giving a
single self-contained artifact at the cost of a `model.jaxexport` as big as
the weights (ELECTRA-Base: ~440 MB of float32), slower to export and load,
and bounded by the 2 GB flatbuffer limit (ELECTRA-Large is ~1.3 GB).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from electra_jax import hf_files, predict, predict_qa, predict_tasks, serving, trees
from electra_jax.errors import ElectraError

DEFAULT_PLATFORMS = ("cpu",)


def _flat_params(params) -> dict[str, np.ndarray]:
  import jax

  return {k: np.asarray(v) for k, v in trees.flatten(jax.device_get(params)).items()}


def export_model(
  model: str | os.PathLike,
  out: str | os.PathLike,
  *,
  max_seq_length: int | None = None,
  platforms: Sequence[str] | None = None,
  embed_params: bool = False,
  fixed_length: bool = False,
) -> str:
  """Exports a sequence-classification, token-classification or multiple-choice model.

  The latter two record their `head` in `serving_config.json` (multiple choice
  also `num_choices`, a fixed axis of its inputs: the stored one, else the
  number of ending columns, else SWAG's 4, and the input columns);
  `electra-jax predict` runs them through `predict_tasks.load`. A
  question-answering model exports its named outputs (`start_logits`,
  `end_logits`, or the official head's beams, which need `fixed_length`) with
  its SQuAD options; `predict_qa` serves it.

  Args:
    model: checkpoint directory or fine-tuning workdir (as for predict).
    out: new directory (must not exist, or be empty).
    max_seq_length: the longest sequence the exported function takes (its
      only length with `fixed_length`); default: the one stored with the
      model, else min(512, max positions).
    platforms: platforms to lower for, e.g. ("cpu", "cuda", "tpu"); default
      the machine's own (`jax.export.default_export_platform()`).
    embed_params: close over the weights as constants (one artifact) instead
      of writing `params.npz`.
    fixed_length: a static sequence length instead of a symbolic one.

  Returns:
    The absolute path of the export directory.

  Raises:
    ElectraError: not a classifier, an unusable length, an unknown platform,
      or `out` taken.
  """
  import jax

  path = predict.resolve_model_dir(model)
  if serving.is_export_dir(path):
    raise ElectraError(f"{path} is already an export; pass the checkpoint it came from")
  platforms = tuple(platforms or (jax.export.default_export_platform(),))
  unknown = sorted(set(platforms) - {"cpu", "cuda", "rocm", "tpu"})
  if unknown:
    raise ElectraError(f"unknown platform(s) {', '.join(unknown)}: use cpu, cuda, rocm or tpu")
  out = hf_files.prepare_output_dir(out)
  head = predict_tasks.model_head(path)
  if head in predict_tasks.HEADS:  # token classification, multiple choice
    clf, head_config = _task_model(path, head, max_seq_length)
  elif head in predict_qa.HEADS:  # question answering: the SQuAD options go with it
    clf, head_config = predict_qa.export_parts(path, head, max_seq_length, fixed_length)
  else:
    clf, head_config = predict.load_classifier(path, max_seq_length), {}
  flat = _flat_params(clf.params)
  blob = _serialized_export(
    clf, flat, platforms, embed_params, fixed_length, head_config.get("num_choices")
  )
  serving_config = {
    "format": serving.EXPORT_FORMAT,
    "version": serving.EXPORT_VERSION,
    "task": clf.task,
    "text_columns": list(clf.text_columns),
    "regression_range": list(clf.regression_range) if clf.regression_range else None,
    "num_labels": clf.num_labels,
    "label_map": clf.label_map,
    "max_seq_length": clf.max_seq_length,
    "fixed_length": fixed_length,
    "params_file": None if embed_params else serving.PARAMS_FILE,
    "platforms": list(platforms),
    "outputs": ["logits", "probabilities"] if clf.num_labels > 1 else ["logits"],
    "inputs": ["params", "input_ids", "attention_mask", "token_type_ids"][embed_params:],
    "source": path,
    "jax_version": jax.__version__,
    **head_config,
  }
  _write_export(out, path, blob, None if embed_params else flat, serving_config)
  return out


def _task_model(path: str, head: str, max_seq_length: int | None):
  """A token-classification / multiple-choice model as a `predict.Classifier`, and what its
  serving config adds (`head`; multiple choice: `num_choices` and the input columns)."""
  model, params, extra, length = predict_tasks.load_live(path, max_seq_length)
  if head == "multiple_choice":
    choices = int(extra.get("num_choices") or len(extra.get("ending_columns") or ()) or 4)
    columns = {
      k: extra[k]
      for k in ("context_column", "prefix_column", "ending_columns", "label_column")
      if k in extra
    }
    clf = predict.Classifier(
      model, params, model.config, choices, None, extra.get("task"), (), length, path
    )
    return clf, {"head": head, "num_choices": choices, **columns}
  labels = predict_tasks.label_list(extra, int(model.num_labels))
  clf = predict.Classifier(
    model, params, model.config, len(labels), labels, extra.get("task"), (), length, path
  )
  return clf, {"head": head, "tag_column": int(extra.get("tag_column", -1))}


def _serialized_export(
  clf, flat, platforms, embed_params: bool, fixed_length: bool, choices: int | None = None
) -> bytes:
  """`jax.export` of the classifier's inference function, serialized.

  `choices`: a multiple-choice model's inputs are `(batch, choices, length)`.
  """
  import jax
  import jax.numpy as jnp

  module, num_labels, length = clf.model, clf.num_labels, clf.max_seq_length

  def serve(flat_params, input_ids, attention_mask, token_type_ids):
    logits = module.apply(
      {"params": trees.unflatten(flat_params)},
      input_ids,
      attention_mask=attention_mask,
      token_type_ids=token_type_ids,
      deterministic=True,
    )
    if isinstance(logits, tuple | dict):  # a QA head: start/end logits, or the official beams
      return dict(logits._asdict()) if isinstance(logits, tuple) else dict(logits)
    outputs = {"logits": logits}
    if num_labels > 1:
      outputs["probabilities"] = jax.nn.softmax(logits, axis=-1)
    return outputs

  if fixed_length:
    shape = (*jax.export.symbolic_shape("batch"), length)
  else:
    # The bound lets the model's `length <= max_position_embeddings` check
    # resolve at export time; longer inputs are refused when called.
    shape = jax.export.symbolic_shape("batch, seq", constraints=(f"seq <= {length}",))
  if choices:
    shape = (shape[0], choices, *shape[1:])
  ids_spec = jax.ShapeDtypeStruct(shape, jnp.int32)
  try:
    if embed_params:
      constants = {k: jnp.asarray(v) for k, v in flat.items()}
      exported = jax.export.export(
        jax.jit(lambda i, m, t: serve(constants, i, m, t)), platforms=platforms
      )(ids_spec, ids_spec, ids_spec)
    else:
      params_spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flat.items()}
      exported = jax.export.export(jax.jit(serve), platforms=platforms)(
        params_spec, ids_spec, ids_spec, ids_spec
      )
    return exported.serialize()
  except ValueError as e:  # e.g. the 2 GB flatbuffer limit with embedded weights
    raise ElectraError(f"jax.export failed: {e}") from None


def _write_export(out: str, source: str, blob: bytes, flat, serving_config: dict) -> None:
  """Writes the export directory (`flat`: the weights for `params.npz`, or None when embedded)."""
  with hf_files.staged_dir(out) as tmp:
    with open(os.path.join(tmp, serving.EXPORT_FILE), "wb") as f:
      f.write(blob)
    if flat is not None:
      # Uncompressed: loads at disk speed, and weights hardly compress.
      np.savez(os.path.join(tmp, serving.PARAMS_FILE), **flat)
    copied = hf_files.copy_tokenizer_files(source, tmp)
    if not copied:
      raise ElectraError(
        f"{source} has no tokenizer files (vocab.txt, tokenizer.json, ...): the export could not "
        "tokenize text; save the tokenizer with the checkpoint"
      )
    # Written last: its presence marks a complete export.
    with open(os.path.join(tmp, serving.SERVING_CONFIG), "w", encoding="utf-8") as f:
      json.dump(serving_config, f, indent=2, sort_keys=True)
      f.write("\n")
