"""GLUE task registry and readers.

Two sources give the same `Example`s:

- `read_split(task, data_dir, split)`: a local directory in the standard
  `download_glue_data.py` layout (`CoLA/train.tsv`, `MNLI/dev_matched.tsv`,
  `diagnostic/diagnostic.tsv`, ...).
- `read_tfds_split(task, split, data_dir)`: tfds `glue/<config>` read through
  `tfds.data_source` (array_record), when it has been prepared.

The GLUE files are read as the official ELECTRA and tfds code read them: tab
separated with quoting off (some fields start with `"`; default CSV quoting
would merge rows), UTF-8 with an optional byte-order mark (MRPC has one),
CoLA train/dev without a header. Columns are looked up by header name where
the file has a header, which covers MNLI train (12 columns) and dev (16)
alike; headerless CoLA uses the official column indices. Test splits have no
labels: their `Example.label` is None.

Labels are kept as the strings of the GLUE files (`task.label_list`); the
integer class id of a label is its index in `label_list`, which is the order
of the official ELECTRA code (MNLI: contradiction, entailment, neutral). STS-B
is a regression task (`num_labels == 1`, float labels in [0, 5]).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os

from electra_jax.errors import ElectraError
from electra_jax.textfiles import utf8_lines

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Example:
  """One input of a sentence(-pair) task.

  Attributes:
    guid: `"<split>-<k>"`, k the file's `index`/`id` column where it has one,
      else the 0-based data row number (a tfds record's `idx`).
    text_a: the first (or only) text.
    text_b: the second text of a pair task, else None.
    label: a string of `Task.label_list` (classification), a float
      (regression), or None (test splits).
  """

  guid: str
  text_a: str
  text_b: str | None
  label: str | float | None


@dataclasses.dataclass(frozen=True)
class Task:
  """What the train loop needs to know about a task.

  Attributes:
    name: canonical lower-case name (`"sst2"`, `"mnli"`, `"custom"`...).
    num_labels: number of classes; 1 for a regression task.
    label_list: class labels in class-id order; empty for regression.
    metric_names: keys `metrics.compute_metrics` returns for this task.
    text_columns: names of the text fields (1 or 2), as in the GLUE headers.
    primary_metric: the metric the paper's GLUE score uses; also the one to
      pick the best checkpoint by.
    train_split: name of the training split, or None (AX has none).
    dev_splits: evaluation splits with labels (MNLI has two).
    test_splits: unlabelled splits for leaderboard submissions.
  """

  name: str
  num_labels: int
  label_list: tuple[str, ...]
  metric_names: tuple[str, ...]
  text_columns: tuple[str, ...]
  primary_metric: str
  train_split: str | None = "train"
  dev_splits: tuple[str, ...] = ("dev",)
  test_splits: tuple[str, ...] = ("test",)

  @property
  def is_regression(self) -> bool:
    """True for a regression task (one output, float labels)."""
    return not self.label_list

  @property
  def is_pair(self) -> bool:
    """True when examples have a second text."""
    return len(self.text_columns) == 2

  @property
  def label_map(self) -> dict[str, int] | None:
    """`{label: class id}`, or None for a regression task."""
    if self.is_regression:
      return None
    return {label: i for i, label in enumerate(self.label_list)}

  @property
  def splits(self) -> tuple[str, ...]:
    """All split names, train first."""
    head = (self.train_split,) if self.train_split else ()
    return head + self.dev_splits + self.test_splits

  def result_key(self, split: str) -> str:
    """The key of a dev split's metrics in `metrics.glue_score`'s input.

    `"mnli-m"` / `"mnli-mm"` for MNLI's matched / mismatched dev sets, the task
    name otherwise.
    """
    if self.name == "mnli":
      return {"dev_matched": "mnli-m", "dev_mismatched": "mnli-mm"}.get(split, "mnli-m")
    return self.name


# --- The registry -------------------------------------------------------------

_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_MNLI = ("contradiction", "entailment", "neutral")

TASKS: dict[str, Task] = {
  t.name: t
  for t in (
    Task("cola", 2, _BINARY, ("mcc", "accuracy"), ("sentence",), "mcc"),
    Task("sst2", 2, _BINARY, ("accuracy",), ("sentence",), "accuracy"),
    Task("mrpc", 2, _BINARY, ("accuracy", "f1"), ("#1 String", "#2 String"), "accuracy"),
    Task("stsb", 1, (), ("pearson", "spearman"), ("sentence1", "sentence2"), "spearman"),
    Task("qqp", 2, _BINARY, ("accuracy", "f1"), ("question1", "question2"), "accuracy"),
    Task(
      "mnli",
      3,
      _MNLI,
      ("accuracy",),
      ("sentence1", "sentence2"),
      "accuracy",
      dev_splits=("dev_matched", "dev_mismatched"),
      test_splits=("test_matched", "test_mismatched"),
    ),
    Task("qnli", 2, _NLI2, ("accuracy",), ("question", "sentence"), "accuracy"),
    Task("rte", 2, _NLI2, ("accuracy",), ("sentence1", "sentence2"), "accuracy"),
    Task("wnli", 2, _BINARY, ("accuracy",), ("sentence1", "sentence2"), "accuracy"),
    # The diagnostic set is predicted with an MNLI model; scored (by the
    # leaderboard, which holds its labels) with 3-class Matthews corr. (R3).
    Task(
      "ax",
      3,
      _MNLI,
      ("mcc",),
      ("sentence1", "sentence2"),
      "mcc",
      train_split=None,
      dev_splits=(),
      test_splits=("test",),
    ),
  )
}

GLUE_TASK_NAMES = tuple(TASKS)

# Spellings accepted by `get_task` besides the canonical names.
_ALIASES = {"sst": "sst2", "sts": "stsb", "diagnostic": "ax", "mnli-m": "mnli", "mnli-mm": "mnli"}


def get_task(name: str | Task) -> Task:
  """Returns the GLUE task called `name`.

  Case, `-` and `_` are ignored: `"SST-2"`, `"sst_2"` and `"sst2"` are one task.

  Args:
    name: a task name (or a `Task`, returned as is).

  Returns:
    The `Task`.

  Raises:
    ElectraError: for an unknown name, listing the valid ones.
  """
  if isinstance(name, Task):
    return name
  key = str(name).strip().lower()
  if key in _ALIASES:
    return TASKS[_ALIASES[key]]
  key = key.replace("-", "").replace("_", "")
  key = _ALIASES.get(key, key)
  if key not in TASKS:
    raise ElectraError(
      f"unknown task {name!r}; valid GLUE tasks: {', '.join(GLUE_TASK_NAMES)}"
      " (or 'custom' with your own files)"
    )
  return TASKS[key]


def find_task(name) -> Task | None:
  """The GLUE task called `name`, or None (no name, "custom", a user's task name)."""
  try:
    return get_task(name) if name else None
  except ElectraError:
    return None


# --- Local GLUE directory -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Where one split's file is and which of its columns hold what.

  With `header=True` the columns are header names; otherwise 0-based indices.
  """

  file: str
  header: bool
  text_a: str | int
  text_b: str | int | None
  label: str | int | None
  id_column: str | None = None


def _layouts(task: Task) -> dict[str, _Layout]:
  """The per-split file layouts of the official GLUE files."""
  a, b = (task.text_columns + (None,))[:2]
  name = task.name
  if name == "cola":
    # train/dev: source, label, original label, sentence; no header.
    lab = _Layout("", False, 3, None, 1)
    return {
      "train": dataclasses.replace(lab, file="train.tsv"),
      "dev": dataclasses.replace(lab, file="dev.tsv"),
      "test": _Layout("test.tsv", True, a, None, None, "index"),
    }
  if name == "ax":
    return {"test": _Layout("diagnostic.tsv", True, a, b, None, "index")}
  labels = {"mrpc": "Quality", "stsb": "score", "qqp": "is_duplicate", "mnli": "gold_label"}
  label = labels.get(name, "label")
  id_column = "id" if name == "qqp" else "index"
  out = {}
  for split in task.splits:
    is_test = split.startswith("test")
    # MRPC's test file has an `index` column; its train/dev files have none.
    split_id = None if (name == "mrpc" and not is_test) else id_column
    if name == "sst2" and not is_test:
      split_id = None
    out[split] = _Layout(f"{split}.tsv", True, a, b, None if is_test else label, split_id)
  return out


_GLUE_DIRS = {
  "cola": "CoLA",
  "sst2": "SST-2",
  "mrpc": "MRPC",
  "stsb": "STS-B",
  "qqp": "QQP",
  "mnli": "MNLI",
  "qnli": "QNLI",
  "rte": "RTE",
  "wnli": "WNLI",
  "ax": "diagnostic",
}


def _resolve_split(task: Task, split: str) -> str:
  """Checks `split` against the task's splits; "dev" means MNLI dev_matched."""
  if task.name == "mnli" and split in ("dev", "test"):
    split = f"{split}_matched"
  if split not in task.splits:
    raise ElectraError(
      f"task {task.name} has no split {split!r}; its splits are: {', '.join(task.splits)}"
    )
  return split


def split_path(task: str | Task, data_dir: str | os.PathLike, split: str) -> str:
  """The path of a split's file in a GLUE directory (whether it exists or not)."""
  task = get_task(task)
  split = _resolve_split(task, split)
  return os.path.join(os.fspath(data_dir), _GLUE_DIRS[task.name], _layouts(task)[split].file)


class _Malformed(Exception):
  """A row that cannot be turned into an example (message says why)."""


def _parse_label(task: Task, value: str):
  if task.is_regression:
    try:
      return float(value)
    except ValueError:
      raise _Malformed(f"label {value!r} is not a number") from None
  if value not in task.label_list:
    raise _Malformed(f"label {value!r} is not one of {list(task.label_list)}")
  return value


def _existing_split_file(task: Task, data_dir: str, split: str, layout: _Layout) -> str:
  """The split's file in `data_dir`; a one-line error naming what is missing."""
  if not os.path.isdir(data_dir):
    raise ElectraError(
      f"GLUE data directory {data_dir} does not exist; point data_dir at a directory in the"
      " download_glue_data.py layout (CoLA/, SST-2/, ...)"
    )
  path = os.path.join(data_dir, _GLUE_DIRS[task.name], layout.file)
  if not os.path.isfile(path):
    raise ElectraError(
      f"{task.name} split {split!r}: {path} not found; the GLUE directory needs"
      f" {_GLUE_DIRS[task.name]}/{layout.file} (download_glue_data.py layout)"
    )
  return path


def _column_indices(reader, layout: _Layout, path: str, task: Task, split: str) -> tuple:
  """Row positions of (text_a, text_b, label, id), None for absent ones.

  Files with a header are looked up by column name (the header row is
  consumed from `reader`); the others have fixed positions.
  """
  columns = (layout.text_a, layout.text_b, layout.label, layout.id_column)
  if not layout.header:
    return columns
  header = next(reader, None)
  if header is None:
    raise ElectraError(f"{path} is empty; expected a header row and examples")
  index = {name: i for i, name in enumerate(header)}
  missing = [c for c in columns if c is not None and c not in index]
  if missing:
    raise ElectraError(
      f"{path}: header {header} lacks column(s) {missing}; is this the {task.name}"
      f" {split} file of the official GLUE data?"
    )
  return tuple(None if c is None else index[c] for c in columns)


def read_split(
  task: str | Task,
  data_dir: str | os.PathLike,
  split: str,
  *,
  on_malformed: str = "error",
  limit: int | None = None,
) -> list[Example]:
  """Reads one split of a GLUE task from a `download_glue_data.py` directory.

  Args:
    task: a task name or `Task` (`get_task` spellings).
    data_dir: the GLUE directory (holding `CoLA/`, `SST-2/`, `MNLI/`, ...).
    split: `"train"`, `"dev"`, `"test"`; for MNLI `"dev_matched"`,
      `"dev_mismatched"`, `"test_matched"`, `"test_mismatched"` (`"dev"` and
      `"test"` mean matched); for AX only `"test"`.
    on_malformed: `"error"` (default) stops at the first row with too few
      columns or a label outside `label_list`, naming the file and line;
      `"skip"` drops such rows and logs one warning with their count and first
      line numbers. Blank lines are always ignored.
    limit: read at most this many examples (quick experiments).

  Returns:
    The examples in file order. Labels are None on test splits.

  Raises:
    ElectraError: unknown task or split, missing directory or file, a header
      without the expected columns, a malformed row (with `on_malformed="error"`).
  """
  task = get_task(task)
  if on_malformed not in ("error", "skip"):
    raise ElectraError(f"on_malformed must be 'error' or 'skip', got {on_malformed!r}")
  split = _resolve_split(task, split)
  layout = _layouts(task)[split]
  path = _existing_split_file(task, os.fspath(data_dir), split, layout)

  examples: list[Example] = []
  skipped: list[int] = []
  # utf-8-sig drops MRPC's byte-order mark, which would otherwise stick to the
  # first header name ("\ufeffQuality").
  with open(path, encoding="utf-8-sig", newline="") as f:
    reader = csv.reader(utf8_lines(f, path), delimiter="\t", quoting=csv.QUOTE_NONE)
    a_i, b_i, label_i, id_i = _column_indices(reader, layout, path, task, split)
    needed = 1 + max(i for i in (a_i, b_i, label_i, id_i) if i is not None)

    for row in reader:
      if limit is not None and len(examples) >= limit:
        break
      if not row:
        continue
      line = reader.line_num
      try:
        if len(row) < needed:
          raise _Malformed(f"expected at least {needed} tab-separated columns, found {len(row)}")
        label = None if label_i is None else _parse_label(task, row[label_i])
      except _Malformed as e:
        if on_malformed == "error":
          raise ElectraError(
            f"{path}:{line}: malformed {task.name} row: {e}; fix the row or read with"
            " on_malformed='skip'"
          ) from None
        skipped.append(line)
        continue
      key = row[id_i] if id_i is not None else str(len(examples) + len(skipped))
      examples.append(
        Example(
          guid=f"{split}-{key}",
          text_a=row[a_i],
          text_b=None if b_i is None else row[b_i],
          label=label,
        )
      )
  if skipped:
    _LOG.warning(
      "%s: skipped %d malformed row(s) (lines %s%s)",
      path,
      len(skipped),
      ", ".join(map(str, skipped[:5])),
      ", ..." if len(skipped) > 5 else "",
    )
  return examples


# --- tfds ---------------------------------------------------------------------

# tfds glue config name and the text feature names of each task.
_TFDS_FEATURES = {
  "cola": ("cola", ("sentence",)),
  "sst2": ("sst2", ("sentence",)),
  "mrpc": ("mrpc", ("sentence1", "sentence2")),
  "stsb": ("stsb", ("sentence1", "sentence2")),
  "qqp": ("qqp", ("question1", "question2")),
  "mnli": ("mnli", ("premise", "hypothesis")),
  "qnli": ("qnli", ("question", "sentence")),
  "rte": ("rte", ("sentence1", "sentence2")),
  "wnli": ("wnli", ("sentence1", "sentence2")),
  "ax": ("ax", ("premise", "hypothesis")),
}
# tfds's integer label -> our label string; tfds orders some label sets
# differently from the GLUE files (MNLI: entailment, neutral, contradiction).
_TFDS_LABELS = {
  "cola": ("0", "1"),
  "sst2": ("0", "1"),
  "mrpc": ("0", "1"),
  "qqp": ("0", "1"),
  "mnli": ("entailment", "neutral", "contradiction"),
  "ax": ("entailment", "neutral", "contradiction"),
  "qnli": ("entailment", "not_entailment"),
  "rte": ("entailment", "not_entailment"),
  "wnli": ("0", "1"),
}


def tfds_split_name(task: str | Task, split: str) -> str:
  """Our split name -> the tfds glue split name (`dev` -> `validation`)."""
  task = get_task(task)
  split = _resolve_split(task, split)
  return split.replace("dev", "validation")


def _text(value) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if hasattr(value, "item"):  # numpy scalar / 0-d array of bytes
    return _text(value.item())
  return str(value)


def read_tfds_split(
  task: str | Task,
  split: str,
  data_dir: str | os.PathLike | None = None,
  *,
  limit: int | None = None,
) -> list[Example]:
  """Reads one split of tfds `glue/<task>` through `tfds.data_source`.

  The dataset must already be prepared in array_record format under
  `data_dir` (e.g. `tfds build glue/sst2 --file_format=array_record
  --data_dir=DIR`, which needs TensorFlow and the network); nothing is
  downloaded here.

  Args:
    task: a task name or `Task`.
    split: our split name (`"train"`, `"dev"`, `"dev_mismatched"`, ...).
    data_dir: the tfds data directory; None means tfds's default
      (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
    limit: read at most this many examples.

  Returns:
    Examples in GLUE file order (tfds's `idx`), with the same label strings as
    `read_split` (test labels None). The whole split is read, then `limit`
    applied.

  Raises:
    ElectraError: when the dataset is not prepared or cannot be read.
  """
  task = get_task(task)
  split = _resolve_split(task, split)
  config, features = _TFDS_FEATURES[task.name]
  tfds_split = tfds_split_name(task, split)
  name = f"glue/{config}"
  try:
    import tensorflow_datasets as tfds

    source = tfds.data_source(
      name,
      split=tfds_split,
      data_dir=None if data_dir is None else os.fspath(data_dir),
      download=False,
    )
  except Exception as e:  # tfds raises many types for "not there"; report any as one line
    where = os.fspath(data_dir) if data_dir is not None else "the default tfds data_dir"
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ElectraError(
      f"tfds {name} split {tfds_split!r} is not available under {where} ({reason}); prepare"
      f" it with `tfds build {name} --file_format=array_record`, or use a GLUE directory"
      " (read_split)"
    ) from None

  labels = _TFDS_LABELS.get(task.name)
  examples = []
  for i in range(len(source)):
    record = source[i]
    texts = [_text(record[f]) for f in features]
    raw = record.get("label", -1)
    if task.is_regression:
      label = None if split.startswith("test") else float(raw)
    else:
      raw = int(raw)
      label = None if raw < 0 else labels[raw]
    key = int(record["idx"]) if "idx" in record else i
    examples.append(
      (key, Example(f"{split}-{key}", texts[0], texts[1] if len(texts) > 1 else None, label))
    )
  # tfds stores records in a hashed order; `idx` is the row in the GLUE file.
  examples.sort(key=lambda pair: pair[0])
  return [e for _, e in examples[:limit]]
