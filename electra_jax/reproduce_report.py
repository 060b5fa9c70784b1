"""The report of `electra-jax reproduce cpu`: the markdown table and the PNG plots.

Reads the stage workdirs (pretraining `metrics.jsonl`, fine-tuning
`results.json` through `glue_report.collect`) and writes `out` (markdown) and
`<out without .md>/` (PNGs). Needs matplotlib (`pip install -e .[notebooks]`).
"""

from __future__ import annotations

import json
import os
import statistics

from electra_jax import fileio, glue_report
from electra_jax.errors import ElectraError
from electra_jax.job_setup import SHARED_DATA

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shown_path(path: str) -> str:
  """A path as the report prints it: relative to the checkout, or under `../shared/data/`.

  So that a report does not name the directory of the clone that wrote it.
  """
  full = os.path.abspath(path)
  for root, prefix in ((_REPO, ""), (os.path.abspath(SHARED_DATA), "../shared/data/")):
    if full == root or full.startswith(root + os.sep):
      return prefix + os.path.relpath(full, root)
  return path


# How the default plan (electra_jax/reproduce.py: make_plan, DEFAULT_TASKS,
# ELECTRA_STEPS_PER_HOUR) was sized; shown in every report.
CALIBRATION = """\
Measured on the 2-core VM (AMD EPYC, Zen 5) on 2026-12-02 with nothing else running (load average 1–2):

| what (hidden 128 × 4 layers, batch 32 × 128) | measured |
|---|---:|
| ELECTRA step (generator 32 wide) | 0.39–0.48 s |
| MLM step (the same encoder, full-size masked LM) | 0.38–0.41 s |
| compiling one pretraining step | 2–15 s (persistent compile cache: the lower end) |
| ELECTRA pretraining, 900 steps, in the full run | 7.1 min |
| MLM pretraining, 972 steps, in the full run | 6.7 min |
| fine-tuning, 15 stages × 3 seeds, in the full run | 26.2 min |
| the whole command from a clean clone | 40.2 min |

(An earlier calibration on the same VM under load average 8–14 measured 1.6–5.9 s per pretraining step and
estimated 0.6 s on a quiet machine; the plan below was sized from that estimate, so the default plan uses ~40 of
its 60 minutes. Raising `ELECTRA_STEPS_PER_HOUR` in `electra_jax/reproduce.py` to ~1,500 would spend the rest on
pretraining.) Fine-tuning: 3 initialisations × 3 seeds × ≈ 48k example-passes (length-64 equivalents: SST-2
2,000 × 3 epochs, CoLA 2,000 × 3, MRPC 1,000 × 2 orders × 3 at length 128, STS-B 600 × 2 × 10, RTE 600 × 10 at
length 128), in micro-batches of 1,024 tokens (`microbatch_tokens`). Hidden 128 × 4 layers (half ELECTRA-Small's
width, a third of its depth, its embedding size 128) lets both pretrainings see the ~1.9 M-token corpus about
twice; a smaller one (64 × 2) was measured in experiments/results/README.md 1b/1d not to beat training from
scratch after 300–600 steps.

Learning rate: the first full run used peak LR 5e-4 (the `tiny` preset's, batch 32, 90 warmup steps). Its
discriminator learnt for ~100 steps (step 100: loss 0.35, replaced recall 0.21) and then sat at the base rate from
step 150 to 400 (loss 0.407 = the entropy of the 14.7 % replaced labels, recall 0.006; generator loss 6.9 → 6.5),
the same pattern as the 128-wide collapse in experiments/results/README.md 1d; it was stopped at step 400 and the
default became 2.5e-4 (peak LR halved for the doubled width), for both models. At 2.5e-4 the discriminator
follows the same course (the pretraining curves above; in the run of 2026-12-02 03:19 UTC replaced recall was 0.43
at step 125 and 0.04 from step 325 on), so the stall is not (only) the learning rate."""

# The paper's numbers the run is compared with (Clark et al., 2020, Table 1; GLUE dev).
PAPER = {"electra_small": 79.9, "bert_small": 75.1}


# The three rows of the table: how the fine-tuned encoder was initialised.
INITS = ("electra", "mlm", "scratch")
INIT_LABELS = {"electra": "ELECTRA", "mlm": "MLM (BERT)", "scratch": "scratch (no pretraining)"}


def _metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  rows = []
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      for line in f:
        line = line.strip()
        if line:
          rows.append(json.loads(line))
  return [r for r in rows if "step" in r]


