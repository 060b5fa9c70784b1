"""`electra-jax predict`: batch prediction from a file with a fine-tuned classifier.

Token-classification and multiple-choice models are predicted by
`electra_jax/predict_tasks.py` (CoNLL / text in, CoNLL out; rows in, chosen
endings out), question-answering models by `electra_jax/predict_qa.py`
(SQuAD JSON in, answers JSON out); the rest of this module is about
sequence classifiers.

Which model (`--model`):
  - an electra-jax checkpoint directory with a `sequence_classification`
    head (`electra_jax.json` + `params/`), or a HF directory holding an
    `ElectraForSequenceClassification`;
  - a directory written by `electra-jax export` (runs the exported function);
  - a fine-tuning workdir: its `last/` checkpoint (the final model, what the
    results report), or `best/` with `checkpoint="best"` (`--checkpoint best`;
    the other one when the asked one is missing). A workdir with several seeds
    (`seed_<k>/last`, ...) uses the seed that `results.json` names as
    `"best_seed"`, else the lowest-numbered seed (`seed_0`).

Input files (`--input`), chosen by extension:
  - `.txt`: one example per line; a tab splits the line into text and
    text pair (sentence-pair models); everything after the first tab is the
    pair. No header, no labels.
  - `.tsv` / `.csv`: a header row naming the columns; `--text-column`
    (default `text`, or the column the model was trained on, e.g. `sentence`
    for SST-2), `--text-pair-column` (default `text_pair`, or the second
    training column, e.g. `sentence2` for RTE, when present), `--label-column` (default `label`, read with `--eval` only). TSV
    is read with quoting off (a field may begin with a quote, as in GLUE);
    CSV with standard quoting.
  - `.jsonl`: one JSON object per line with the same field names.

Output (`--output`, JSONL), one line per input row, in input order:
  {"index": i, "label": "pos", "probabilities": {"neg": 0.1, "pos": 0.9}}
  {"index": i, "score": 3.7}                       (regression)
`index` counts data rows from 0 (the header is not a row). An empty line (or
empty text) gives `{"index": i, "error": "empty input"}`; an input longer
than the max sequence length is truncated and marked `"truncated": true`.

Malformed rows (bad JSON, a missing column, a wrong field count, bytes that
are not UTF-8) are reported with their row and line numbers. With
`--on-error skip` (default) they get no output line and a summary is
printed; with `--on-error stop` the first one stops the run with a one-line
error before anything is written.

With `--eval`, each row's label is compared with the prediction: rows get
`"gold"`, and the metrics are reported: the GLUE task's own (e.g. MCC for
CoLA, accuracy and F1 for MRPC) when the model was fine-tuned on one, else
accuracy and macro F1 (classification) or Pearson/Spearman (regression). A row whose label is not in the model's label map (or not a
number, for regression) is reported, marked `"label_error"`, still
predicted, and left out of the metrics.

The output is written to a temporary file beside `--output` and renamed at
the end, so a failed run leaves no partial file.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, NamedTuple

import numpy as np

from electra_jax import fileio, serving
from electra_jax.errors import ElectraError
from electra_jax.predict_inputs import (  # noqa: F401  (re-exported: predict.Columns, ...)
  DEFAULT_COLUMNS,
  FORMATS,
  Columns,
  InputRow,
  input_format,
  read_input,
)

_CHUNK = 4096  # rows tokenized and predicted at a time (bounds memory)


# -- which model --------------------------------------------------------------------


def _is_model_dir(path: str) -> bool:
  from electra_jax import pretrained

  return (
    pretrained.is_checkpoint_dir(path)
    or serving.is_export_dir(path)
    or os.path.isfile(os.path.join(path, "config.json"))
  )


def _best_seed_dir(workdir: str, seeds: list[str]) -> str:
  results = os.path.join(workdir, "results.json")
  if os.path.isfile(results):
    try:
      with open(results, encoding="utf-8") as f:
        best = json.load(f).get("best_seed")
    except (OSError, json.JSONDecodeError, AttributeError):
      best = None
    if best is not None:
      name = best if str(best).startswith("seed_") else f"seed_{best}"
      if name in seeds:
        return name
  return seeds[0]  # sorted numerically: seed_0 when present


def resolve_model_dir(path: str | os.PathLike, checkpoint: str = "last") -> str:
  """The model directory `--model path` means (see the module docstring).

  Raises:
    ElectraError: nothing loadable at `path`.
  """
  path = os.path.abspath(os.fspath(path))
  if not os.path.isdir(path):
    raise ElectraError(f"--model {path} does not exist or is not a directory")
  if _is_model_dir(path):
    return path
  seeds = sorted(
    (d for d in os.listdir(path) if re.fullmatch(r"seed_\d+", d)),
    key=lambda d: int(d[5:]),
  )
  where = os.path.join(path, _best_seed_dir(path, seeds)) if seeds else path
  if checkpoint not in ("last", "best"):
    raise ElectraError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")
  for name in (checkpoint, "best" if checkpoint == "last" else "last"):
    candidate = os.path.join(where, name)
    if os.path.isdir(candidate) and _is_model_dir(candidate):
      return candidate
  raise ElectraError(
    f"--model {path} is neither a model directory (electra_jax.json, config.json or "
    "serving_config.json) nor a fine-tuning workdir with best/ or last/ checkpoints"
  )


# The fine-tuning heads predict and export serve (HF's, and the official ELECTRA one).
CLASSIFIER_HEADS = ("sequence_classification", "sequence_classification_official")


class Classifier(NamedTuple):
  """A live sequence-classification model and what serving needs about it."""

  model: Any
  params: Any
  config: Any
  num_labels: int
  label_map: list[str] | None
  task: str | None
  text_columns: tuple[str, ...]
  max_seq_length: int
  path: str
  regression_range: tuple[float, float] | None = None


def _label_map(path: str, extra: dict, num_labels: int) -> list[str] | None:
  """Label names in class-id order, from the checkpoint's metadata.

  A `label_map.json` in the directory, then `convert.label_names` (the
  stored label map, HF `id2label`, the GLUE task's labels); else None (the
  predictor then names classes "0", "1", ...).
  """
  from electra_jax import convert

  if num_labels == 1:
    return None
  meta = dict(extra)
  if meta.get("label_map") is None and os.path.isfile(os.path.join(path, "label_map.json")):
    meta["label_map"] = _read_json(os.path.join(path, "label_map.json"))
  return convert.label_names(meta, num_labels)


def _text_columns(extra: dict) -> tuple[str, ...]:
  """The input fields the model was trained on: stored, else its GLUE task's."""
  stored = extra.get("text_columns")
  if isinstance(stored, (list, tuple)) and all(isinstance(c, str) and c for c in stored):
    return tuple(stored)[:2]
  from electra_jax.tasks import glue

  task = glue.find_task(extra.get("task"))
  return tuple(task.text_columns) if task is not None else ()


