"""The paper-style GLUE dev table from fine-tuning workdirs (`electra-jax glue-report`).

Each workdir is one `electra-jax finetune` job (`WORKDIR/results.json`, one
task, several seeds). Per task the report gives the paper's metric
(`metrics.PAPER_METRIC`: CoLA MCC, STS-B Spearman, accuracy elsewhere, MNLI
matched), its median over seeds, the spread (min–max, population std, number
of seeds), and the GLUE score as the paper computes it: the mean over the
eight tasks of those medians, WNLI left out (`metrics.glue_score`). Values are
×100, as in the paper's tables.

The numbers are recomputed here from each seed's entry in `results.json`,
not read from its `metrics` summary, so the report means the same thing
whichever summary a version of `run_finetuning` wrote:
- by default, the final model of each seed (`seeds[*]["last"]`), which is
  what the official ELECTRA code reports;
- with `dev_selected=True`, each seed's best epoch (`seeds[*]["best"]`),
  chosen on the same dev set and therefore optimistic.

Rows that are shown but not counted in the GLUE score: MNLI mismatched (the
paper averages MNLI matched only), WNLI (the paper leaves it out), and custom
tasks (not GLUE).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from collections.abc import Sequence

from electra_jax import workdir as workdir_lib
from electra_jax.errors import ElectraError
from electra_jax.tasks import glue, metrics

FINAL = "final"
DEV_SELECTED = "dev_selected"
# Which per-seed entry of results.json each selection reads.
_SEED_ENTRY = {FINAL: "last", DEV_SELECTED: "best"}
SELECTION_LABELS = {
  FINAL: "final model of each seed (as the official ELECTRA code reports)",
  DEV_SELECTED: "dev-selected: best epoch of each seed, picked on this same dev set (optimistic)",
}

# Paper order (Clark et al. 2020, Table 1 / 8), then rows outside the score.
_ORDER = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli-m", "mnli-mm", "qnli", "rte", "wnli")
_LABELS = {
  "cola": "CoLA",
  "sst2": "SST-2",
  "mrpc": "MRPC",
  "stsb": "STS-B",
  "qqp": "QQP",
  "mnli-m": "MNLI-m",
  "mnli-mm": "MNLI-mm",
  "qnli": "QNLI",
  "rte": "RTE",
  "wnli": "WNLI",
}
_METRIC_LABELS = {"mcc": "MCC", "spearman": "Spearman", "pearson": "Pearson", "accuracy": "Acc"}
_NOT_COUNTED = {
  "mnli-mm": "the paper averages MNLI matched only",
  "wnli": "the paper leaves WNLI out",
}


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of the report: one task's metric over the seeds of its run(s).

  Attributes:
    task: `metrics.glue_score` key (`"cola"`, `"mnli-m"`, `"mnli-mm"`, ...),
      or the task name of a custom run.
    label: name shown in the table (`"CoLA"`, `"MNLI-m"`, `"custom (mine)"`).
    metric: metric name (`"mcc"`, `"accuracy"`, ...).
    key: the metric's key in the per-seed entries (`"dev_matched/accuracy"`).
    seeds: seed numbers, ascending.
    values: the metric of each seed (fractions, in `seeds` order).
    run_dirs: the workdir(s) the seeds come from.
    selection: `FINAL` or `DEV_SELECTED`.
    counted: whether the row enters the GLUE score.
    note: why it does not (None when it does).
    medians: median over seeds of every metric of the task's split (GLUE
      tasks; unprefixed names), for `metrics.glue_score`.
  """

  task: str
  label: str
  metric: str
  key: str
  seeds: tuple[int, ...]
  values: tuple[float, ...]
  run_dirs: tuple[str, ...]
  selection: str
  counted: bool
  note: str | None = None
  medians: dict[str, float] = dataclasses.field(default_factory=dict)

  @property
  def median(self) -> float:
    """Median over seeds (mean of the middle two for an even count, as numpy)."""
    return statistics.median(self.values)

  @property
  def minimum(self) -> float:
    return min(self.values)

  @property
  def maximum(self) -> float:
    return max(self.values)

  @property
  def std(self) -> float:
    """Population std over seeds, as `results.json`'s own summary."""
    return statistics.pstdev(self.values) if len(self.values) > 1 else 0.0


# --- Reading workdirs ---------------------------------------------------------


