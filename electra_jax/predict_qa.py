"""`electra-jax predict` for question-answering models (SQuAD JSON in, answers JSON out).

`predict.predict_file` hands a model whose head is one of `HEADS` to
`predict_file` here: a fine-tuning workdir's model (`electra-jax finetune
--config experiments/configs/squad.py`), an electra-jax QA checkpoint, or a
HF `ElectraForQuestionAnswering` directory.

Input: a SQuAD-format JSON file (`{"data": [{"paragraphs": [{"context",
"qas": [{"id", "question"}]}]}]}`); `answers` are optional and, when present,
are checked against the context as in training. Output: a JSON object
`{question id: answer text}` (the SQuAD leaderboard format), written to a
temporary file and renamed. A model fine-tuned on SQuAD 2.0 answers "" when
the question's no-answer score exceeds the threshold it was trained with
(`na_threshold`, stored with the model); the scores themselves go to
`OUTPUT.null_odds.json`. Windowing and post-processing use the options the
model was fine-tuned with (doc stride, question length, answer length,
n-best; the official defaults for a HF directory). With `--eval` the input's
answers are scored with the official script of the model's version.

`electra-jax export` writes a QA model's `jax.export` artifact (`export_parts`:
its named outputs and the options above in `serving_config.json`; the
official head's beam search needs `--fixed-length`), which `predict` serves
like a checkpoint; a QA model with HF's head also exports to HF with
`electra-jax convert --to-hf`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, NamedTuple

import numpy as np

from electra_jax import fileio
from electra_jax.errors import ElectraError
from electra_jax.tasks import squad, squad_eval

HEADS = ("question_answering", "question_answering_official")
# The official configure_finetuning.py values, for a model that does not record its own.
DEFAULT_OPTIONS = {
  "doc_stride": 128,
  "max_query_length": 64,
  "max_answer_length": 30,
  "n_best_size": 20,
}


class ExportParts(NamedTuple):
  """What `export.export_model` reads of a model (the fields of `predict.Classifier` it uses)."""

  model: Any
  params: Any
  num_labels: int
  label_map: None
  task: str
  text_columns: tuple
  max_seq_length: int
  regression_range: None = None


def export_parts(path: str, head: str, max_seq_length: int | None, fixed_length: bool):
  """`(model parts, serving-config additions)` for exporting the QA model at `path`.

  Raises:
    ElectraError: the official head without `fixed_length` (its beam width
      `min(beam_size, length)` must be a number when exported).
  """
  if head == "question_answering_official" and not fixed_length:
    raise ElectraError(
      "the official QA head's beam search needs a static length: export it with --fixed-length"
    )
  model, params, _, extra, length = _load(path, head, max_seq_length)
  parts = ExportParts(model, params, 2, None, str(extra.get("task", "squad")), (), length)
  options = {k: int(extra.get(k, v)) for k, v in DEFAULT_OPTIONS.items()}
  outputs = (
    ["start_logits", "end_logits"]
    if head == "question_answering"
    else [
      "start_top_log_probs",
      "start_top_index",
      "end_top_log_probs",
      "end_top_index",
      "answerable_logit",
    ]
  )
  config = {
    "head": head,
    "outputs": outputs,
    "squad_version": str(extra.get("squad_version", "1.1")),
    "na_threshold": extra.get("na_threshold"),
    **options,
  }
  return parts, config


def _load_export(path: str, max_seq_length: int | None):
  """`(call, tokenizer, extra, length)` of an `electra-jax export` directory of a QA model."""
  from electra_jax import serving, tokenization

  call, cfg = serving.load_exported_call(path)
  length = cfg["max_seq_length"]
  if max_seq_length and (max_seq_length > length or cfg.get("fixed_length")):
    raise ElectraError(
      f"{path} was exported for {'exactly' if cfg.get('fixed_length') else 'at most'} {length} "
      "tokens: drop --max-seq-length or re-export with the length you want"
    )
  return call, tokenization.load_tokenizer(path), cfg, max_seq_length or length


def _run_export(call, features: dict, batch_size: int) -> dict:
  """The exported function over `features`, in fixed-size padded batches."""
  keys = ("input_ids", "input_mask", "segment_ids")
  n = len(features["input_ids"])
  size = min(batch_size, n)
  out = []
  for start in range(0, n, size):
    chunk = [features[k][start : start + size] for k in keys]
    m = len(chunk[0])
    pad = [(0, size - m), (0, 0)]
    outputs = call(*[np.pad(v, pad) for v in chunk])
    out.append({k: np.asarray(v)[:m] for k, v in outputs.items()})
  return {k: np.concatenate([o[k] for o in out]) for k in out[0]}


def _load(path: str, head: str, max_seq_length: int | None):
  """`(model, params, tokenizer, extra, length)` of a QA checkpoint or HF directory."""
  from electra_jax import pretrained, tokenization

  extra = {}
  if pretrained.is_checkpoint_dir(path):
    extra = dict(pretrained.read_checkpoint_meta(path).get("extra") or {})
  model, params = pretrained.from_pretrained(path, head=head, strict=True)
  limit = model.config.max_position_embeddings
  length = max_seq_length or extra.get("max_seq_length") or min(512, limit)
  if not isinstance(length, int) or length > limit:
    raise ElectraError(
      f"max sequence length {length!r} is not usable: the model takes up to {limit}"
    )
  return model, params, tokenization.load_tokenizer(path), extra, int(length)


def _adapter(head: str, examples: list, extra: dict):
  """A `SquadAdapter` over the one split `predict`, with the model's options."""
  from electra_jax.tasks import squad_adapter

  switch = next(k for k, v in squad_adapter.HEAD_NAMES.items() if v == head)
  options = {k: int(extra.get(k, v)) for k, v in DEFAULT_OPTIONS.items()}
  options["na_threshold"] = extra.get("na_threshold")
  return squad_adapter.SquadAdapter(
    version=str(extra.get("squad_version", "1.1")),
    splits={"predict": examples},
    dev_splits=(),
    test_splits=(),
    recipe={"head": switch},
    source="",
    options=options,
  )


