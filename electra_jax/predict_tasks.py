"""`electra-jax predict` for token-classification and multiple-choice models.

`predict.predict_file` hands a model whose head is one of `HEADS` to
`predict_file` here (an electra-jax checkpoint, a fine-tuning workdir's model,
or a HF `ElectraForTokenClassification` / `ElectraForMultipleChoice`
directory).

Token classification — input by extension (or `--format`):
  - `.txt`: one sentence per line, words split on whitespace;
  - `.conll` / `.iob` / `.bio` (or `--format conll`): CoNLL columns (word
    first; the gold tag, read with `--eval`, in the column the model was
    trained with: the last unless its `tag_column` said otherwise).
  Output: CoNLL, `word predicted` per line (`word gold predicted` for a
  tagged input), a blank line after each sentence; a sentence longer than
  the model's length is split into windows as in training, so every word
  gets a tag. With `--eval`, entity-level precision / recall / F1
  (conlleval, via seqeval) and word accuracy are reported.

Multiple choice — input: CSV / TSV / JSONL with the columns the model was
trained on (`context_column`, `prefix_column`, `ending_columns`, stored with
it; SWAG's names for a HF model). Output: JSONL, one line per row,
`{"index": i, "label": k, "probabilities": [...]}` with `k` the chosen
ending's index; with `--eval`, accuracy against `label_column`.

Outputs are written to a temporary file and renamed, so a failed run leaves
none. `--model` may also be an `electra-jax export` of such a model (`load`
runs its serialized function), or the HF directory `electra-jax convert
--to-hf` wrote (a HF config does not record the length trained with: give
`--max-seq-length`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from electra_jax.errors import ElectraError
from electra_jax.tasks import conll, multiple_choice, token_classification

HEADS = ("token_classification", "multiple_choice")
CONLL_SUFFIXES = (".conll", ".iob", ".bio", ".iob2", ".bioes")


def model_head(path: str) -> str | None:
  """The head of the model directory `path` (electra-jax, HF or export), None when it has none we know."""
  from electra_jax import convert, pretrained, serving

  if pretrained.is_checkpoint_dir(path):
    return pretrained.read_checkpoint_meta(path).get("head")
  if serving.is_export_dir(path):  # sequence-classifier exports record no head
    return serving.read_serving_config(path).get("head")
  config = os.path.join(path, "config.json")
  if not os.path.isfile(config):
    return None
  try:
    with open(config, encoding="utf-8") as f:
      return convert.detect_head(json.load(f))
  except (OSError, json.JSONDecodeError, ElectraError):
    return None


def _stored_extra(path: str) -> dict:
  """What an electra-jax checkpoint or export records (cheap: no weights read); {} otherwise."""
  from electra_jax import pretrained, serving

  if pretrained.is_checkpoint_dir(path):
    return dict(pretrained.read_checkpoint_meta(path).get("extra") or {})
  if serving.is_export_dir(path):
    return serving.read_serving_config(path)
  return {}


class Loaded(NamedTuple):
  """A token-classification or multiple-choice model ready to predict.

  Attributes:
    forward: `(input_ids, input_mask, segment_ids) -> logits`, any batch size.
    tokenizer: the model's tokenizer.
    extra: what the model records (label map, columns, ...).
    max_seq_length: the length inputs are featurised to.
    num_labels: tags (token classification) or choices (multiple choice).
  """

  forward: Callable
  tokenizer: Any
  extra: dict
  max_seq_length: int
  num_labels: int


def load_live(path: str, max_seq_length: int | None = None):
  """`(model, params, extra, length)` of an electra-jax checkpoint or HF directory."""
  from electra_jax import convert, pretrained

  if pretrained.is_checkpoint_dir(path):
    extra = dict(pretrained.read_checkpoint_meta(path).get("extra") or {})
  else:
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
      extra = convert.label_maps(json.load(f))
  model, params = pretrained.from_pretrained(path, strict=True)
  limit = model.config.max_position_embeddings
  length = max_seq_length or extra.get("max_seq_length") or min(512, limit)
  if not isinstance(length, int) or length < 3 or length > limit:
    raise ElectraError(f"max sequence length {length!r} is not usable: the model takes 3..{limit}")
  return model, params, extra, int(length)


def load(path: str, max_seq_length: int | None = None) -> Loaded:
  """The model at `path`: a checkpoint, a HF directory or an `electra-jax export` directory."""
  import jax

  from electra_jax import serving, tokenization

  if serving.is_export_dir(path):
    cfg = serving.read_serving_config(path)
    length = cfg["max_seq_length"]
    if max_seq_length and (max_seq_length > length or cfg.get("fixed_length")):
      raise ElectraError(
        f"{path} was exported for {'exactly' if cfg.get('fixed_length') else 'at most'} {length} "
        "tokens: drop --max-seq-length or re-export with the length you want"
      )
    forward = serving.load_exported(path).forward
    return Loaded(
      forward, tokenization.load_tokenizer(path), cfg, max_seq_length or length, cfg["num_labels"]
    )
  model, params, extra, length = load_live(path, max_seq_length)
  apply = jax.jit(
    lambda ids, mask, types: model.apply(
      {"params": params}, ids, attention_mask=mask, token_type_ids=types, deterministic=True
    )
  )
  num_labels = int(getattr(model, "num_labels", extra.get("num_choices") or 0))
  return Loaded(apply, tokenization.load_tokenizer(path), extra, length, num_labels)


def _run(forward, features: dict, batch_size: int, progress: bool, log) -> np.ndarray:
  """`forward` over `features`, in fixed-size batches (one compilation)."""
  from tqdm.auto import tqdm

  keys = ("input_ids", "input_mask", "segment_ids")
  n = len(features["input_ids"])
  size = min(batch_size, n)
  out = []
  for start in tqdm(range(0, n, size), unit="batch", disable=not progress, file=log):
    chunk = [features[k][start : start + size] for k in keys]
    m = len(chunk[0])
    pad = [(0, size - m)] + [(0, 0)] * (chunk[0].ndim - 1)
    out.append(np.asarray(forward(*[np.pad(v, pad) for v in chunk]))[:m])
  return np.concatenate(out)


def label_list(extra: dict, num_labels: int) -> list[str]:
  """Tag names in class-id order: `convert.label_names` (the stored label map, HF
  `id2label`), else `LABEL_i`."""
  from electra_jax import convert

  labels = convert.label_names(extra, num_labels) or [f"LABEL_{i}" for i in range(num_labels)]
  if len(labels) != num_labels:
    raise ElectraError(f"the model has {num_labels} labels but its label map {len(labels)}")
  return labels


def predict_tags(path, input_path, output_path, *, batch_size, max_seq_length, fmt, evaluate,
                 progress, log) -> dict[str, Any]:  # fmt: skip
  """Tags every word of a text or CoNLL file; writes CoNLL (see the module docstring)."""
  if fmt is None:
    suffix = os.path.splitext(input_path)[1].lower()
    fmt = {**dict.fromkeys(CONLL_SUFFIXES, "conll"), ".csv": "csv", ".tsv": "tsv"}.get(suffix)
    fmt = fmt or ("jsonl" if suffix in (".jsonl", ".json") else "txt")
  if fmt not in ("txt", "conll"):
    raise ElectraError(
      f"{input_path}: a token-classification model reads text (.txt, one sentence per line) or "
      f"CoNLL columns (.conll, or --format conll), not {fmt}"
    )
  if fmt == "txt":
    if evaluate:
      raise ElectraError("--eval needs gold tags: give a CoNLL file (--format conll)")
    sentences = conll.read_text(input_path)
  else:
    column = int(_stored_extra(path).get("tag_column", -1))
    sentences = conll.read_conll(input_path, column, require_tags=evaluate)
  model = load(path, max_seq_length)
  length = model.max_seq_length
  labels = label_list(model.extra, model.num_labels)
  features, stats = token_classification.featurize(sentences, model.tokenizer, length, None)
  logits = _run(model.forward, features, batch_size, progress, log)
  ids = token_classification.sentence_predictions(logits.argmax(-1), features, sentences)
  tags = [[labels[i] for i in p] for p in ids]
  conll.write_conll(output_path, sentences, tags)
  summary: dict[str, Any] = {
    "sentences": len(sentences),
    "words": sum(len(s.words) for s in sentences),
    "split_sentences": stats.split_sentences,
    "truncated_words": stats.truncated_words,
  }
  print(
    f"wrote {output_path}: {summary['words']} words in {summary['sentences']} sentences tagged; "
    f"{stats.describe(length)}",
    file=log,
  )
  if evaluate:
    summary["metrics"] = token_classification.tag_scores([s.tags for s in sentences], tags)
    print("eval: " + ", ".join(f"{k}={v:.4f}" for k, v in summary["metrics"].items()), file=log)
  return summary


def predict_choices(path, input_path, output_path, *, batch_size, max_seq_length, fmt, evaluate,
                    progress, log) -> dict[str, Any]:  # fmt: skip
  """Picks an ending for every row of a CSV/TSV/JSONL file; writes JSONL."""
  import jax

  model = load(path, max_seq_length)
  extra, length = model.extra, model.max_seq_length
  defaults = multiple_choice.Columns()
  columns = multiple_choice.Columns(
    extra.get("context_column", defaults.context),
    extra.get("prefix_column", defaults.prefix),
    tuple(extra.get("ending_columns", defaults.endings)),
    extra.get("label_column", defaults.label),
  )
  questions = multiple_choice.read_questions(
    input_path, columns, require_labels=evaluate, file_format=fmt
  )
  if model.num_labels and len(columns.endings) != model.num_labels:
    raise ElectraError(
      f"the model scores {model.num_labels} choices but its ending columns are "
      f"{len(columns.endings)}: {list(columns.endings)}"
    )
  features, truncated = multiple_choice.featurize(questions, model.tokenizer, length)
  scores = _run(model.forward, features, batch_size, progress, log)
  chosen = scores.argmax(-1)
  multiple_choice.write_choices(output_path, chosen, np.asarray(jax.nn.softmax(scores, -1)))
  summary: dict[str, Any] = {"rows": len(questions), "truncated": truncated}
  print(
    f"wrote {output_path}: {len(questions)} rows, {truncated} with a choice truncated to "
    f"{length} tokens",
    file=log,
  )
  if evaluate:
    summary["metrics"] = {"accuracy": float(np.mean(chosen == features["labels"]))}
    print(f"eval: accuracy={summary['metrics']['accuracy']:.4f}", file=log)
  return summary


def predict_file(path: str, head: str, input_path, output_path, **kwargs) -> dict[str, Any]:
  """Predicts `input_path` with the model at `path` (head in `HEADS`); see the module docstring.

  Args:
    path: a model directory (resolved by `predict.resolve_model_dir`).
    head: its head.
    input_path, output_path: the files.
    **kwargs: `batch_size`, `max_seq_length`, `fmt`, `evaluate`, `progress`, `log`.
  """
  kwargs["log"] = kwargs.get("log") or sys.stderr
  run = predict_tags if head == "token_classification" else predict_choices
  return run(path, os.fspath(input_path), os.fspath(output_path), **kwargs)