def _read_run(run_dir: str) -> dict:
  """The complete fine-tuning `results.json` of `run_dir`; ElectraError otherwise."""
  if not os.path.isdir(run_dir):
    raise ElectraError(f"{run_dir}: no such directory")
  path = os.path.join(run_dir, workdir_lib.RESULTS_FILE)
  if not os.path.isfile(path):
    if any(d.startswith("seed_") for d in os.listdir(run_dir)):
      raise ElectraError(
        f"{run_dir}: fine-tuning not finished (seed directories but no results.json yet);"
        " wait for it or re-run its finetune command"
      )
    raise ElectraError(
      f"{run_dir} is not a fine-tuning workdir (no results.json); pass the --workdir of"
      " an `electra-jax finetune` run"
    )
  try:
    with open(path, encoding="utf-8") as f:
      results = json.load(f)
  except (OSError, ValueError) as e:
    raise ElectraError(f"{path}: not readable as JSON ({e})") from None
  if not isinstance(results, dict):
    raise ElectraError(f"{path}: not a results object")
  if "summary" in results and "seed" in results and "seeds" not in results:
    raise ElectraError(
      f"{run_dir} is one seed of a fine-tuning run; pass its parent directory"
      f" {os.path.dirname(os.path.abspath(run_dir))}"
    )
  if "task" not in results or "seeds" not in results:
    raise ElectraError(
      f"{run_dir} is not a fine-tuning workdir (its results.json has no task and seeds;"
      " a pretraining run?)"
    )
  status = results.get("status")
  if status != "complete":
    where = ""
    if status == "stopped":
      where = f" (stopped by {results.get('stopped')} in seed {results.get('seed')} at step"
      where += f" {results.get('step')})"
    raise ElectraError(
      f"{run_dir}: the {results['task']} fine-tuning is not complete{where}; re-run its"
      " finetune command to finish it, then report"
    )
  if not results["seeds"]:
    raise ElectraError(f"{run_dir}: results.json lists no seeds")
  return results


def _seed_values(run_dir: str, results: dict, key: str, selection: str) -> dict[int, float]:
  """`{seed: metric}` from each seed's final (or best-epoch) dev metrics."""
  entry_name = _SEED_ENTRY[selection]
  out = {}
  for seed, entry in results["seeds"].items():
    evaluation = entry.get(entry_name) if isinstance(entry, dict) else None
    if evaluation is None:
      raise ElectraError(
        f"{run_dir}: seed {seed} has no {entry_name!r} metrics in results.json"
        " (written by an older electra-jax?)"
      )
    if key not in evaluation:
      have = ", ".join(sorted(evaluation)) or "none: the run had no dev data"
      raise ElectraError(f"{run_dir}: seed {seed} has no dev metric {key!r} (has {have})")
    out[int(seed)] = float(evaluation[key])
  return out


def _glue_splits(task: glue.Task) -> list[tuple[str, str, str]]:
  """`(glue_score key, metric, prefix of the per-seed keys)` per dev split of a GLUE task."""
  out = []
  for split in task.dev_splits:
    result_key = task.result_key(split)
    metric = metrics.PAPER_METRIC.get(result_key, task.primary_metric)
    # run_finetuning prefixes metric names by split only when there are several.
    prefix = "" if len(task.dev_splits) == 1 else f"{split}/"
    out.append((result_key, metric, prefix))
  return out


def _split_medians(task, prefix, runs, selection) -> dict[str, float]:
  """Median over seeds of each of the task's metrics (`metrics.glue_score` wants them all)."""
  out = {}
  for name in task.metric_names:
    values = {}
    for run_dir, results in runs:
      values.update(_seed_values(run_dir, results, prefix + name, selection))
    out[name] = statistics.median(values.values())
  return out


def _custom_metric(results: dict) -> str:
  metric = results.get("primary_metric")
  if metric:
    return metric
  for entry in results["seeds"].values():
    names = sorted((entry.get("last") or {}) if isinstance(entry, dict) else {})
    for preferred in ("accuracy", "spearman"):
      if preferred in names:
        return preferred
    if names:
      return names[0]
  return "accuracy"


def _pool(task: str, runs: list[tuple[str, dict]]) -> None:
  """Checks that runs of one task may share a row: same recipe, no seed twice."""
  first_dir, first = runs[0]
  seen = {int(s): first_dir for s in first["seeds"]}
  for run_dir, results in runs[1:]:
    differ = [
      k
      for k in workdir_lib.changed_keys(first.get("config") or {}, results.get("config") or {})
      if workdir_lib.is_math_key(k) and k != "seed"
    ]
    if differ:
      raise ElectraError(
        f"{task}: {first_dir} and {run_dir} were run with different configs"
        f" ({', '.join(differ)}); pool seeds only from runs of the same recipe"
      )
    for seed in results["seeds"]:
      if int(seed) in seen:
        raise ElectraError(
          f"{task}: seed {seed} is in both {seen[int(seed)]} and {run_dir}; pooled runs need"
          " distinct seeds (--config.seed)"
        )
      seen[int(seed)] = run_dir


