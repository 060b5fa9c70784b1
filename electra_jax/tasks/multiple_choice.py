"""Multiple choice (SWAG-style) as a fine-tuning task: `task=multiple_choice`.

    electra-jax finetune --config experiments/configs/multiple_choice.py:size=small \
      --workdir W --config.train_file=train.csv --config.dev_file=val.csv

Data: CSV, TSV or JSONL rows (read as `electra_jax/tasks/custom.py` reads
them), one question per row: a context (`context_column`, default `sent1`),
an optional prefix shared by the endings (`prefix_column`, default `sent2`;
empty = none), the endings (`ending_columns`, default
`ending0,ending1,ending2,ending3`) and the index of the right ending
(`label_column`, default `label`; absent or empty in test files). Choice `k`
is encoded as HF's `run_swag.py` does: `[CLS] context [SEP] prefix ending_k
[SEP]` (the ending alone without a prefix), truncated longest first to
`max_seq_length`; features are `[n, choices, max_seq_length]`. Rows where a
choice had to be truncated are counted and logged.

The head is HF's `ElectraForMultipleChoice` (HF's sequence summary on [CLS],
then one score per choice), trained with cross-entropy over the choices
(summed over the batch with `recipe=official`'s loss reduction, averaged
with `standard`); the metric is accuracy. Test predictions go to
`WORKDIR/test_predictions/test.jsonl`: `{"index", "label"}` per row.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from electra_jax import fileio, tokenization
from electra_jax.errors import ElectraError
from electra_jax.tasks import adapters, custom

log = logging.getLogger(__name__)

_NOT_APPLICABLE = ("double_unordered", "scale_regression")


@dataclasses.dataclass(frozen=True)
class Columns:
  """Where a row's parts are (see the module docstring)."""

  context: str = "sent1"
  prefix: str = "sent2"
  endings: tuple[str, ...] = ("ending0", "ending1", "ending2", "ending3")
  label: str = "label"

  @classmethod
  def from_config(cls, cfg) -> Columns:
    endings = tuple(c.strip() for c in str(cfg.ending_columns).split(",") if c.strip())
    if len(endings) < 2:
      raise ElectraError(
        f"--config.ending_columns={cfg.ending_columns!r} names {len(endings)} column(s); "
        "multiple choice needs 2 or more (comma separated)"
      )
    if not cfg.context_column or not cfg.label_column:
      raise ElectraError("--config.context_column and --config.label_column must name columns")
    return cls(
      str(cfg.context_column), str(cfg.prefix_column or ""), endings, str(cfg.label_column)
    )

  def to_json(self) -> dict:
    return {
      "context_column": self.context,
      "prefix_column": self.prefix,
      "ending_columns": list(self.endings),
      "label_column": self.label,
    }


@dataclasses.dataclass(frozen=True)
class Question:
  """One row: the context, each choice's second segment, the right choice (None: unlabelled)."""

  context: str
  choices: tuple[str, ...]
  label: int | None
  line: int


def check_columns(path: str, present: Sequence[str], columns: Columns, need_label: bool) -> None:
  """An error naming the columns present when one the config names is absent."""
  wanted = [columns.context, *([columns.prefix] if columns.prefix else []), *columns.endings]
  wanted += [columns.label] if need_label else []
  missing = [c for c in wanted if c not in present]
  if missing:
    raise ElectraError(
      f"{path}: no column(s) {missing}; columns present: {list(present)} (set "
      "--config.context_column / prefix_column / ending_columns / label_column)"
    )


def _text(value) -> str:
  return "" if value is None else str(value).strip()


def read_questions(
  path: str, columns: Columns, *, require_labels: bool = True, file_format: str | None = None
) -> list[Question]:
  """Reads a CSV/TSV/JSONL file of questions (format from the suffix unless `file_format`).

  Raises:
    ElectraError: a missing file or column, a malformed row, an empty context
      or ending, or a label that is not a choice index `0..choices-1`; each
      names the file and line.
  """
  if not os.path.isfile(path):
    raise ElectraError(f"multiple-choice file {path} not found")
  present, rows = custom.read_table(path, file_format)
  has_label = columns.label in present
  check_columns(path, present, columns, need_label=require_labels)
  n = len(columns.endings)
  out = []
  for line, row in rows:
    context = _text(row.get(columns.context))
    prefix = _text(row.get(columns.prefix)) if columns.prefix else ""
    endings = [_text(row.get(c)) for c in columns.endings]
    empty = [c for c, e in zip(columns.endings, endings) if not e]
    if not context or empty:
      raise ElectraError(f"{path}:{line}: empty {columns.context if not context else empty[0]!r}")
    raw = _text(row.get(columns.label)) if has_label else ""
    label = None
    if raw:
      try:
        label = int(float(raw)) if float(raw).is_integer() else -1
      except ValueError:
        label = -1
      if not 0 <= label < n:
        raise ElectraError(
          f"{path}:{line}: label {raw!r} is not a choice index 0..{n - 1} "
          f"(the position of the right ending in {list(columns.endings)})"
        )
    elif require_labels:
      raise ElectraError(f"{path}:{line}: empty {columns.label!r}")
    choices = tuple(f"{prefix} {e}" if prefix else e for e in endings)
    out.append(Question(context, choices, label, line))
  if not out:
    raise ElectraError(f"{path} has no rows")
  return out