def _glue_task(predictor: serving.Predictor):
  """The predictor's GLUE task, when its outputs match that task's labels."""
  from electra_jax.tasks import glue

  task = glue.find_task(predictor.task)
  if task is None or task.num_labels != predictor.num_labels:
    return None
  if not task.is_regression and list(task.label_list) != predictor.label_map:
    return None
  return task


def load_classifier(path: str, max_seq_length: int | None = None) -> Classifier:
  """Loads a sequence-classification checkpoint (electra-jax or HF) for serving.

  Args:
    path: a model directory (not a workdir; see `resolve_model_dir`).
    max_seq_length: overrides the length stored with the model.

  Raises:
    ElectraError: not a classifier, or a length the model cannot take.
  """
  from electra_jax import convert, pretrained

  if pretrained.is_checkpoint_dir(path):
    meta = pretrained.read_checkpoint_meta(path)
    head, extra = meta.get("head"), dict(meta.get("extra") or {})
  else:
    hf = _read_json(os.path.join(path, "config.json"))
    archs = hf.get("architectures") or []
    head = "sequence_classification" if "ElectraForSequenceClassification" in archs else archs
    extra = convert.label_maps(hf)
  if head not in CLASSIFIER_HEADS:
    raise ElectraError(
      f"{path} holds a {head!r} model; predict and export need a sequence_classification "
      "checkpoint (fine-tune one with `electra-jax finetune`)"
    )
  model, params = pretrained.from_pretrained(path, head=head, strict=True)
  config = model.config
  num_labels = int(model.num_labels)
  limit = config.max_position_embeddings
  length = max_seq_length or extra.get("max_seq_length") or min(512, limit)
  if not isinstance(length, int) or length < 2 or length > limit:
    raise ElectraError(
      f"max sequence length {length!r} is not usable: the model takes 2..{limit} tokens"
    )
  return Classifier(
    model,
    params,
    config,
    num_labels,
    _label_map(path, extra, num_labels),
    extra.get("task"),
    _text_columns(extra),
    int(length),
    path,
    regression_range=extra.get("regression_range"),
  )


