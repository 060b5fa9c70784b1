"""The user's own labelled data: CSV, TSV or JSONL files.

    cfg = CustomDataConfig(text_column="review", label_column="stars")
    task, label_map, splits = load_custom_task(cfg, "train.csv", dev_file="dev.csv")
    label_map.save(os.path.join(model_dir, "label_map.json"))
    weights = class_weights("balanced", [e.label for e in splits["train"]], label_map.labels)

File formats (chosen by suffix, or `CustomDataConfig.file_format`):
- `.csv`: comma separated, a header row naming the columns, standard CSV
  quoting (`"a, b"`; `""` for a quote), UTF-8 with or without a BOM.
- `.tsv` / `.txt`: the same with tabs.
- `.jsonl` / `.json`: one JSON object per line; keys are the columns.
Blank lines are ignored. Row numbers in messages are file line numbers (the
header is line 1 in CSV/TSV).

Labels: classification labels are strings (JSON numbers become `"1"`, JSON
booleans `"true"`/`"false"`). The label map is built from the training file:
the distinct labels sorted, numerically if every label is an integer
(`"2" < "10"`), else as strings; class id = position. It is saved as JSON
with the model so predictions map back to the same names. With
`regression=True` labels are floats and there is no label list.

Policies (parameters of `CustomDataConfig`):
- `unknown_label`: a dev/test label absent from the training labels is an
  error naming the file and line (`"error"`, default) or the row is dropped
  with one warning giving the count and first lines (`"skip"`).
- `empty_text`: a row whose text (or configured pair text) is empty or only
  whitespace is an error (`"error"`, default) or dropped with one warning
  (`"skip"`).
A label column absent from the file is an error naming the columns present,
unless the split is read with `require_labels=False` (unlabelled test data),
where labels are None.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from electra_jax import fileio
from electra_jax.errors import ElectraError
from electra_jax.tasks.glue import Example, Task
from electra_jax.textfiles import utf8_lines

_LOG = logging.getLogger(__name__)

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
_POLICIES = ("error", "skip")


@dataclasses.dataclass(frozen=True)
class CustomDataConfig:
  """How to read the user's files. See the module docstring for the policies.

  Attributes:
    text_column: column with the (first) text.
    text_pair_column: column with the second text of a pair task; None or ""
      for single-text tasks.
    label_column: column with the label.
    regression: float labels, one output (num_labels 1).
    unknown_label: `"error"` or `"skip"` for dev/test labels not in training.
    empty_text: `"error"` or `"skip"` for rows with empty text.
    file_format: `"csv"`, `"tsv"`, `"jsonl"`, or None to use the file suffix.
  """

  text_column: str = "text"
  text_pair_column: str | None = None
  label_column: str = "label"
  regression: bool = False
  unknown_label: str = "error"
  empty_text: str = "error"
  file_format: str | None = None

  def __post_init__(self):
    for name in ("unknown_label", "empty_text"):
      if getattr(self, name) not in _POLICIES:
        raise ElectraError(f"{name} must be 'error' or 'skip', got {getattr(self, name)!r}")
    if self.file_format not in (None, "csv", "tsv", "jsonl"):
      raise ElectraError(f"file_format must be csv, tsv or jsonl, got {self.file_format!r}")
    if not self.text_column or not self.label_column:
      raise ElectraError("text_column and label_column must be non-empty column names")

  @property
  def pair_column(self) -> str | None:
    """`text_pair_column`, with "" read as None."""
    return self.text_pair_column or None

  @classmethod
  def from_mapping(cls, mapping: Mapping) -> CustomDataConfig:
    """Builds a config from any mapping (e.g. an ml_collections ConfigDict).

    Keys that are not fields are ignored, so a whole fine-tuning config can be
    passed in.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: mapping[k] for k in names if k in mapping})