def featurize(
  questions: Sequence[Question], tokenizer, max_seq_length: int
) -> tuple[dict[str, np.ndarray], int]:
  """Questions → `[n, choices, max_seq_length]` pair encodings, `labels` `[n]` (-1 when unlabelled).

  Returns:
    `(features, truncated)`: `truncated` counts the questions where a choice
    was cut to fit.
  """
  n, c = len(questions), len(questions[0].choices) if questions else 0
  contexts = tokenizer.encode_ids_batch([q.context for q in questions])
  seconds = tokenizer.encode_ids_batch([x for q in questions for x in q.choices])
  ids = np.full((n, c, max_seq_length), tokenizer.pad_id, np.int32)
  mask = np.zeros_like(ids)
  types = np.zeros_like(ids)
  truncated = 0
  for i in range(n):
    cut = False
    for k in range(c):
      a, b = contexts[i], seconds[i * c + k]
      n_a, n_b = tokenization.truncate_pair_lengths(len(a), len(b), max_seq_length - 3)
      cut |= (n_a, n_b) != (len(a), len(b))
      row = [tokenizer.cls_id, *a[:n_a], tokenizer.sep_id, *b[:n_b], tokenizer.sep_id]
      ids[i, k, : len(row)] = row
      mask[i, k, : len(row)] = 1
      types[i, k, n_a + 2 : len(row)] = 1
    truncated += cut
  labels = np.asarray([-1 if q.label is None else q.label for q in questions], np.int32)
  features = {
    "input_ids": ids,
    "input_mask": mask,
    "segment_ids": types,
    "labels": labels.reshape(n),
    "example_index": np.arange(n, dtype=np.int32),
  }
  return features, truncated


def write_choices(path: str, chosen: Sequence[int], scores: np.ndarray | None = None) -> str:
  """`{"index": i, "label": k}` per row (with `probabilities` when `scores` are given), atomically."""
  with fileio.atomic_writer(path) as f:
    for i, k in enumerate(chosen):
      line = {"index": i, "label": int(k)}
      if scores is not None:
        line["probabilities"] = [round(float(p), 6) for p in scores[i]]
      f.write(json.dumps(line) + "\n")
  return path


@dataclasses.dataclass
class MultipleChoiceAdapter(adapters.TaskAdapter):
  """One right ending out of several per row (see the module docstring)."""

  columns: Columns
  splits: dict[str, list[Question]]
  dev_splits: tuple[str, ...]
  test_splits: tuple[str, ...]
  recipe: dict
  source: str
  truncated: dict[str, int] = dataclasses.field(default_factory=dict)

  name = "multiple_choice"
  primary_metric = "accuracy"
  head = "multiple_choice"
  head_kwargs = {}

  @property
  def num_choices(self) -> int:
    return len(self.columns.endings)

  def featurize(self, tokenizer, max_seq_length):
    out = {}
    for split, questions in self.splits.items():
      out[split], self.truncated[split] = featurize(questions, tokenizer, max_seq_length)
    return out

  def init_inputs(self, max_seq_length):
    return (jnp.zeros((1, self.num_choices, max_seq_length), jnp.int32),)

  def loss_fn(self, model, weights):
    """Cross-entropy over the choices, summed (official reduction) or averaged over the batch."""
    reduce = jnp.sum if self.recipe["loss_reduction"] == "sum" else jnp.mean
    forward = self.forward(model)

    def loss_fn(params, batch, rng, deterministic):
      logits = forward(
        params, *(batch[k] for k in self.input_keys), deterministic, {"dropout": rng}
      )
      labels = batch["labels"]
      loss = reduce(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
      return loss, {"accuracy": jnp.mean(logits.argmax(-1) == labels)}

    return loss_fn

  def predictions(self, outputs, split=None):
    return np.asarray(outputs).argmax(-1)

  def metrics(self, predictions, split_features, split=None):
    labels = split_features["labels"]
    return {"accuracy": float(np.mean(predictions == labels))}

  def write_submission(self, predictions, out_dir, split):
    os.makedirs(out_dir, exist_ok=True)
    return write_choices(os.path.join(out_dir, f"{split}.jsonl"), predictions)

  def describe(self):
    text = f"{self.num_choices} choices ({', '.join(self.columns.endings)})"
    cut = {s: n for s, n in self.truncated.items() if n}
    if cut:
      text += "; rows with a choice truncated: " + ", ".join(f"{s} {n}" for s, n in cut.items())
    return text

  def model_extra(self):
    return {"task": self.name, "num_choices": self.num_choices, **self.columns.to_json()}


def multiple_choice_adapter(cfg: ml_collections.ConfigDict, recipe: dict) -> MultipleChoiceAdapter:
  """Reads and checks `cfg.train_file`, `dev_file`, `test_file`."""
  if not cfg.train_file:
    raise ElectraError("task=multiple_choice needs --config.train_file (CSV, TSV or JSONL)")
  columns = Columns.from_config(cfg)
  splits = {"train": read_questions(cfg.train_file, columns)}
  limit = int(cfg.max_train_examples)
  if limit:
    splits["train"] = splits["train"][:limit]
  if cfg.dev_file:
    splits["dev"] = read_questions(cfg.dev_file, columns)
  if cfg.test_file:
    splits["test"] = read_questions(cfg.test_file, columns, require_labels=False)
  recipe = {k: v for k, v in recipe.items() if k not in _NOT_APPLICABLE}
  recipe["head"] = "hf"  # the only multiple-choice head (HF's), whatever the recipe
  return MultipleChoiceAdapter(
    columns=columns,
    splits=splits,
    dev_splits=("dev",) if "dev" in splits else (),
    test_splits=("test",) if "test" in splits else (),
    recipe=recipe,
    source=os.path.abspath(cfg.train_file),
  )


adapters.ADAPTERS["multiple_choice"] = multiple_choice_adapter