def _read_json(file: str) -> dict:
  try:
    with open(file, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ElectraError(f"cannot read {file}: {e}") from None


def load_predictor(
  model: str | os.PathLike,
  batch_size: int = 64,
  max_seq_length: int | None = None,
  checkpoint: str = "last",
) -> serving.Predictor:
  """A `serving.Predictor` for `--model` (checkpoint, export or workdir).

  Args:
    model: see `resolve_model_dir`.
    batch_size: rows per forward call.
    max_seq_length: truncation length (default: the one stored with the model).
    checkpoint: `last` or `best`, for a fine-tuning workdir.

  Returns:
    The predictor; live models run a jitted `model.apply` on bucketed shapes.
  """
  import jax

  from electra_jax import inference, tokenization

  path = resolve_model_dir(model, checkpoint)
  if serving.is_export_dir(path):
    predictor = serving.load_exported(path, batch_size=batch_size)
    if max_seq_length and max_seq_length != predictor.max_seq_length:
      raise ElectraError(
        f"{path} was exported with a fixed length of {predictor.max_seq_length} tokens; "
        "drop --max-seq-length or re-export with the length you want"
      )
    return predictor
  clf = load_classifier(path, max_seq_length)

  def apply(params, ids, mask, types):
    return clf.model.apply(
      {"params": params}, ids, attention_mask=mask, token_type_ids=types, deterministic=True
    )

  # Cache-sized micro-batches on CPU (`electra_jax.inference`); the Predictor buckets lengths.
  forward = jax.jit(inference.microbatched(apply))

  return serving.Predictor(
    lambda ids, mask, types: forward(clf.params, ids, mask, types),
    tokenization.load_tokenizer(path),
    num_labels=clf.num_labels,
    max_seq_length=clf.max_seq_length,
    label_map=clf.label_map,
    task=clf.task,
    text_columns=clf.text_columns,
    batch_size=batch_size,
    regression_range=clf.regression_range,
  )


# -- predict_file ---------------------------------------------------------------------


def _gold(predictor: serving.Predictor, raw: Any) -> tuple[Any, str | None]:
  """(gold label, error) for a raw label value."""
  if predictor.is_regression:
    try:
      value = float(raw)
    except (TypeError, ValueError):
      return None, f"label {raw!r} is not a number"
    if not np.isfinite(value):
      return None, f"label {raw!r} is not a finite number"
    return value, None
  if isinstance(raw, float) and raw.is_integer():
    raw = int(raw)
  label = "" if raw is None else str(raw).strip()
  if label not in predictor.label_map:
    return None, f"unknown label {label!r} (the model knows {', '.join(predictor.label_map)})"
  return label, None


def _metrics(predictor: serving.Predictor, pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
  """The GLUE task's official metrics when the model has one, else the basics.

  Classification: accuracy and macro F1; regression: Pearson and Spearman.
  """
  from electra_jax.tasks import metrics

  out: dict[str, Any] = {"n": len(pairs)}
  if not pairs:
    return out
  gold = [g for g, _ in pairs]
  pred = [p for _, p in pairs]
  if not predictor.is_regression:
    ids = {label: i for i, label in enumerate(predictor.label_map)}
    gold, pred = [ids[g] for g in gold], [ids[p] for p in pred]
  task = _glue_task(predictor)
  if task is not None:
    out.update(metrics.compute_metrics(task, np.array(pred), np.array(gold)))
  elif predictor.is_regression:
    out.update(pearson=metrics.pearson(pred, gold), spearman=metrics.spearman(pred, gold))
  else:
    out.update(accuracy=metrics.accuracy(pred, gold), macro_f1=metrics.macro_f1(pred, gold))
  return out


def predict_file(
  model: str | os.PathLike | serving.Predictor,
  input_path: str | os.PathLike,
  output_path: str | os.PathLike,
  *,
  batch_size: int = 64,
  max_seq_length: int | None = None,
  columns: Columns = DEFAULT_COLUMNS,
  fmt: str | None = None,
  on_error: str = "skip",
  evaluate: bool = False,
  progress: bool = True,
  log=None,
  checkpoint: str = "last",
) -> dict[str, Any]:
  """Predicts every row of `input_path` and writes JSONL to `output_path`.

  Args:
    model: `--model` (see `resolve_model_dir`) or a ready `Predictor`.
    input_path: .txt / .tsv / .csv / .jsonl file (see the module docstring).
    output_path: JSONL file to write (replaced atomically).
    batch_size: rows per forward call.
    max_seq_length: truncation length (default: stored with the model).
    columns: field names.
    fmt: input format, default from the extension.
    on_error: "skip" malformed rows (reported) or "stop" at the first one.
    evaluate: compare with the label column and report metrics.
    progress: show a tqdm progress bar.
    log: where to print the report (default stderr).

  Returns:
    A summary: counts of rows, predictions, empty, truncated, malformed
    (with their row/line/reason) and label errors, plus `metrics` with
    `evaluate`.

  Raises:
    ElectraError: bad arguments or input, or a malformed row with
      `on_error="stop"`.
  """
  log = log or sys.stderr
  if on_error not in ("skip", "stop"):
    raise ElectraError(f"--on-error must be skip or stop, got {on_error!r}")
  input_path, output_path = os.fspath(input_path), os.fspath(output_path)
  out_dir = os.path.dirname(os.path.abspath(output_path))
  if not os.path.isdir(out_dir):
    raise ElectraError(f"the directory of --output {output_path} does not exist")
  if os.path.isdir(output_path):
    raise ElectraError(f"--output {output_path} is a directory: name a .jsonl file")
  if not isinstance(model, serving.Predictor):
    summary = _predict_task_model(
      model,
      checkpoint,
      input_path,
      output_path,
      batch_size=batch_size,
      max_seq_length=max_seq_length,
      fmt=fmt,
      evaluate=evaluate,
      progress=progress,
      log=log,
    )
    if summary is not None:
      return summary
  input_format(input_path, fmt)  # fail on a bad name before loading the model
  if isinstance(model, serving.Predictor):
    predictor = model
  else:
    predictor = load_predictor(
      model, batch_size=batch_size, max_seq_length=max_seq_length, checkpoint=checkpoint
    )
  if predictor.text_columns and not columns.task_columns:
    columns = columns._replace(task_columns=predictor.text_columns)
  rows = read_input(input_path, columns, fmt, need_labels=evaluate)
  malformed = [r for r in rows if r.error]
  if malformed and on_error == "stop":
    r = malformed[0]
    raise ElectraError(
      f"{input_path}: row {r.index} (line {r.line}) is malformed: {r.error}; fix it or pass "
      "--on-error skip"
    )
  good = [r for r in rows if not r.error]

  summary: dict[str, Any] = {
    "rows": len(rows),
    "predicted": 0,
    "empty": 0,
    "truncated": 0,
    "malformed": [{"row": r.index, "line": r.line, "error": r.error} for r in malformed],
    "label_errors": [],
  }
  scored = _predict_rows(predictor, good, output_path, summary, evaluate, progress, log)
  if evaluate:
    summary["metrics"] = _metrics(predictor, scored)
  _report(summary, input_path, output_path, evaluate, log)
  return summary


def _predict_task_model(model, checkpoint: str, input_path, output_path, **kwargs):
  """Token-classification, multiple-choice and QA models, predicted by their own modules.

  Returns their summary, or None for a sequence classifier (predicted here).
  """
  from electra_jax import predict_qa, predict_tasks

  path = resolve_model_dir(model, checkpoint)
  head = predict_tasks.model_head(path)
  if head in predict_tasks.HEADS:  # token classification, multiple choice
    return predict_tasks.predict_file(path, head, input_path, output_path, **kwargs)
  if head in predict_qa.HEADS:  # SQuAD JSON in, answers JSON out
    return predict_qa.predict_file(path, head, input_path, output_path, **kwargs)
  return None


def _predict_rows(predictor, good, output_path, summary, evaluate, progress, log) -> list:
  """Writes one JSON line per row of `good`, counting into `summary`; returns (gold, pred) pairs."""
  from tqdm.auto import tqdm

  scored: list[tuple[Any, Any]] = []
  with (
    fileio.atomic_writer(output_path) as f,
    tqdm(total=len(good), unit="row", disable=not progress, file=log) as bar,
  ):
    for start in range(0, len(good), _CHUNK):
      chunk = good[start : start + _CHUNK]
      results = predictor.predict([r.text for r in chunk], [r.pair for r in chunk], progress=bar)
      for r, result in zip(chunk, results):
        line = {"index": r.index, **result}
        if "error" in result:
          summary["empty"] += 1
        else:
          summary["predicted"] += 1
          summary["truncated"] += bool(result.get("truncated"))
          if evaluate:
            gold, err = _gold(predictor, r.label)
            if err:
              line["label_error"] = err
              summary["label_errors"].append({"row": r.index, "line": r.line, "error": err})
            else:
              line["gold"] = gold
              pred = result["score"] if predictor.is_regression else result["label"]
              scored.append((gold, pred))
        f.write(json.dumps(line, ensure_ascii=False) + "\n")
  return scored


def _report(summary, input_path, output_path, evaluate, log) -> None:
  def listing(items, limit=10):
    text = "; ".join(f"row {x['row']} (line {x['line']}): {x['error']}" for x in items[:limit])
    return text + (f"; ... {len(items) - limit} more" if len(items) > limit else "")

  print(
    f"wrote {summary['predicted'] + summary['empty']} lines to {output_path}: "
    f"{summary['predicted']} predicted, {summary['empty']} empty, "
    f"{summary['truncated']} truncated, {len(summary['malformed'])} malformed skipped",
    file=log,
  )
  if summary["malformed"]:
    print(f"malformed rows in {input_path} (skipped): {listing(summary['malformed'])}", file=log)
  if summary["label_errors"]:
    print(
      f"rows with unusable labels (predicted, not scored): {listing(summary['label_errors'])}",
      file=log,
    )
  if evaluate:
    metrics = ", ".join(
      f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary["metrics"].items()
    )
    print(f"eval: {metrics}", file=log)