@dataclasses.dataclass(frozen=True)
class LabelMap:
  """Class labels in class-id order (empty for regression).

  Attributes:
    labels: the label strings; class id = index.
    regression: True for a regression task.
  """

  labels: tuple[str, ...] = ()
  regression: bool = False

  @property
  def label_to_id(self) -> dict[str, int] | None:
    """`{label: id}`, or None for regression (what `features.featurize` takes)."""
    return None if self.regression else {label: i for i, label in enumerate(self.labels)}

  @property
  def num_labels(self) -> int:
    """Outputs of the head: number of classes, 1 for regression."""
    return 1 if self.regression else len(self.labels)

  def to_json(self) -> dict:
    """A JSON-ready dict (also carries HF-style `id2label` for readers of config.json)."""
    return {
      "labels": list(self.labels),
      "regression": self.regression,
      "id2label": {str(i): label for i, label in enumerate(self.labels)},
    }

  def save(self, path: str | os.PathLike) -> str:
    """Writes the map as JSON (atomically: complete or absent). Returns the path."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    return fileio.atomic_write_text(
      path, json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"
    )

  @classmethod
  def load(cls, path: str | os.PathLike) -> LabelMap:
    """Reads a map written by `save`.

    Raises:
      ElectraError: missing file, invalid JSON, or not a label map.
    """
    path = os.fspath(path)
    try:
      with open(path, encoding="utf-8") as f:
        data = json.load(f)
    except FileNotFoundError:
      raise ElectraError(f"label map {path} not found") from None
    except json.JSONDecodeError as e:
      raise ElectraError(
        f"label map {path} is not valid JSON ({e.msg} at line {e.lineno})"
      ) from None
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
      raise ElectraError(f"{path} is not a label map: expected {{'labels': [strings], ...}}")
    if len(set(labels)) != len(labels):
      raise ElectraError(f"label map {path} lists a label twice: {labels}")
    return cls(tuple(labels), bool(data.get("regression", False)))


def build_label_map(examples: Sequence[Example], *, regression: bool = False) -> LabelMap:
  """The label map of a training set: its distinct labels, sorted.

  Integer-looking labels sort numerically (`"2"` before `"10"`), any other set
  sorts as strings; the order does not depend on the order of the rows.

  Raises:
    ElectraError: no labels, or fewer than 2 classes for classification.
  """
  if regression:
    return LabelMap((), True)
  values = {e.label for e in examples if e.label is not None}
  if len(values) < 2:
    raise ElectraError(
      f"the training data has {len(values)} distinct label(s) {sorted(values)}; classification"
      " needs at least 2 (set regression=True for numeric targets)"
    )
  try:
    ordered = sorted(values, key=lambda v: (int(v), v))
  except ValueError:
    ordered = sorted(values)
  return LabelMap(tuple(ordered), False)


def make_task(
  label_map: LabelMap, *, pair: bool = False, name: str = "custom", config=None
) -> Task:
  """A `Task` for the user's data (feeds `metrics.compute_metrics`).

  Classification reports accuracy, macro F1 and Matthews corr. (primary:
  accuracy); regression Pearson, Spearman and MSE (primary: Spearman).

  Args:
    label_map: from `build_label_map` / `LabelMap.load`.
    pair: whether examples have a second text.
    name: task name for messages and results.
    config: optional `CustomDataConfig` whose column names fill
      `text_columns`.
  """
  cfg = config or CustomDataConfig()
  columns = (cfg.text_column, cfg.pair_column or "text_pair") if pair else (cfg.text_column,)
  if label_map.regression:
    return Task(name, 1, (), ("pearson", "spearman", "mse"), columns, "spearman")
  return Task(
    name, len(label_map.labels), label_map.labels, ("accuracy", "macro_f1", "mcc"), columns,
    "accuracy",
  )  # fmt: skip


# --- Reading ------------------------------------------------------------------


def _file_format(path: str, config: CustomDataConfig) -> str:
  if config.file_format:
    return config.file_format
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in _FORMATS:
    raise ElectraError(
      f"cannot tell the format of {path} from its suffix {suffix!r}; use .csv, .tsv or .jsonl,"
      " or set file_format"
    )
  return _FORMATS[suffix]


def _records(path: str, fmt: str) -> tuple[list[str], list[tuple[int, dict]]]:
  """(columns seen, [(line number, {column: value})]) for a file."""
  if fmt == "jsonl":
    rows = []
    with open(path, encoding="utf-8-sig") as f:
      for line_no, line in enumerate(utf8_lines(f, path), start=1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise ElectraError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict):
          raise ElectraError(
            f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}"
          )
        rows.append((line_no, record))
    columns = list(dict.fromkeys(k for _, r in rows for k in r))
    return columns, rows

  rows = []
  with open(path, encoding="utf-8-sig", newline="") as f:
    reader = csv.reader(utf8_lines(f, path), delimiter="," if fmt == "csv" else "\t")
    header = next(reader, None)
    if header is None:
      raise ElectraError(f"{path} is empty; expected a header row naming the columns")
    header = [h.strip() for h in header]
    for row in reader:
      if not row or (len(row) == 1 and not row[0].strip()):
        continue
      if len(row) != len(header):
        raise ElectraError(
          f"{path}:{reader.line_num}: expected {len(header)} columns like the header, found"
          f" {len(row)}; quote fields that contain the delimiter"
        )
      rows.append((reader.line_num, dict(zip(header, row))))
  return header, rows


def read_table(
  path: str, file_format: str | None = None
) -> tuple[list[str], list[tuple[int, dict]]]:
  """`(columns, [(line number, {column: value})])` of a CSV/TSV/JSONL file read as above.

  The format comes from the suffix unless `file_format` names it; the errors
  are those of `read_examples` (a malformed row names its line).
  """
  return _records(path, _file_format(path, CustomDataConfig(file_format=file_format)))


def _as_text(value) -> str:
  if value is None:
    return ""
  if isinstance(value, bool):
    return "true" if value else "false"
  return str(value)


def _warn_skipped(path: str, what: str, lines: list[int]) -> None:
  if lines:
    _LOG.warning(
      "%s: skipped %d row(s) with %s (lines %s%s)",
      path,
      len(lines),
      what,
      ", ".join(map(str, lines[:5])),
      ", ..." if len(lines) > 5 else "",
    )


def read_examples(
  path: str | os.PathLike,
  config: CustomDataConfig,
  *,
  split: str = "train",
  label_map: LabelMap | None = None,
  require_labels: bool = True,
) -> list[Example]:
  """Reads one file of the user's data.

  Args:
    path: a .csv, .tsv or .jsonl file.
    config: column names and policies.
    split: name used in `Example.guid` (`"<split>-<line>"`) and messages.
    label_map: when given (dev/test), classification labels not in it follow
      `config.unknown_label`.
    require_labels: False for unlabelled data: a missing label column or
      empty label gives `label=None`.

  Returns:
    Examples in file order; labels are strings (classification), floats
    (regression) or None.

  Raises:
    ElectraError: missing file, unknown format, a text or label column absent
      (naming the columns present), a malformed row, an empty label, a
      non-numeric regression label, and per the policies an empty text or an
      unknown label; each names the file and line.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ElectraError(f"{split} file {path} not found")
  fmt = _file_format(path, config)
  columns, records = _records(path, fmt)
  text_columns = [c for c in (config.text_column, config.pair_column) if c]
  for column in text_columns:
    if column not in columns:
      raise ElectraError(f"{path}: no text column {column!r}; columns present: {columns}")
  has_labels = config.label_column in columns
  if require_labels and not has_labels:
    raise ElectraError(
      f"{path}: no label column {config.label_column!r}; columns present: {columns}"
      " (set label_column)"
    )
  known = None if label_map is None or config.regression else set(label_map.labels)

  examples, empty_lines, unknown_lines = [], [], []
  for line, record in records:
    texts = [_as_text(record.get(c)) for c in text_columns]
    if any(not t.strip() for t in texts):
      if config.empty_text == "error":
        raise ElectraError(
          f"{path}:{line}: empty text in column(s)"
          f" {[c for c, t in zip(text_columns, texts) if not t.strip()]}; remove the row or set"
          " empty_text='skip'"
        )
      empty_lines.append(line)
      continue
    raw = _as_text(record.get(config.label_column)).strip() if has_labels else ""
    if not raw:
      if require_labels:
        raise ElectraError(f"{path}:{line}: empty {config.label_column!r} value")
      label = None
    elif config.regression:
      try:
        label = float(raw)
      except ValueError:
        raise ElectraError(f"{path}:{line}: regression label {raw!r} is not a number") from None
      if not math.isfinite(label):
        raise ElectraError(f"{path}:{line}: regression label {raw!r} is not finite")
    else:
      label = raw
      if known is not None and label not in known:
        if config.unknown_label == "error":
          raise ElectraError(
            f"{path}:{line}: label {label!r} is not among the training labels"
            f" {list(label_map.labels)}; fix it or set unknown_label='skip'"
          )
        unknown_lines.append(line)
        continue
    examples.append(
      Example(f"{split}-{line}", texts[0], texts[1] if len(texts) > 1 else None, label)
    )
  _warn_skipped(path, "empty text", empty_lines)
  _warn_skipped(path, "labels unknown to training", unknown_lines)
  return examples


