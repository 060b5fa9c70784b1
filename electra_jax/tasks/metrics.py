"""GLUE metrics, the two GLUE scores, leaderboard submission files.

The metrics are scikit-learn's, SciPy's and numpy's (Matthews correlation in
its multi-class form, accuracy, binary F1 of class 1, Pearson, Spearman with
tied ranks averaged); this module maps tasks to them and fixes one convention:
undefined values (MCC or a correlation with a constant input, F1 with no
positive prediction or label) are 0.0, sklearn's MCC convention, rather than
NaN, so that "best checkpoint" comparisons stay well defined.

All values are fractions in [-1, 1]; multiply by 100 for the paper's tables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from electra_jax import fileio
from electra_jax.errors import ElectraError
from electra_jax.tasks import glue

# --- Single metrics -----------------------------------------------------------


def _as_1d(name: str, values) -> np.ndarray:
  array = np.asarray(values)
  if array.ndim != 1:
    raise ElectraError(f"{name} must be one value per example, got shape {array.shape}")
  return array


def _pair(predictions, labels, dtype=None) -> tuple[np.ndarray, np.ndarray]:
  """Both inputs as 1-D arrays of one length (> 0), or a one-line error."""
  p, y = _as_1d("predictions", predictions), _as_1d("labels", labels)
  if dtype is not None:
    p, y = p.astype(dtype), y.astype(dtype)
  if p.shape[0] != y.shape[0]:
    raise ElectraError(f"{p.shape[0]} predictions for {y.shape[0]} labels; they must pair up")
  if p.shape[0] == 0:
    raise ElectraError("no predictions to score; the evaluation set is empty")
  return p, y


def accuracy(predictions, labels) -> float:
  """Fraction of predictions equal to the labels."""
  p, y = _pair(predictions, labels)
  return float(skm.accuracy_score(y, p))


def f1(predictions, labels, positive=1) -> float:
  """Binary F1 of class `positive` (GLUE MRPC / QQP use class 1).

  0.0 when there are no true positives (including no positives at all).
  """
  p, y = _pair(predictions, labels)
  return float(skm.f1_score(y == positive, p == positive, zero_division=0.0))


def macro_f1(predictions, labels) -> float:
  """Unweighted mean over the label values seen (in labels or predictions) of one-vs-rest F1."""
  p, y = _pair(predictions, labels)
  return float(skm.f1_score(y, p, average="macro", zero_division=0.0))


def matthews_corrcoef(predictions, labels) -> float:
  """Matthews correlation coefficient, multi-class (Gorodkin's R_K) form.

  0.0 when undefined (e.g. every prediction the same class), as sklearn.
  """
  p, y = _pair(predictions, labels)
  # One class in all: sklearn also returns 0.0, but warns about the
  # confusion matrix's shape first.
  if len(np.union1d(p, y)) < 2:
    return 0.0
  return float(skm.matthews_corrcoef(y, p))


def _is_constant(values: np.ndarray) -> bool:
  return bool(np.all(values == values[0]))


def pearson(predictions, labels) -> float:
  """Pearson correlation; 0.0 when either input is constant."""
  x, y = _pair(predictions, labels, np.float64)
  # A constant input has no correlation; numpy and SciPy return NaN (and warn).
  if _is_constant(x) or _is_constant(y):
    return 0.0
  # numpy's rather than `scipy.stats.pearsonr` (equal to 1e-15): pearsonr
  # rescales first, so exactly linear inputs can come out 1 - 2e-16, not 1.0.
  return float(np.corrcoef(x, y)[0, 1])


def spearman(predictions, labels) -> float:
  """Spearman rank correlation (ties get their average rank); 0.0 for a constant input."""
  x, y = _pair(predictions, labels, np.float64)
  if _is_constant(x) or _is_constant(y):
    return 0.0
  return float(stats.spearmanr(x, y).statistic)


def mse(predictions, labels) -> float:
  """Mean squared error."""
  x, y = _pair(predictions, labels, np.float64)
  return float(skm.mean_squared_error(y, x))


METRICS = {
  "accuracy": accuracy,
  "f1": f1,
  "macro_f1": macro_f1,
  "mcc": matthews_corrcoef,
  "pearson": pearson,
  "spearman": spearman,
  "mse": mse,
}


def compute_metrics(task: str | glue.Task, predictions, labels) -> dict[str, float]:
  """The task's metrics (`task.metric_names`) for one evaluation set.

  Args:
    task: a GLUE task name or a `Task` (custom tasks from `custom.make_task`).
    predictions: class ids `[n]`, or logits / probabilities `[n, num_labels]`
      (argmax is taken); for regression `[n]` or `[n, 1]` floats.
    labels: class ids `[n]` (or floats for regression).

  Returns:
    `{metric name: value}`.

  Raises:
    ElectraError: unknown task, mismatched lengths, empty input, or labels
      outside `[0, num_labels)`.
  """
  task = glue.get_task(task)
  predictions = np.asarray(predictions)
  labels = np.asarray(labels)
  if task.is_regression:
    if predictions.ndim == 2 and predictions.shape[1] == 1:
      predictions = predictions[:, 0]
    predictions = predictions.astype(np.float64)
    labels = labels.astype(np.float64)
  else:
    if predictions.ndim == 2:
      if predictions.shape[1] != task.num_labels:
        raise ElectraError(
          f"{task.name}: predictions have {predictions.shape[1]} scores per example,"
          f" the task has {task.num_labels} labels"
        )
      predictions = predictions.argmax(axis=-1)
    labels = _as_1d("labels", labels)
    if labels.size and (labels.min() < 0 or labels.max() >= task.num_labels):
      raise ElectraError(
        f"{task.name}: labels must be class ids in [0, {task.num_labels}),"
        f" got values in [{labels.min()}, {labels.max()}]"
      )
  return {name: METRICS[name](predictions, labels) for name in task.metric_names}


# --- GLUE scores --------------------------------------------------------------

# The paper's dev score: one metric per task, WNLI excluded, MNLI matched.
PAPER_METRIC = {
  "cola": "mcc",
  "sst2": "accuracy",
  "mrpc": "accuracy",
  "stsb": "spearman",
  "qqp": "accuracy",
  "mnli-m": "accuracy",
  "qnli": "accuracy",
  "rte": "accuracy",
}
# The leaderboard: mean of the task's metrics; MNLI's score is the mean of m
# and mm; WNLI counts; AX does not.
LEADERBOARD_METRICS = {
  "cola": ("mcc",),
  "sst2": ("accuracy",),
  "mrpc": ("accuracy", "f1"),
  "stsb": ("pearson", "spearman"),
  "qqp": ("accuracy", "f1"),
  "mnli": (),  # from mnli-m and mnli-mm
  "qnli": ("accuracy",),
  "rte": ("accuracy",),
  "wnli": ("accuracy",),
}


def _normalise_keys(results: Mapping[str, Mapping[str, float]]) -> dict[str, Mapping]:
  out = {}
  for key, value in results.items():
    k = str(key).strip().lower().replace("_", "-")
    k = {"mnli": "mnli-m", "mnli-matched": "mnli-m", "mnli-mismatched": "mnli-mm"}.get(k, k)
    if k not in ("mnli-m", "mnli-mm"):
      k = glue.get_task(k).name
    out[k] = value
  return out


def _metric(results, key, name):
  try:
    return float(results[key][name])
  except KeyError:
    raise ElectraError(
      f"glue_score: results for {key} lack metric {name!r} (have {sorted(results[key])})"
    ) from None


def glue_score(results_by_task: Mapping[str, Mapping[str, float]]) -> dict:
  """The paper's GLUE dev score and the leaderboard-style average.

  Args:
    results_by_task: `{task: compute_metrics(...)}`. MNLI is given as
      `"mnli-m"` (matched dev; plain `"mnli"` is read as matched) and
      `"mnli-mm"` (mismatched); `Task.result_key(split)` gives these keys.
      Other keys are task names in any `get_task` spelling; `"ax"` is ignored.

  Returns:
    A dict with
    - `"paper"`: mean of CoLA MCC, STS-B Spearman and accuracy for SST-2, MRPC,
      QQP, MNLI (matched only: the paper's dev tables report MNLI-m), QNLI,
      RTE; WNLI excluded (Clark et al. 2020, Sec. 3.1).
    - `"leaderboard"`: the GLUE leaderboard's macro-average: each task's
      metrics averaged within the task (MRPC and QQP (acc + F1) / 2, STS-B
      (Pearson + Spearman) / 2), MNLI = (m + mm) / 2, WNLI included, AX not.
    - `"paper_tasks"` / `"leaderboard_tasks"`: the per-task scores averaged.
    - `"missing"`: tasks absent from `results_by_task`; the averages are
      over the tasks present (None when none is), so compare only complete
      sets.
  """
  results = _normalise_keys(results_by_task)
  paper_tasks = {
    key: _metric(results, key, metric) for key, metric in PAPER_METRIC.items() if key in results
  }
  board_tasks = {}
  for task, names in LEADERBOARD_METRICS.items():
    if task == "mnli":
      parts = [_metric(results, k, "accuracy") for k in ("mnli-m", "mnli-mm") if k in results]
      if parts:
        board_tasks["mnli"] = float(np.mean(parts))
    elif task in results:
      board_tasks[task] = float(np.mean([_metric(results, task, n) for n in names]))
  missing = [t for t in PAPER_METRIC if t not in results]
  missing += [t for t in ("mnli-mm", "wnli") if t not in results]
  return {
    "paper": float(np.mean(list(paper_tasks.values()))) if paper_tasks else None,
    "leaderboard": float(np.mean(list(board_tasks.values()))) if board_tasks else None,
    "paper_tasks": paper_tasks,
    "leaderboard_tasks": board_tasks,
    "missing": missing,
  }


# --- Leaderboard submission files ---------------------------------------------

_SUBMISSION_FILES = {
  ("cola", "test"): "CoLA.tsv",
  ("sst2", "test"): "SST-2.tsv",
  ("mrpc", "test"): "MRPC.tsv",
  ("stsb", "test"): "STS-B.tsv",
  ("qqp", "test"): "QQP.tsv",
  ("mnli", "test_matched"): "MNLI-m.tsv",
  ("mnli", "test_mismatched"): "MNLI-mm.tsv",
  ("qnli", "test"): "QNLI.tsv",
  ("rte", "test"): "RTE.tsv",
  ("wnli", "test"): "WNLI.tsv",
  ("ax", "test"): "AX.tsv",
}


def submission_file_name(task: str | glue.Task, split: str = "test") -> str:
  """The leaderboard file name for a task's test split (`"MNLI-mm.tsv"`, ...)."""
  task = glue.get_task(task)
  if task.name == "mnli" and split == "test":
    split = "test_matched"
  try:
    return _SUBMISSION_FILES[(task.name, split)]
  except KeyError:
    raise ElectraError(
      f"no GLUE submission file for {task.name} split {split!r}; use one of"
      f" {[s for (t, s) in _SUBMISSION_FILES if t == task.name]}"
    ) from None


def write_glue_submission(
  task: str | glue.Task,
  predictions: Sequence,
  out_dir: str | os.PathLike,
  *,
  split: str = "test",
  ids: Sequence | None = None,
) -> str:
  """Writes one GLUE leaderboard prediction file (`index<TAB>prediction`).

  Classification predictions are written as label strings (`"1"`,
  `"entailment"`, ...), STS-B as floats (not clipped). The file appears
  whole or not at all (written to a temporary file, then renamed).

  Args:
    task: a GLUE task name or `Task`; AX (`"ax"`) takes MNLI-model predictions.
    predictions: one per test example in file order: class ids, label
      strings, or `[n, num_labels]` scores (argmax); floats for STS-B.
    out_dir: directory for the file (created if needed).
    split: `"test"`; for MNLI `"test_matched"` (`"test"`) or `"test_mismatched"`.
    ids: the `index` column; default 0..n-1 (the GLUE test files' own index).

  Returns:
    The path written, e.g. `out_dir/MNLI-mm.tsv`.

  Raises:
    ElectraError: unknown task/split, ids of the wrong length, or a
      prediction that is not a valid class.
  """
  task = glue.get_task(task)
  file_name = submission_file_name(task, split)
  values = np.asarray(predictions)
  if task.is_regression:
    if values.ndim == 2 and values.shape[1] == 1:
      values = values[:, 0]
    text = [f"{float(v):.6f}" for v in _as_1d("predictions", values)]
  else:
    if values.ndim == 2:
      values = values.argmax(axis=-1)
    text = []
    for v in _as_1d("predictions", values):
      v = v.item() if hasattr(v, "item") else v
      if isinstance(v, str):
        if v not in task.label_list:
          raise ElectraError(f"{task.name}: prediction {v!r} is not one of {task.label_list}")
        text.append(v)
      else:
        if not (float(v).is_integer() and 0 <= int(v) < task.num_labels):
          raise ElectraError(
            f"{task.name}: prediction {v!r} is not a class id in [0, {task.num_labels})"
          )
        text.append(task.label_list[int(v)])
  ids = list(range(len(text))) if ids is None else list(ids)
  if len(ids) != len(text):
    raise ElectraError(f"{len(ids)} ids for {len(text)} predictions; they must pair up")

  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, file_name)
  with fileio.atomic_writer(path, newline="") as f:
    f.write("index\tprediction\n")
    for i, value in zip(ids, text):
      f.write(f"{i}\t{value}\n")
  return path