def collect(
  run_dirs: Sequence[str], *, dev_selected: bool = False, pool_seeds: bool = False
) -> list[Row]:
  """Reads fine-tuning workdirs into report rows, in the paper's task order.

  Args:
    run_dirs: `electra-jax finetune` workdirs, one GLUE task each (custom
      tasks may repeat: each is its own row); a directory named twice counts
      once.
    dev_selected: report each seed's best epoch (`seeds[*]["best"]`) instead
      of its final model (`seeds[*]["last"]`).
    pool_seeds: allow several runs of one GLUE task and pool their seeds into
      one row (the runs must share their recipe and have distinct seeds, e.g.
      seeds run in parallel in separate workdirs).

  Returns:
    Rows: GLUE tasks in the paper's order (MNLI as two rows, matched and
    mismatched), then custom tasks in the order given.

  Raises:
    ElectraError: a directory that is not a complete fine-tuning workdir, a
      GLUE task given twice (without `pool_seeds`, or with pooled runs that
      differ in recipe or repeat a seed), or a seed lacking the metric.
  """
  if not run_dirs:
    raise ElectraError("no workdirs given; pass the --workdir of each fine-tuning run")
  selection = DEV_SELECTED if dev_selected else FINAL
  # The same directory named twice (`runs/* runs/cola`) is one run, not two.
  unique = {}
  for run_dir in run_dirs:
    unique.setdefault(os.path.realpath(run_dir), run_dir)
  run_dirs = list(unique.values())
  by_task: dict[str, list[tuple[str, dict]]] = {}
  custom: list[tuple[str, dict]] = []
  for run_dir in run_dirs:
    results = _read_run(run_dir)
    name = str(results["task"])
    if name in glue.TASKS:
      by_task.setdefault(name, []).append((run_dir, results))
    else:
      custom.append((run_dir, results))

  rows = []
  for name, runs in by_task.items():
    if len(runs) > 1:
      if not pool_seeds:
        raise ElectraError(
          f"{name} appears twice: {runs[0][0]} and {runs[1][0]}; pass one workdir per task,"
          " or --pool-seeds to pool their seeds into one row"
        )
      _pool(name, runs)
    task = glue.TASKS[name]
    for result_key, metric, prefix in _glue_splits(task):
      key = prefix + metric
      values = {}
      for run_dir, results in runs:
        values.update(_seed_values(run_dir, results, key, selection))
      seeds = tuple(sorted(values))
      note = _NOT_COUNTED.get(result_key)
      if note is None and result_key not in metrics.PAPER_METRIC:
        note = "not in the paper's GLUE score"
      rows.append(
        Row(
          task=result_key,
          label=_LABELS.get(result_key, result_key),
          metric=metric,
          key=key,
          seeds=seeds,
          values=tuple(values[s] for s in seeds),
          run_dirs=tuple(d for d, _ in runs),
          selection=selection,
          counted=note is None,
          note=note,
          medians=_split_medians(task, prefix, runs, selection),
        )
      )
  rows.sort(key=lambda r: _ORDER.index(r.task) if r.task in _ORDER else len(_ORDER))

  for run_dir, results in custom:
    name = str(results["task"])
    metric = _custom_metric(results)
    values = _seed_values(run_dir, results, metric, selection)
    seeds = tuple(sorted(values))
    base = os.path.basename(os.path.normpath(run_dir))
    rows.append(
      Row(
        task=name,
        label=f"{name} ({base})",
        metric=metric,
        key=metric,
        seeds=seeds,
        values=tuple(values[s] for s in seeds),
        run_dirs=(run_dir,),
        selection=selection,
        counted=False,
        note="not a GLUE task",
      )
    )
  return rows


# --- The GLUE score -----------------------------------------------------------


def glue_summary(rows: Sequence[Row]) -> dict:
  """The paper's GLUE dev score over the counted rows' medians.

  Returns:
    `{"score": mean of the medians (fraction; None without a counted row),
    "tasks": the tasks averaged, "missing": the paper's tasks absent (the
    score is then over fewer than eight tasks: compare only complete sets)}`.
  """
  counted = {r.task: r.medians or {r.metric: r.median} for r in rows if r.counted}
  if not counted:
    return {"score": None, "tasks": [], "missing": list(metrics.PAPER_METRIC)}
  score = metrics.glue_score(counted)
  return {
    "score": score["paper"],
    "tasks": list(score["paper_tasks"]),
    "missing": [t for t in score["missing"] if t in metrics.PAPER_METRIC],
  }


# --- Output -------------------------------------------------------------------