def load_custom_task(
  config: CustomDataConfig,
  train_file: str | os.PathLike | None = None,
  dev_file: str | os.PathLike | None = None,
  test_file: str | os.PathLike | None = None,
  *,
  label_map: LabelMap | None = None,
  name: str = "custom",
) -> tuple[Task, LabelMap, dict[str, list[Example]]]:
  """Reads the user's splits and builds (or checks against) the label map.

  Args:
    config: columns and policies.
    train_file: labelled training data; the label map is built from it unless
      `label_map` is given.
    dev_file: labelled evaluation data (optional).
    test_file: data to predict (optional); labels are optional.
    label_map: an existing map (e.g. loaded with a fine-tuned model).
    name: the task name.

  Returns:
    `(task, label_map, {"train": [...], "dev": [...], "test": [...]})`, with
    only the splits whose file was given.

  Raises:
    ElectraError: neither `train_file` nor `label_map` given, or any
      `read_examples` error.
  """
  if train_file is None and label_map is None:
    raise ElectraError("custom task: give a train file (to build the label map) or a label map")
  if label_map is not None and label_map.regression != config.regression:
    raise ElectraError(
      f"label map is for {'regression' if label_map.regression else 'classification'} but the"
      f" config says regression={config.regression}"
    )
  splits = {}
  if train_file is not None:
    splits["train"] = read_examples(train_file, config, split="train", label_map=label_map)
    if label_map is None:
      label_map = build_label_map(splits["train"], regression=config.regression)
  if dev_file is not None:
    splits["dev"] = read_examples(dev_file, config, split="dev", label_map=label_map)
  if test_file is not None:
    splits["test"] = read_examples(
      test_file, config, split="test", label_map=label_map, require_labels=False
    )
  task = make_task(label_map, pair=config.pair_column is not None, name=name, config=config)
  return task, label_map, splits


