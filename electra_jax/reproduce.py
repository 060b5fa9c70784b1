"""`electra-jax reproduce cpu`: ELECTRA vs masked-LM pretraining at equal compute, on CPU.

The paper's central claim (Clark et al., 2020, Table 1 / Figure 4: ELECTRA-Small
79.9 vs BERT-Small 75.1 GLUE dev at equal pretraining FLOPs) at a scale that
fits a 2-core machine in about an hour:

  1. data       the corpus (default: 17 Gutenberg books + WikiText-2 valid/test
                from ../shared/data, ~1.9 M tokens) prepared once into
                WORKDIR/data (`electra-jax prepare-pretraining`);
  2. electra    a small ELECTRA (discriminator of the chosen shape, generator
                1/4 of its width) pretrained for `electra_steps`;
  3. mlm        a masked LM of the *same* encoder shape (`objective=mlm`:
                BERT) pretrained for as many steps as give the same FLOPs
                (`electra_jax/flops.py`, the official counting rules);
  4. finetune   each of the two, plus the same architecture from scratch,
                fine-tuned with the official recipe on GLUE tasks (training
                subsets stated in the plan), several seeds;
  5. report     the GLUE table (median over seeds per task + average), FLOPs,
                wall times, the exact commands and commit, and PNG plots.

Each stage is an existing resumable job in its own directory under WORKDIR, so
a re-run with the same WORKDIR skips finished stages and resumes an
interrupted one; the plan (every step count and subset) is a pure function of
the arguments, never of measured speed, so a re-run gives the same table up to
the run-to-run nondeterminism of multithreaded CPU float reductions.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import hashlib
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time

from electra_jax import config as config_lib
from electra_jax import experiment, flops
from electra_jax.errors import ElectraError
from electra_jax.job_setup import DEFAULT_GLUE_DIR, SAMPLE_DATA, SHARED_DATA
from electra_jax.reproduce_report import INIT_LABELS, INITS, shown_path
from electra_jax.tasks import glue

log = logging.getLogger(__name__)

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIGS = os.path.join(_REPO, "experiments", "configs")
DEFAULT_CORPUS = (
  os.path.join(SHARED_DATA, "text", "gutenberg", "*.txt"),
  os.path.join(SHARED_DATA, "text", "wikitext-2-raw", "wiki.valid.raw"),
  os.path.join(SHARED_DATA, "text", "wikitext-2-raw", "wiki.test.raw"),
)
TASK_LABELS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE"}
# Training examples per task (a prefix of train.tsv; 0 = all) and the fine-tuning length.
# Sized so that the five tasks × three initialisations × seeds fit the budget
# (see docs in experiments/results/cpu_reproduction.md); dev sets are always whole.
DEFAULT_TASKS = {  # in run order: the tasks where pretraining shows most come first
  "sst2": (2000, 64),
  "stsb": (600, 64),
  "mrpc": (1000, 128),
  "cola": (2000, 64),
  "rte": (600, 128),
}
# Fine-tuning recipe (glue.py size=small): lr 3e-4, layer-wise decay 0.8, batch 32,
# 3 epochs (10 for RTE/STS-B), official head/optimizer/schedule.
FINETUNE_SIZE = "small"


@dataclasses.dataclass(frozen=True)
class Plan:
  """Everything that decides the numbers of a reproduction; a pure function of the CLI args."""

  corpus: tuple[str, ...]
  tokenizer: str
  hidden_size: int
  num_layers: int
  embedding_size: int
  num_heads: int
  generator_fraction: float
  batch_size: int
  max_seq_length: int
  learning_rate: float
  electra_steps: int
  flops_rule: str  # "official" (dense embedding lookups) or "sparse"
  tasks: tuple[tuple[str, int, int], ...]  # (task, train examples (0 = all), max length)
  seeds: int
  glue_dir: str

  def disc_config(self, vocab_size: int) -> config_lib.ElectraConfig:
    return config_lib.ElectraConfig(
      vocab_size=vocab_size,
      embedding_size=self.embedding_size,
      hidden_size=self.hidden_size,
      num_hidden_layers=self.num_layers,
      num_attention_heads=self.num_heads,
      intermediate_size=4 * self.hidden_size,
    )


def budget_plan(budget_minutes: float) -> dict:
  """Step counts and seeds for a wall-clock budget on a quiet 2-core CPU.

  Deterministic: uses constants measured once (documented in the report),
  never the speed of the current run. Pretraining gets ~45 % of the budget,
  split equally in FLOPs between ELECTRA and MLM; fine-tuning the rest.
  """
  if budget_minutes <= 0:
    raise ElectraError(f"--budget-minutes must be > 0, got {budget_minutes}")
  scale = budget_minutes / 60.0
  return {
    "electra_steps": max(10, int(round(ELECTRA_STEPS_PER_HOUR * scale / 10)) * 10),
    "seeds": 3 if budget_minutes >= 40 else (2 if budget_minutes >= 20 else 1),
    "task_scale": min(1.0, scale),
  }


# Calibration (see experiments/results/cpu_reproduction.md, "Choosing the size"):
# ELECTRA steps (batch 32 × 128, hidden 128 × 4 layers) that fit ~13.5 minutes of a quiet
# 2-core CPU, i.e. ~45 % of 60 minutes shared with the FLOP-matched MLM run.
ELECTRA_STEPS_PER_HOUR = 900


def make_plan(
  *,
  corpus=None,
  tokenizer=None,
  budget_minutes=60.0,
  hidden_size=128,
  num_layers=4,
  embedding_size=128,
  num_heads=2,
  generator_fraction=0.25,
  batch_size=32,
  max_seq_length=128,
  learning_rate=2.5e-4,
  electra_steps=None,
  flops_rule="sparse",
  tasks=None,
  train_examples=None,
  seeds=None,
  glue_dir=None,
) -> Plan:
  """Checks the arguments and builds the `Plan` (explicit values win over the budget's)."""
  budget = budget_plan(budget_minutes)
  for name, value in (
    ("--hidden-size", hidden_size),
    ("--num-layers", num_layers),
    ("--embedding-size", embedding_size),
    ("--num-heads", num_heads),
    ("--batch-size", batch_size),
    ("--max-seq-length", max_seq_length),
  ):
    if value < 1:
      raise ElectraError(f"{name} must be >= 1, got {value}")
  if hidden_size % num_heads:
    raise ElectraError(f"--hidden-size {hidden_size} is not a multiple of --num-heads {num_heads}")
  if not 0 < generator_fraction <= 1:
    raise ElectraError(f"--generator-fraction must be in (0, 1], got {generator_fraction}")
  if flops_rule not in ("official", "sparse"):
    raise ElectraError(f"--flops-rule must be official or sparse, got {flops_rule!r}")
  if electra_steps is not None and electra_steps < 1:
    raise ElectraError(f"--electra-steps must be >= 1, got {electra_steps}")
  if seeds is not None and seeds < 1:
    raise ElectraError(f"--seeds must be >= 1, got {seeds}")
  if train_examples is not None and train_examples < 0:
    raise ElectraError(f"--train-examples must be >= 0, got {train_examples}")
  corpus = tuple(corpus or DEFAULT_CORPUS)
  for pattern in corpus:
    if not glob.glob(pattern):
      raise ElectraError(f"--corpus {pattern}: no such file")
  tokenizer = tokenizer or os.path.join(SAMPLE_DATA, "vocab.txt")
  if not os.path.exists(tokenizer):
    raise ElectraError(f"--tokenizer {tokenizer}: no such file or directory")
  glue_dir = glue_dir or DEFAULT_GLUE_DIR
  if not os.path.isdir(glue_dir):
    raise ElectraError(f"--glue-dir {glue_dir}: not a directory (download_glue_data.py layout)")
  names = tuple(tasks) if tasks else tuple(DEFAULT_TASKS)
  chosen = []
  for t in names:
    if t not in DEFAULT_TASKS:
      raise ElectraError(f"--tasks: unknown task {t!r}; choose from {', '.join(DEFAULT_TASKS)}")
    n, length = DEFAULT_TASKS[t]
    if train_examples is not None:
      n = train_examples
    elif n and budget["task_scale"] < 1:
      n = max(64, int(n * budget["task_scale"]))
    chosen.append((t, n, min(length, max_seq_length) if train_examples is not None else length))
  return Plan(
    corpus=corpus,
    tokenizer=os.path.abspath(tokenizer),
    hidden_size=hidden_size,
    num_layers=num_layers,
    embedding_size=embedding_size,
    num_heads=num_heads,
    generator_fraction=generator_fraction,
    batch_size=batch_size,
    max_seq_length=max_seq_length,
    learning_rate=learning_rate,
    electra_steps=electra_steps if electra_steps is not None else budget["electra_steps"],
    flops_rule=flops_rule,
    tasks=tuple(chosen),
    seeds=seeds if seeds is not None else budget["seeds"],
    glue_dir=os.path.abspath(glue_dir),
  )


# --- FLOPs --------------------------------------------------------------------


def compute_flops(plan: Plan, vocab_size: int) -> dict:
  """Per-step and total pretraining FLOPs of both models; the MLM's steps that match ELECTRA's."""
  from electra_jax import pretraining

  disc = plan.disc_config(vocab_size)
  gen = pretraining.generator_config(disc, plan.generator_fraction)
  p = pretraining.max_predictions_per_seq(0.15, plan.max_seq_length)
  out = {}
  for rule in ("official", "sparse"):
    kw = dict(
      batch_size=plan.batch_size,
      max_seq_length=plan.max_seq_length,
      max_predictions=p,
      sparse_embed_lookup=rule == "sparse",
    )
    out[rule] = {
      "electra": flops.pretraining_flops_per_step("electra", disc, gen, **kw),
      "mlm": flops.pretraining_flops_per_step("mlm", disc, None, **kw),
    }
  per = out[plan.flops_rule]
  mlm_steps = max(1, round(plan.electra_steps * per["electra"]["total"] / per["mlm"]["total"]))
  steps = {"electra": plan.electra_steps, "mlm": mlm_steps}
  return {
    "rule": plan.flops_rule,
    "max_predictions": p,
    "generator": {"hidden_size": gen.hidden_size, "layers": gen.num_hidden_layers},
    "per_step": out,
    "steps": steps,
    "total": {
      rule: {m: out[rule][m]["total"] * steps[m] for m in ("electra", "mlm")} for rule in out
    },
  }


# --- The stages ---------------------------------------------------------------


def _fmt_value(v) -> str:
  return str(v)


def pretrain_overrides(plan: Plan, objective: str, steps: int, data_dir: str) -> dict:
  return {
    "data": data_dir,
    "model.hidden_size": plan.hidden_size,
    "model.num_hidden_layers": plan.num_layers,
    "model.embedding_size": plan.embedding_size,
    "model.num_attention_heads": plan.num_heads,
    "model.intermediate_size": 4 * plan.hidden_size,
    "generator_hidden_size": plan.generator_fraction,
    "batch_size": plan.batch_size,
    "max_seq_length": plan.max_seq_length,
    "learning_rate": plan.learning_rate,
    "total_steps": steps,
    "warmup_steps": max(1, steps // 10),
    "log_every": max(1, min(25, steps // 20)),
    "checkpoint_every": max(1, min(250, steps)),
    "keep_checkpoints": 1,
  }


def finetune_overrides(
  plan: Plan, init: str, task: str, n: int, length: int, pretrain_dirs
) -> dict:
  o = {
    "data_dir": plan.glue_dir,
    "max_train_examples": n,
    "max_seq_length": length,
    "seeds": plan.seeds,
    "write_test_predictions": False,
    "log_every": 25,
  }
  if init == "scratch":
    o.update(
      {
        "tokenizer": plan.tokenizer,
        "model.hidden_size": plan.hidden_size,
        "model.num_hidden_layers": plan.num_layers,
        "model.embedding_size": plan.embedding_size,
        "model.num_attention_heads": plan.num_heads,
        "model.intermediate_size": 4 * plan.hidden_size,
      }
    )
  else:
    sub = "discriminator" if init == "electra" else "generator"
    o["init_from"] = os.path.join(pretrain_dirs[init], "final", sub)
  return o


def _load(name: str, arg: str, overrides: dict):
  return experiment.load_config(
    f"{os.path.join(_CONFIGS, name)}:{arg}",
    [f"--config.{k}={_fmt_value(v)}" for k, v in overrides.items()],
  )


def _command(sub: str, config: str, workdir: str, overrides: dict) -> str:
  parts = ["electra-jax", sub, "--config", config, "--workdir", workdir, "--no-progress"]
  parts += [f"--config.{k}={_fmt_value(v)}" for k, v in overrides.items()]
  return " ".join(shlex.quote(p) for p in parts)


def _sha256(paths) -> str:
  """One fingerprint of files' names (not directories) and contents, whatever order they come in."""

  def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()

  entries = sorted(f"{os.path.basename(p)}\0{digest(p)}" for p in paths)
  return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


def _files(path: str) -> list[str]:
  if os.path.isdir(path):
    return sorted(
      os.path.join(path, n) for n in os.listdir(path) if os.path.isfile(os.path.join(path, n))
    )
  return [path]


def plan_identity(plan: Plan) -> dict:
  """The plan with every path replaced by a content fingerprint (sha256 of the files).

  What decides whether a workdir's stages belong to this plan: the same
  vocabulary, corpus and GLUE files give the same identity from any checkout or
  data location (so `--report-only` and resuming work from a clone), and an
  edited file gives a different one.
  """
  ident = json.loads(json.dumps(dataclasses.asdict(plan)))
  ident["tokenizer"] = _sha256(_files(plan.tokenizer))
  ident["corpus"] = _sha256({os.path.abspath(f) for p in plan.corpus for f in glob.glob(p)})
  files = [glue.split_path(t, plan.glue_dir, s) for t, _, _ in plan.tasks for s in ("train", "dev")]
  ident["glue_dir"] = _sha256([f for f in files if os.path.exists(f)])
  return ident


class _Record:
  """WORKDIR/reproduce.json: the plan and each stage's wall time (kept across re-runs)."""

  def __init__(self, workdir: str, plan: Plan):
    self.path = os.path.join(workdir, "reproduce.json")
    plan_dict = json.loads(json.dumps(dataclasses.asdict(plan)))
    ident = plan_identity(plan)
    if os.path.exists(self.path):
      with open(self.path, encoding="utf-8") as f:
        self.data = json.load(f)
      stored = self.data.get("plan_identity") or self.data.get("plan", {})
      mine = ident if "plan_identity" in self.data else plan_dict
      if stored != mine:
        diff = sorted(k for k in mine if stored.get(k) != mine[k])
        raise ElectraError(
          f"{workdir} holds a reproduction with a different plan ({', '.join(diff)}): "
          "use a new --workdir or the same arguments"
        )
      self.data["plan"] = plan_dict  # this checkout's paths, for the report's commands
    else:
      self.data = {"plan": plan_dict, "plan_identity": ident, "stages": {}}
    self.data.setdefault("invocations", [])

  def save(self):
    tmp = self.path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(self.data, f, indent=2, default=str)
    os.replace(tmp, self.path)

  def done(self, stage: str) -> bool:
    return self.data["stages"].get(stage, {}).get("status") == "complete"

  def finish(self, stage: str, seconds: float, **extra):
    entry = self.data["stages"].setdefault(stage, {"seconds": 0.0})
    entry["seconds"] = round(entry.get("seconds", 0.0) + seconds, 1)
    entry.update(status="complete", **extra)
    self.save()

  def add_time(self, stage: str, seconds: float):
    entry = self.data["stages"].setdefault(stage, {"seconds": 0.0})
    entry["seconds"] = round(entry.get("seconds", 0.0) + seconds, 1)
    self.save()


class Stopped(Exception):
  """A stage was stopped by a signal; its job saved a checkpoint."""

  def __init__(self, reason: str, where: str):
    super().__init__(f"{reason} in {where}")
    self.reason, self.where = reason, where


def _prepare_data(plan: Plan, workdir: str, record: _Record, progress: bool) -> str:
  from electra_jax.input_pipeline import prepare

  data_dir = os.path.join(workdir, "data")
  if record.done("data") and os.path.exists(os.path.join(data_dir, "manifest.json")):
    log.info("[data] already prepared in %s", data_dir)
    return data_dir
  t0 = time.perf_counter()
  log.info("[data] preparing %s", ", ".join(plan.corpus))
  info = prepare.prepare_pretraining_data(
    list(plan.corpus),
    plan.tokenizer,
    plan.max_seq_length,
    data_dir,
    overwrite=os.path.exists(data_dir),
    progress=progress,
  )
  keys = ("num_examples", "num_tokens", "examples", "tokens")
  record.finish("data", time.perf_counter() - t0, **{k: info[k] for k in keys if k in info})
  return data_dir


def _pretrain(plan, workdir, record, name, objective, steps, data_dir, progress):
  from electra_jax import run_pretraining

  wd = os.path.join(workdir, f"pretrain_{name}")
  if record.done(f"pretrain_{name}") and os.path.isdir(os.path.join(wd, "final")):
    log.info("[pretrain %s] finished before, in %s", name, wd)
    return wd
  cfg = _load(
    "pretrain.py",
    f"size=tiny,objective={objective}",
    pretrain_overrides(plan, objective, steps, data_dir),
  )
  log.info("[pretrain %s] %s for %d steps in %s", name, objective, steps, wd)
  t0 = time.perf_counter()
  results = run_pretraining.run(cfg, wd, progress=progress)
  seconds = time.perf_counter() - t0
  if results.get("status") == "stopped":
    record.add_time(f"pretrain_{name}", seconds)
    raise Stopped(results["stopped"], f"pretraining {name} at step {results['step']}")
  if not record.done(f"pretrain_{name}"):
    record.finish(f"pretrain_{name}", seconds, step=results["step"])
  return wd


def _finetune(plan, workdir, record, init, task, n, length, pretrain_dirs, progress):
  from electra_jax import run_finetuning

  wd = os.path.join(workdir, "finetune", init, task)
  stage = f"finetune_{init}_{task}"
  if record.done(stage) and os.path.isdir(wd):
    log.info("[finetune %s %s] finished before, in %s", init, task, wd)
    return wd
  cfg = _load(
    "glue.py",
    f"task={task},size={FINETUNE_SIZE}",
    finetune_overrides(plan, init, task, n, length, pretrain_dirs),
  )
  log.info("[finetune %s %s] %d seed(s) in %s", init, task, plan.seeds, wd)
  t0 = time.perf_counter()
  summary = run_finetuning.run(cfg, wd, progress=progress)
  seconds = time.perf_counter() - t0
  if summary.get("status") == "stopped":
    record.add_time(stage, seconds)
    raise Stopped(summary["stopped"], f"fine-tuning {init}/{task} seed {summary['seed']}")
  if not record.done(stage):
    record.finish(stage, seconds)
  return wd


def _vocab_size(tokenizer_path: str) -> int:
  from electra_jax import tokenization

  return tokenization.load_tokenizer(tokenizer_path).vocab_size


def run(
  plan: Plan,
  workdir: str,
  *,
  out: str,
  argv: list[str] | None = None,
  progress: bool = True,
  report_only: bool = False,
) -> dict:
  """Runs (or resumes) every stage in `workdir` and writes the report to `out`.

  Returns:
    The report's data (also in WORKDIR/reproduce.json); `status` is
    `complete`, or `stopped` with `stopped` / `where` when a signal stopped a
    stage (re-run to resume). With `report_only`, no stage runs: the report
    shows the finished ones (marked PARTIAL if any is missing).
  """
  if report_only and not os.path.exists(os.path.join(workdir, "reproduce.json")):
    raise ElectraError(f"--report-only: {workdir} holds no reproduction (no reproduce.json)")
  os.makedirs(workdir, exist_ok=True)
  record = _Record(workdir, plan)
  record.data["invocations"].append(
    {
      "argv": argv or [],
      "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "load_average": _loadavg(),
      "commit": commit(),
    }
  )
  record.save()
  vocab = _vocab_size(plan.tokenizer)
  fl = compute_flops(plan, vocab)
  record.data["flops"] = fl
  record.save()
  if report_only:
    return _report_only(plan, workdir, record, fl, out)
  t_all = time.perf_counter()
  try:
    data_dir = _prepare_data(plan, workdir, record, progress)
    pretrain_dirs = {
      name: _pretrain(plan, workdir, record, name, name, fl["steps"][name], data_dir, progress)
      for name in ("electra", "mlm")
    }
    ft_dirs = {init: {} for init in INITS}
    for task, n, length in plan.tasks:
      for init in INITS:
        ft_dirs[init][task] = _finetune(
          plan, workdir, record, init, task, n, length, pretrain_dirs, progress
        )
  except Stopped as e:
    record.data["invocations"][-1]["stopped"] = str(e)
    record.save()
    return {"status": "stopped", "stopped": e.reason, "where": e.where}
  record.data["invocations"][-1].update(
    seconds=round(time.perf_counter() - t_all, 1),
    finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    load_average_end=_loadavg(),
  )
  record.save()
  from electra_jax import reproduce_report

  report = reproduce_report.write(
    plan,
    workdir,
    record.data,
    pretrain_dirs,
    ft_dirs,
    out,
    commands(plan, workdir, fl),
    provenance(),
  )
  record.data["report"] = report
  record.data["status"] = "complete"
  record.save()
  return {"status": "complete", **report}


def _report_only(plan: Plan, workdir: str, record: _Record, fl: dict, out: str) -> dict:
  """The report from the stages finished so far (labelled PARTIAL when any is missing)."""
  from electra_jax import reproduce_report

  invocation = record.data["invocations"].pop()  # a report is not a run of the stages
  record.save()
  missing = [s for s in ("data", "pretrain_electra", "pretrain_mlm") if not record.done(s)]
  pretrain_dirs = {m: os.path.join(workdir, f"pretrain_{m}") for m in ("electra", "mlm")}
  ft_dirs = {init: {} for init in INITS}
  for task, _, _ in plan.tasks:
    for init in INITS:
      if record.done(f"finetune_{init}_{task}"):
        ft_dirs[init][task] = os.path.join(workdir, "finetune", init, task)
      else:
        missing.append(f"finetune_{init}_{task}")
  report = reproduce_report.write(
    plan,
    workdir,
    {
      **record.data,
      "invocations": record.data["invocations"] + [{**invocation, "report_only": True}],
    },
    pretrain_dirs,
    ft_dirs,
    out,
    commands(plan, workdir, fl),
    provenance(),
    missing=missing,
  )
  return {"status": "complete", "partial": bool(missing), **report}


def commands(plan: Plan, workdir: str, fl: dict) -> list[str]:
  """The per-stage `electra-jax` commands equivalent to the stages `run` executes."""
  data_dir = os.path.join(workdir, "data")
  cmds = [
    " ".join(
      ["electra-jax prepare-pretraining --input"]
      + [shlex.quote(shown_path(c)) for c in plan.corpus]
      + [
        f"--tokenizer {shlex.quote(shown_path(plan.tokenizer))} --max-seq-length {plan.max_seq_length}"
      ]
      + [f"--out {shlex.quote(data_dir)}"]
    )
  ]
  pretrain_dirs = {}
  for name in ("electra", "mlm"):
    wd = os.path.join(workdir, f"pretrain_{name}")
    pretrain_dirs[name] = wd
    cmds.append(
      _command(
        "pretrain",
        f"experiments/configs/pretrain.py:size=tiny,objective={name}",
        wd,
        pretrain_overrides(plan, name, fl["steps"][name], data_dir),
      )
    )
  for task, n, length in plan.tasks:
    for init in INITS:
      cmds.append(
        _command(
          "finetune",
          f"experiments/configs/glue.py:task={task},size={FINETUNE_SIZE}",
          os.path.join(workdir, "finetune", init, task),
          finetune_overrides(plan, init, task, n, length, pretrain_dirs),
        )
      )
  return cmds


def _loadavg() -> list[float] | None:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def commit() -> str:
  """`git rev-parse --short HEAD` of the source tree (+ "-dirty" with local changes), or "unknown"."""
  try:
    head = subprocess.run(
      ["git", "-C", _REPO, "rev-parse", "--short", "HEAD"],
      capture_output=True,
      text=True,
      check=True,
      timeout=10,
    ).stdout.strip()
    dirty = subprocess.run(
      [
        "git",
        "-C",
        _REPO,
        "status",
        "--porcelain",
        "--untracked-files=no",
        "electra_jax",
        "experiments/configs",
      ],
      capture_output=True,
      text=True,
      timeout=10,
    ).stdout.strip()
    return head + ("-dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def machine() -> str:
  return f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {sys.version.split()[0]}"


def provenance() -> dict:
  """What the report says about where it was made (`reproduce_report.write`)."""
  return {"machine": machine(), "commit": commit(), "finetune_size": FINETUNE_SIZE}


# --- Command line (registered by cli.py) ---------------------------------------


def add_cpu_arguments(p) -> None:
  """The flags of `electra-jax reproduce cpu`."""
  p.add_argument(
    "--workdir", required=True, help="where every stage runs; re-running resumes / skips"
  )
  p.add_argument(
    "--out",
    default=None,
    metavar="FILE.md",
    help="the report (default: experiments/results/cpu_reproduction.md when run from the repo root,"
    " else WORKDIR/cpu_reproduction.md); plots go to FILE/ (FILE.md without .md)",
  )
  p.add_argument(
    "--corpus",
    nargs="+",
    default=None,
    metavar="PATH",
    help="pretraining text files/globs (default: the 17 Gutenberg books + WikiText-2 valid/test in ../shared/data)",
  )
  p.add_argument(
    "--tokenizer",
    default=None,
    help="vocab.txt / tokenizer (default: the bundled BERT uncased vocab)",
  )
  p.add_argument(
    "--budget-minutes", type=float, default=60.0, help="sizes steps, subsets and seeds (default 60)"
  )
  p.add_argument(
    "--electra-steps",
    type=int,
    default=None,
    help="ELECTRA pretraining steps (default: from the budget)",
  )
  p.add_argument("--hidden-size", type=int, default=128)
  p.add_argument("--num-layers", type=int, default=4)
  p.add_argument("--embedding-size", type=int, default=128)
  p.add_argument("--num-heads", type=int, default=2)
  p.add_argument(
    "--generator-fraction", type=float, default=0.25, help="generator width / discriminator's"
  )
  p.add_argument("--batch-size", type=int, default=32, help="pretraining batch (default 32)")
  p.add_argument("--max-seq-length", type=int, default=128, help="pretraining length (default 128)")
  p.add_argument(
    "--learning-rate",
    type=float,
    default=2.5e-4,
    help="pretraining peak LR (default 2.5e-4; 5e-4 left the discriminator at the base rate, see the report)",
  )
  p.add_argument(
    "--flops-rule",
    choices=("official", "sparse"),
    default="sparse",
    help="match FLOPs counting embedding lookups as gathers (sparse, default: what they cost on a CPU)"
    " or as the official script's default dense one-hot matmuls (official)",
  )
  p.add_argument(
    "--tasks", default=None, help=f"comma list from {','.join(DEFAULT_TASKS)} (default: all)"
  )
  p.add_argument(
    "--train-examples",
    type=int,
    default=None,
    help="training examples per task (0 = all; default: the plan's subsets)",
  )
  p.add_argument(
    "--seeds",
    type=int,
    default=None,
    help="fine-tuning seeds per task (default: 3 for a 60-minute budget)",
  )
  p.add_argument("--glue-dir", default=None, help="GLUE data (default: ../shared/data/glue_data)")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  p.add_argument(
    "--report-only",
    action="store_true",
    help="run nothing: write the report from the stages finished so far (PARTIAL if any is missing);"
    " safe while the run is going on",
  )


def run_cli(args, argv: list[str] | None = None) -> int:
  """`electra-jax reproduce cpu`; returns the exit status."""
  plan = make_plan(
    corpus=args.corpus,
    tokenizer=args.tokenizer,
    budget_minutes=args.budget_minutes,
    hidden_size=args.hidden_size,
    num_layers=args.num_layers,
    embedding_size=args.embedding_size,
    num_heads=args.num_heads,
    generator_fraction=args.generator_fraction,
    batch_size=args.batch_size,
    max_seq_length=args.max_seq_length,
    learning_rate=args.learning_rate,
    electra_steps=args.electra_steps,
    flops_rule=args.flops_rule,
    tasks=[t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None,
    train_examples=args.train_examples,
    seeds=args.seeds,
    glue_dir=args.glue_dir,
  )
  out = args.out
  if out is None:
    results = os.path.join("experiments", "results")
    out = (
      os.path.join(results, "cpu_reproduction.md")
      if os.path.isdir(results)
      else os.path.join(args.workdir, "cpu_reproduction.md")
    )
  if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
    raise ElectraError(f"--out {out}: its directory does not exist")
  from electra_jax import preemption

  with preemption.handle_stop_signals():
    result = run(
      plan,
      args.workdir,
      out=out,
      argv=argv,
      progress=not args.no_progress,
      report_only=args.report_only,
    )
  if result["status"] != "complete":
    print(
      f"electra-jax: stopped by {result['stopped']} in {result['where']}; re-run the same command to resume",
      file=sys.stderr,
    )
    return preemption.EXIT_STATUS.get(result["stopped"], 75)
  g = result["glue"]
  for init in INITS:
    avg = g[init]["average"]
    print(f"{INIT_LABELS[init]:>26}: average {'–' if avg is None else f'{100 * avg:.1f}'}")
  print(f"report: {result['markdown']}; plots: {', '.join(result['plots'])}")
  return 0