def _pct(value: float | None) -> str:
  return "–" if value is None else f"{100 * value:.1f}"


def _cells(row: Row) -> list[str]:
  why = "" if row.counted else f" (not in the GLUE score: {row.note})"
  return [
    row.label,
    _METRIC_LABELS.get(row.metric, row.metric),
    _pct(row.median),
    f"{_pct(row.minimum)}–{_pct(row.maximum)}",
    _pct(row.std),
    str(len(row.seeds)),
    ", ".join(row.run_dirs) + why,
  ]


_HEADER = ["task", "metric", "median", "min–max", "std", "seeds", "workdir"]
_RIGHT = {2, 3, 4, 5}  # numeric columns


def _score_lines(rows: Sequence[Row]) -> list[str]:
  summary = glue_summary(rows)
  n = len(summary["tasks"])
  if summary["score"] is None:
    lines = ["GLUE score: – (no GLUE task of the paper's eight among the runs)"]
  else:
    lines = [
      f"GLUE score: {_pct(summary['score'])} (the paper's: mean of the medians, {n} of 8 tasks;"
      " CoLA MCC, STS-B Spearman, MNLI matched, accuracy elsewhere, no WNLI)"
    ]
  if summary["missing"] and summary["score"] is not None:
    missing = ", ".join(_LABELS[t] for t in summary["missing"])
    lines.append(f"missing from the average: {missing} (not comparable with the paper's score)")
  return lines


def format_table(rows: Sequence[Row], *, markdown: bool = False) -> str:
  """The report as text: a title, one line per row, the GLUE score and what it misses.

  Args:
    rows: from `collect`.
    markdown: a GitHub markdown table, plus a one-line table in the paper's
      layout (tasks as columns, GLUE score last) ready to paste into
      `experiments/results/README.md`; otherwise aligned plain text.
  """
  selection = rows[0].selection if rows else FINAL
  title = f"GLUE dev, {SELECTION_LABELS[selection]}: median over seeds, ×100"
  body = [_cells(r) for r in rows]
  lines = []
  if markdown:
    lines += [f"**{title}**", ""]
    lines.append("| " + " | ".join(_HEADER) + " |")
    lines.append(
      "|" + "|".join("---:" if i in _RIGHT else "---" for i in range(len(_HEADER))) + "|"
    )
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]
    lines.append("")
    lines += [f"{line}  " for line in _score_lines(rows)]  # two spaces: a markdown line break
    lines += ["", *_paper_row(rows)]
  else:
    widths = [max(len(c[i]) for c in [_HEADER, *body]) for i in range(len(_HEADER))]
    lines.append(title)
    for cells in [_HEADER, *body]:
      padded = [
        c.rjust(w) if i in _RIGHT else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
      ]
      lines.append("  ".join(padded).rstrip())
    lines += _score_lines(rows)
  return "\n".join(lines)


def _paper_row(rows: Sequence[Row]) -> list[str]:
  """The paper's layout: one markdown row of medians, tasks as columns, GLUE score last."""
  medians = {r.task: r.median for r in rows if r.counted}
  tasks = list(metrics.PAPER_METRIC)
  header = [_LABELS[t].replace("MNLI-m", "MNLI") for t in tasks] + ["GLUE"]
  summary = glue_summary(rows)
  score = _pct(summary["score"])
  if summary["score"] is not None and summary["missing"]:
    score += f" ({len(summary['tasks'])}/{len(tasks)})"  # an incomplete average, visibly
  cells = [_pct(medians.get(t)) for t in tasks] + [score]
  return [
    "| " + " | ".join(header) + " |",
    "|" + "|".join("---:" for _ in header) + "|",
    "| " + " | ".join(cells) + " |",
  ]


def to_json(rows: Sequence[Row]) -> dict:
  """The report as a JSON-ready dict; metric values ×100, as in the table."""
  summary = glue_summary(rows)
  selection = rows[0].selection if rows else FINAL
  return {
    "selection": selection,
    "selection_label": SELECTION_LABELS[selection],
    "scale": 100,
    "rows": [
      {
        "task": r.task,
        "label": r.label,
        "metric": r.metric,
        "key": r.key,
        "median": 100 * r.median,
        "min": 100 * r.minimum,
        "max": 100 * r.maximum,
        "std": 100 * r.std,
        "seeds": list(r.seeds),
        "values": [100 * v for v in r.values],
        "run_dirs": list(r.run_dirs),
        "counted": r.counted,
        "note": r.note,
      }
      for r in rows
    ],
    "glue_score": None if summary["score"] is None else 100 * summary["score"],
    "glue_tasks": summary["tasks"],
    "missing": summary["missing"],
  }