# --- Class weights ------------------------------------------------------------


def class_weights(
  spec: str | Mapping[str, float] | None,
  labels: Sequence,
  label_list: Sequence[str] | None = None,
) -> np.ndarray:
  """Per-class loss weights for imbalanced data.

  Args:
    spec: None / `""` / `"none"`: all 1. `"balanced"`: n_samples /
      (n_classes * count(class)), as `sklearn.utils.compute_class_weight`.
      A mapping `{label: weight}` (or its JSON string): the given weights,
      1.0 for labels not mentioned.
    labels: the training labels, as label strings or class ids.
    label_list: the classes in id order (`LabelMap.labels`); None derives
      them from `labels` (`build_label_map`'s order for strings, 0..max for
      class ids).

  Returns:
    float32 array `[len(label_list)]`, indexed by class id.

  Raises:
    ElectraError: unknown spec, a class with no examples under "balanced",
      a weight key that is not a label, a weight that is not a positive number,
      or a label outside `label_list`.
  """
  if label_list is None:
    values = list(labels)
    if values and all(isinstance(v, str) for v in values):
      label_list = build_label_map([Example("", "", None, v) for v in values]).labels
    else:
      label_list = [str(i) for i in range(int(max(values, default=-1)) + 1)]
  label_list = list(label_list)
  k = len(label_list)
  if k == 0:
    raise ElectraError("class weights need a classification task (the label list is empty)")
  if isinstance(spec, str):
    text = spec.strip()
    if text.startswith("{"):
      try:
        spec = json.loads(text)
      except json.JSONDecodeError as e:
        raise ElectraError(f"class_weights JSON is invalid: {e.msg}") from None
    elif text.lower() in ("", "none"):
      spec = None
    elif text.lower() == "balanced":
      spec = "balanced"
    else:
      raise ElectraError(
        f"class_weights must be 'balanced', a {{label: weight}} dict or empty, got {spec!r}"
      )
  if spec is None:
    return np.ones(k, np.float32)
  if spec == "balanced":
    index = {label: i for i, label in enumerate(label_list)}
    ids = []
    for value in labels:
      if isinstance(value, str):
        if value not in index:
          raise ElectraError(f"label {value!r} is not in the label list {label_list}")
        ids.append(index[value])
      else:
        if not 0 <= int(value) < k:
          raise ElectraError(f"class id {value} is outside [0, {k})")
        ids.append(int(value))
    counts = np.bincount(np.asarray(ids, dtype=np.int64), minlength=k)
    if np.any(counts == 0):
      absent = [label_list[i] for i in np.flatnonzero(counts == 0)]
      raise ElectraError(f"class_weights='balanced': no training examples of label(s) {absent}")
    return (len(ids) / (k * counts)).astype(np.float32)
  if not isinstance(spec, Mapping):
    raise ElectraError(
      f"class_weights must be 'balanced', a dict or None, got {type(spec).__name__}"
    )
  weights = np.ones(k, np.float32)
  for key, value in spec.items():
    key = str(key)
    if key not in label_list:
      raise ElectraError(f"class_weights key {key!r} is not a label; labels: {label_list}")
    try:
      w = float(value)
    except (TypeError, ValueError):
      raise ElectraError(f"class_weights[{key!r}] = {value!r} is not a number") from None
    if not (math.isfinite(w) and w > 0):
      raise ElectraError(f"class_weights[{key!r}] = {value!r} must be a positive number")
    weights[label_list.index(key)] = w
  return weights