def glue_table(ft_dirs: dict) -> dict:
  """`{init: {"rows": {task: Row}, "average": x}}` from the fine-tuning workdirs (final models).

  The average is the mean of the task medians over the tasks every
  initialisation has (all of them in a complete run), the paper's GLUE score
  restricted to those tasks.
  """
  out = {}
  for init, tasks in ft_dirs.items():
    rows = glue_report.collect(list(tasks.values())) if tasks else []
    out[init] = {"rows": {r.task: r for r in rows}}
  common = set.intersection(*(set(v["rows"]) for v in out.values())) if out else set()
  for v in out.values():
    medians = [v["rows"][t].median for t in sorted(common)]
    v["average"] = statistics.mean(medians) if medians else None
    v["average_tasks"] = sorted(common)
  return out


def _plt():
  try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError as e:
    raise ElectraError("the reproduction's plots need matplotlib: pip install -e '.[plots]'") from e
  return plt


def plot_pretraining(pretrain_dirs: dict, fl: dict, path: str) -> None:
  """Generator/MLM loss and the discriminator's loss/accuracy against pretraining FLOPs."""
  plt = _plt()
  rule = fl["rule"]
  per = {m: fl["per_step"][rule][m]["total"] for m in ("electra", "mlm")}
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  e_rows, m_rows = _metrics(pretrain_dirs["electra"]), _metrics(pretrain_dirs["mlm"])
  ax = axes[0]
  for rows, label, color, m in (
    (m_rows, "MLM model (full size) masked-LM loss", "tab:orange", "mlm"),
    (e_rows, "ELECTRA generator (1/4 width) masked-LM loss", "tab:blue", "electra"),
  ):
    if rows:
      ax.plot(
        [r["step"] * per[m] for r in rows],
        [r["generator_loss"] for r in rows],
        label=label,
        color=color,
      )
  ax.set_xlabel(f"pretraining FLOPs ({rule} counting rules)")
  ax.set_ylabel("masked-LM loss (nats)")
  ax.set_title("Masked-LM loss vs compute")
  ax.legend(fontsize=8)
  ax = axes[1]
  if e_rows:
    x = [r["step"] * per["electra"] for r in e_rows]
    ax.plot(
      x, [r["discriminator_loss"] for r in e_rows], label="discriminator loss", color="tab:blue"
    )
    ax.plot(
      x,
      [r["discriminator_accuracy"] for r in e_rows],
      label="discriminator accuracy",
      color="tab:green",
    )
    ax.plot(
      x,
      [1 - r["replaced_fraction"] for r in e_rows],
      "--",
      label='all-"original" baseline accuracy',
      color="grey",
    )
    if "replaced_recall" in e_rows[0]:
      ax.plot(
        x,
        [r.get("replaced_recall", float("nan")) for r in e_rows],
        label="replaced recall",
        color="tab:red",
        alpha=0.7,
      )
  ax.set_xlabel(f"pretraining FLOPs ({rule} counting rules)")
  ax.set_title("ELECTRA discriminator (replaced-token detection)")
  ax.set_ylim(0, 1.05)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_glue(table: dict, tasks: list[str], labels: dict, path: str) -> None:
  """Per-task bars: the median over seeds, each seed as a dot, min–max as an error bar."""
  plt = _plt()
  inits = list(table)
  colors = {"electra": "tab:blue", "mlm": "tab:orange", "scratch": "tab:grey"}
  fig, ax = plt.subplots(figsize=(max(6, 1.8 * (len(tasks) + 1)), 4))
  width = 0.8 / len(inits)
  columns = tasks + ["average"]
  for k, init in enumerate(inits):
    xs, meds, lo, hi = [], [], [], []
    for j, task in enumerate(columns):
      x = j + (k - (len(inits) - 1) / 2) * width
      if task == "average":
        avg = table[init]["average"]
        if avg is None:
          continue
        xs.append(x)
        meds.append(100 * avg)
        lo.append(0)
        hi.append(0)
        continue
      row = table[init]["rows"].get(task)
      if row is None:
        continue
      values = [100 * v for v in row.values]
      med = statistics.median(values)
      xs.append(x)
      meds.append(med)
      lo.append(med - min(values))
      hi.append(max(values) - med)
      ax.scatter([x] * len(values), values, color="black", s=8, zorder=3)
    ax.bar(
      xs,
      meds,
      width,
      yerr=[lo, hi],
      capsize=3,
      label=labels[init],
      color=colors.get(init),
      alpha=0.85,
    )
  ax.axhline(0, color="black", linewidth=0.5)
  ax.set_xticks(range(len(columns)))
  ax.set_xticklabels([t if t == "average" else glue_report._LABELS.get(t, t) for t in columns])
  ax.set_ylabel("GLUE dev metric × 100")
  ax.set_title("GLUE dev: median over seeds (dots: seeds; whiskers: min–max)", fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _scale_gap(plan, fl: dict, stages: dict) -> list[str]:
  """How far this run is from the paper's scale, and what would close the distance."""
  official = fl["total"]["official"]["electra"]
  tokens = stages.get("data", {}).get("num_tokens")
  corpus = f"{tokens / 1e6:.1f} M tokens" if tokens else "the corpus"
  return [
    "### Scale, and what would close the distance to the paper",
    "",
    f"- Compute: ELECTRA here used {official:.2g} pretraining FLOPs by the official rule, the paper's ELECTRA-Small"
    f" {PAPER_FLOPS['electra_small']:.2g} (BERT-Small {PAPER_FLOPS['bert_small']:.2g}): "
    f"{PAPER_FLOPS['electra_small'] / official:,.0f}× more. The paper's Figure 4 compares models after 1e17+ FLOPs.",
    f"- Corpus: {corpus} here vs ~3.3 B tokens (BooksCorpus + English Wikipedia) in the paper; `--corpus` takes a"
    " bigger one (e.g. OpenWebText, as ELECTRA's own release used).",
    f"- Model: hidden {plan.hidden_size} × {plan.num_layers} layers vs ELECTRA-Small's 256 × 12 (the `--hidden-size`,"
    " `--num-layers`, `--num-heads` flags); with the 30,522-token vocabulary the embedding and output softmax are a"
    " much larger share of a small model's compute, which is why the FLOP match here counts lookups as gathers.",
    "- Fine-tuning: training subsets and few seeds; the dev sets of RTE (277), MRPC (408) and CoLA (1,043) give"
    " seed-to-seed spreads of several points, so gaps below ~2 points are not resolved. Closing: full training sets"
    " (`--train-examples 0`), 5–10 seeds (`--seeds`), which needs an accelerator or many CPU hours.",
    "",
  ]


PAPER_FLOPS = {
  "electra_small": 1.293743798272e18,
  "bert_small": 1.4187399146496e18,
}  # official MODEL_FLOPS


def _invocation_outcome(i: dict) -> str:
  if i.get("report_only"):
    return "this report only (ran nothing)"
  if i.get("stopped"):
    return f"stopped: {i['stopped']}"
  if i.get("seconds"):
    return f"finished in {_minutes(i['seconds'])}"
  return "unfinished when this report was written (still running, or killed)"


def _fmt_flops(x: float) -> str:
  return f"{x:.3g}"


def _minutes(s: float | None) -> str:
  if s is None:
    return "–"
  return f"{s / 60:.1f} min"


def _flops_section(plan, fl: dict) -> list[str]:
  """The pretraining-compute section: FLOPs per step and in total, both counting rules."""
  lines: list[str] = []
  steps = fl["steps"]
  lines += [
    "## Pretraining compute",
    "",
    "Counted analytically with the official `flops_computation.py` rules (`electra_jax/flops.py`, formula in its",
    f"docstring). Steps are matched under the **{fl['rule']}** rule"
    + (
      " (dense one-hot embedding lookups, as the paper counts)."
      if fl["rule"] == "official"
      else " (embedding lookups as free gathers)."
    ),
    "",
    "| model | steps | FLOPs/step (official) | total (official) | FLOPs/step (sparse lookups) | total (sparse) |",
    "|---|---:|---:|---:|---:|---:|",
  ]
  for m, label in (
    ("electra", "ELECTRA (discriminator + generator)"),
    ("mlm", "MLM (one full-size masked LM)"),
  ):
    o, s = fl["per_step"]["official"][m], fl["per_step"]["sparse"][m]
    lines.append(
      f"| {label} | {steps[m]} | {_fmt_flops(o['total'])} | {_fmt_flops(fl['total']['official'][m])} |"
      f" {_fmt_flops(s['total'])} | {_fmt_flops(fl['total']['sparse'][m])} |"
    )
  e_parts = fl["per_step"][fl["rule"]]["electra"]
  lines += [
    "",
    f"ELECTRA's step: discriminator {_fmt_flops(e_parts['discriminator'])} + generator"
    f" {_fmt_flops(e_parts['generator'])} (generator hidden {fl['generator']['hidden_size']},"
    f" {fl['generator']['layers']} layers). Output softmax on {fl['max_predictions']}/{plan.max_seq_length}"
    " positions per sequence.",
    "",
  ]
  return lines


def _setup_section(plan, fl: dict, stages: dict, provenance: dict) -> list[str]:
  """The calibration and setup sections: shapes, corpus passes, fine-tuning subsets."""
  lines: list[str] = []
  steps = fl["steps"]
  lines += [
    "## Choosing the size (calibration)",
    "",
    CALIBRATION,
    "",
    "## Setup",
    "",
    f"- Encoder (ELECTRA's discriminator = the MLM model = the scratch model): hidden {plan.hidden_size},"
    f" {plan.num_layers} layers, {plan.num_heads} heads, FFN {4 * plan.hidden_size}, embedding {plan.embedding_size},"
    f" vocabulary from `{shown_path(plan.tokenizer)}`.",
    f"- ELECTRA's generator: {plan.generator_fraction:g} of the width (paper's Small: 1/4), tied embeddings,"
    " discriminator loss weight 50, mask 15 %.",
    f"- Pretraining: batch {plan.batch_size} × {plan.max_seq_length} tokens, peak LR {plan.learning_rate:g}, 10 % warmup,"
    " linear decay, AdamW (decay 0.01), the `pretrain.py` defaults otherwise; same data order seed for both.",
  ]
  data = stages.get("data", {})
  if data.get("num_tokens"):
    tokens = data["num_tokens"]
    passes = {m: steps[m] * plan.batch_size * plan.max_seq_length / tokens for m in steps}
    lines.append(
      f"- Corpus: {', '.join(f'`{shown_path(c)}`' for c in plan.corpus)}"
      f" → {data.get('num_examples', 0):,} examples, {tokens:,} tokens; ELECTRA sees it {passes['electra']:.1f}×, MLM"
      f" {passes['mlm']:.1f}× (padding included)."
    )
  subsets = ", ".join(
    f"{glue_report._LABELS.get(t, t)} {'all' if n == 0 else f'first {n:,}'} train examples, length {length}"
    for t, n, length in plan.tasks
  )
  lines += [
    f"- Fine-tuning: `glue.py` size={provenance['finetune_size']} with `recipe=official` (lr 3e-4, layer-wise decay 0.8,"
    " batch 32, 3 epochs, 10 for RTE/STS-B, official head/Adam/schedule, MRPC/STS-B both orders); seeds"
    f" {', '.join(str(s) for s in range(plan.seeds))}; full dev sets. Subsets: {subsets}.",
    "",
  ]
  return lines


def _wall_time_section(record: dict, stages: dict, cmds: list[str], provenance: dict) -> list[str]:
  """Wall times per stage and invocation, the machine, the commit and the commands."""
  lines: list[str] = []
  inv = record.get("invocations", [])
  lines += ["## Wall times", "", "| stage | wall time |", "|---|---:|"]
  total = 0.0
  for name, entry in stages.items():
    total += entry.get("seconds", 0.0)
    lines.append(f"| {name} | {_minutes(entry.get('seconds'))} |")
  lines.append(f"| **all stages** | **{_minutes(total)}** |")
  lines += [""]
  for k, i in enumerate(inv):
    lines.append(
      f"- invocation {k + 1}: started {i.get('started')}, load average at start {i.get('load_average')},"
      f" at end {i.get('load_average_end', '–')},"
      f" {_invocation_outcome(i)}" + (f"; commit {i['commit']}" if i.get("commit") else "")
    )
  runs = [i for i in inv if not i.get("report_only")]
  commits = sorted({i["commit"] for i in runs if i.get("commit")})
  lines += [
    "",
    f"Machine: {provenance['machine']}. Commit of the stages: "
    + (
      ", ".join(f"`{c}`" for c in commits)
      if commits
      else f"`{provenance['commit']}` (of this report)"
    )
    + ".",
    "",
    "## Commands",
    "",
    "```bash",
    " ".join(runs[-1].get("argv", [])) if runs else "",
    "```",
    "",
    "runs these stages (each resumable on its own; the same overrides):",
    "",
    "```bash",
    *cmds,
    "```",
    "",
  ]
  return lines


def write(
  plan,
  workdir: str,
  record: dict,
  pretrain_dirs: dict,
  ft_dirs: dict,
  out: str,
  cmds: list[str],
  provenance: dict,
  missing: list[str] | None = None,
) -> dict:
  """Writes the markdown report and its plots; returns the numbers (for reproduce.json).

  `provenance`: `machine`, `commit` (of this source tree) and `finetune_size`.
  """
  table = glue_table(ft_dirs)
  tasks = [t for t, _, _ in plan.tasks]
  plot_dir = os.path.splitext(out)[0]
  os.makedirs(plot_dir, exist_ok=True)
  fl = record["flops"]
  pt_png = os.path.join(plot_dir, "pretraining.png")
  glue_png = os.path.join(plot_dir, "glue.png")
  plot_pretraining(pretrain_dirs, fl, pt_png)
  plot_glue(table, tasks, INIT_LABELS, glue_png)

  stages = record.get("stages", {})
  lines = ["# ELECTRA vs masked-LM pretraining at equal compute, CPU scale", ""]
  if missing:
    lines += [
      "> **PARTIAL RESULTS** (`--report-only` while the run was unfinished): these stages had not"
      f" finished: {', '.join(missing)}. Averages are over the tasks all three rows have.",
      "",
    ]
  lines += [
    "Generated by `electra-jax reproduce cpu` (`electra_jax/reproduce.py`). Every number below was measured by that",
    "command; the paper's are quoted only for comparison.",
    "",
    "## Result: GLUE dev, final model per seed, median over seeds (×100)",
    "",
  ]
  header = ["pretraining"] + [glue_report._LABELS.get(t, t) for t in tasks] + ["average"]
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|---|" + "|".join("---:" for _ in header[1:]) + "|")
  for init in INITS:
    cells = [INIT_LABELS[init]]
    for t in tasks:
      row = table[init]["rows"].get(t)
      if row is None:
        cells.append("–")
      else:
        vals = [100 * v for v in row.values]
        cells.append(f"{100 * row.median:.1f} ({min(vals):.1f}–{max(vals):.1f})")
    avg = table[init]["average"]
    cells.append("–" if avg is None else f"**{100 * avg:.1f}**")
    lines.append("| " + " | ".join(cells) + " |")
  lines += [
    "",
    f"Cells: median over {plan.seeds} seed(s) (min–max in brackets); CoLA Matthews corr., STS-B Spearman, accuracy",
    "elsewhere (the paper's metrics, `electra_jax/tasks/metrics.py`); average = mean of the task medians (the paper's",
    "GLUE score restricted to"
    f" {', '.join(glue_report._LABELS.get(t, t) for t in table['electra']['average_tasks']) or 'no task'})."
    " Each seed's *final* model, as the official code reports.",
    "",
    f"![pretraining curves]({os.path.basename(plot_dir)}/pretraining.png)",
    "",
    f"![GLUE per task]({os.path.basename(plot_dir)}/glue.png)",
    "",
  ]
  e_avg, m_avg, s_avg = (table[i]["average"] for i in INITS)
  if None not in (e_avg, m_avg, s_avg):
    gap = 100 * (e_avg - m_avg)
    lines += [
      "## Compared with the paper",
      "",
      f"- Here: ELECTRA {100 * e_avg:.1f}, MLM {100 * m_avg:.1f} (ELECTRA − MLM = **{gap:+.1f}** points), scratch"
      f" {100 * s_avg:.1f} (ELECTRA − scratch = {100 * (e_avg - s_avg):+.1f}, MLM − scratch = {100 * (m_avg - s_avg):+.1f}).",
      f"- Paper (Table 1, GLUE dev, equal pretraining FLOPs, ~1.4e18 each): ELECTRA-Small {PAPER['electra_small']},"
      f" BERT-Small {PAPER['bert_small']} (**{PAPER['electra_small'] - PAPER['bert_small']:+.1f}**).",
      "",
    ]
  lines += _scale_gap(plan, fl, stages)
  lines += _flops_section(plan, fl)
  lines += _setup_section(plan, fl, stages, provenance)
  lines += _wall_time_section(record, stages, cmds, provenance)
  fileio.atomic_write_text(out, "\n".join(lines))
  return {
    "markdown": out,
    "plots": [pt_png, glue_png],
    "glue": {
      init: {
        "average": table[init]["average"],
        "tasks": {
          t: {"median": r.median, "values": list(r.values)} for t, r in table[init]["rows"].items()
        },
      }
      for init in table
    },
  }