def predict_file(
  path: str,
  head: str,
  input_path: str | os.PathLike,
  output_path: str | os.PathLike,
  *,
  batch_size: int = 64,
  max_seq_length: int | None = None,
  evaluate: bool = False,
  log=None,
  **_,
) -> dict[str, Any]:
  """Answers every question of `input_path` with the QA model at `path`; see the module docstring.

  Args:
    path: a model directory (resolved by `predict.resolve_model_dir`).
    head: its head (one of `HEADS`).
    input_path: a SQuAD JSON file.
    output_path: the answers JSON to write.
    batch_size: windows per forward call.
    max_seq_length: window length (default: the model's training length).
    evaluate: score the input's gold answers with the official script.
    log: where the report goes (default stderr).

  Returns:
    A summary: `questions`, `windows`, `unanswered` (answered "" by the
    threshold), the output paths, and `metrics` with `evaluate`.
  """
  from electra_jax import run_finetuning

  log = log or sys.stderr
  if head not in HEADS:
    raise ElectraError(f"{path} holds a {head!r} model, not a question-answering one")
  input_path, output_path = os.fspath(input_path), os.fspath(output_path)
  examples = squad.read_squad(input_path, labeled=False)
  unlabeled = next((ex for ex in examples if not ex.answers and not ex.is_impossible), None)
  if evaluate and unlabeled is not None:
    raise ElectraError(
      f"--eval needs gold answers: question {unlabeled.qas_id!r} of {input_path} has none "
      "(and is not marked is_impossible)"
    )
  if not examples:
    raise ElectraError(f"{input_path} has no questions")
  from electra_jax import serving

  exported = serving.is_export_dir(path)
  if exported:
    call, tokenizer, extra, length = _load_export(path, max_seq_length)
  else:
    model, params, tokenizer, extra, length = _load(path, head, max_seq_length)
  adapter = _adapter(head, examples, extra)
  started = time.time()
  features = adapter.featurize(tokenizer, length)["predict"]
  if exported:
    outputs = _run_export(call, features, int(batch_size))
  else:
    outputs = run_finetuning.make_predict_fn(model, int(batch_size), adapter)(params, features)
  predictions = adapter.predictions(outputs, "predict")
  answers = predictions.answers
  summary: dict[str, Any] = {"questions": len(examples), "windows": len(features["input_ids"])}
  if predictions.null_odds is not None:
    threshold = adapter.na_threshold
    answers = {q: "" if predictions.null_odds[q] > threshold else a for q, a in answers.items()}
    odds_path = os.path.splitext(output_path)[0] + ".null_odds.json"
    fileio.atomic_write_text(odds_path, json.dumps(predictions.null_odds, indent=2))
    summary.update(null_odds=odds_path, na_threshold=threshold)
  summary["unanswered"] = sum(not a for a in answers.values())
  fileio.atomic_write_text(output_path, json.dumps(answers, indent=2))
  summary["output"] = output_path
  print(
    f"{output_path}: {len(answers)} answers ({summary['unanswered']} empty) from "
    f"{summary['windows']} windows in {time.time() - started:.1f} s",
    file=log,
  )
  if evaluate:
    result = (
      squad_eval.evaluate_v2(
        examples, predictions.answers, predictions.null_odds, adapter.na_threshold
      )
      if adapter.v2
      else squad_eval.evaluate_v1(examples, answers)
    )
    summary["metrics"] = result.metrics
    print(json.dumps(result.metrics), file=log)
  return summary
