"""The train loop's periodic actions: small "every N steps" hooks.

After each step the loop hands a `StepInfo` to its hooks in order (as
levanter's `Trainer.add_hook(fn, every=N)` or clu's `periodic_actions`). Each
hook does one thing:

  `NanStop`       stops on a non-finite loss, naming the last good checkpoint;
  `ProgressBar`   a tqdm bar, started after the first (compiling) step;
  `LogMetrics`    means over the window → `metrics.jsonl` + TensorBoard;
  `Evaluate`      the caller's `eval_fn` every `eval_every` steps and at the end;
  `StopRequests`  SIGTERM / SIGINT (`preemption`) and the tests' `stop_after`;
  `Checkpoint`    Orbax save on the interval, at the end, after an evaluation
                  and when stopping.

Hooks share a `LoopContext` (the checkpointer, the metrics writer, the
`LoopRecord` that is saved with every checkpoint, and the flags one hook sets
for the next: `evaluated`, `stop`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import statistics
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from electra_jax import faults, fileio, host_memory, preemption
from electra_jax.errors import ElectraError

log = logging.getLogger(__name__)


class TrainingStopped(ElectraError):
  """Raised when training stops early on a non-finite loss."""


@dataclasses.dataclass
class LoopRecord:
  """What the loop carries across a resume besides the train state.

  Saved with every checkpoint (as JSON next to the iterator position), so a
  resumed run logs the same averages and knows every earlier evaluation.
  """

  evals: dict[str, dict] = dataclasses.field(default_factory=dict)
  window: dict[str, list[float]] = dataclasses.field(default_factory=dict)
  logged: dict[str, float] = dataclasses.field(default_factory=dict)

  def to_json(self, data_state: dict | None) -> dict:
    return {
      "iterator": data_state or {},
      "eval": self.evals,
      "window": self.window,
      "logged": self.logged,
    }

  @classmethod
  def from_json(cls, saved: dict) -> tuple[LoopRecord, dict]:
    """`(record, iterator state)`; a checkpoint of an older version held only the latter."""
    if "iterator" not in saved:
      return cls(), saved
    record = cls(
      evals=dict(saved.get("eval") or {}),
      window={k: list(v) for k, v in (saved.get("window") or {}).items()},
      logged=dict(saved.get("logged") or {}),
    )
    return record, dict(saved["iterator"] or {})


class MetricsWriter:
  """Flat scalar dicts to `metrics.jsonl` and TensorBoard (process 0 only).

  On resume from step `resume_step`, rows past it (written after that
  checkpoint) are dropped first: the resumed run writes them again, so the
  file ends as an uninterrupted run's would.
  """

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int | None = None):
    self.enabled = enabled and jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if resume_step is not None:
      _truncate_metrics(os.path.join(workdir, "metrics.jsonl"), resume_step)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")  # noqa: SIM115
    try:
      from tensorboardX import SummaryWriter

      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:  # TensorBoard is optional; JSONL always works.
      self._tb = None

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), int(step))
      self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def _truncate_metrics(path: str, step: int) -> None:
  """Drops rows past `step`, and a torn last line (a kill mid-write)."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:
      continue
    if isinstance(row, dict) and int(row.get("step", 0)) <= step:
      kept.append(line if line.endswith("\n") else line + "\n")
  if kept != lines:
    fileio.atomic_write_text(path, "".join(kept))


@dataclasses.dataclass
class LoopContext:
  """State the hooks share during one invocation of the loop."""

  workdir: str
  total_steps: int
  ckpt: Any  # checkpointing.Checkpointer
  writer: MetricsWriter
  record: LoopRecord
  data_iter: Any
  start_step: int
  step_times: list[float] = dataclasses.field(default_factory=list)
  last_good: int | None = None
  evaluated: bool = False
  stop: str | None = None  # why the loop stops after this step


@dataclasses.dataclass
class StepInfo:
  step: int
  state: Any  # train.TrainState
  metrics: dict
  seconds: float
  final: bool


class Hook:
  """Runs `__call__` when `due`: every `every` steps (every step if None) and at the last step."""

  every: int | None = None

  def due(self, info: StepInfo) -> bool:
    return info.final or not self.every or info.step % self.every == 0

  def __call__(self, ctx: LoopContext, info: StepInfo) -> None:
    raise NotImplementedError

  def close(self) -> None:
    pass


class NanStop(Hook):
  def __call__(self, ctx, info):
    loss = float(info.metrics["loss"])
    if not math.isfinite(loss):
      where = (
        f"step {ctx.last_good} in {ctx.ckpt.directory}"
        if ctx.last_good is not None
        else "none saved yet"
      )
      raise TrainingStopped(
        f"non-finite loss ({loss}) at step {info.step}; last good checkpoint: {where}"
      )


class ProgressBar(Hook):
  """Starts after the first step of an invocation, which includes compilation."""

  def __init__(self, total_steps: int):
    self.total_steps = total_steps
    self._bar = None

  def __call__(self, ctx, info):
    if self._bar is None:
      from tqdm.auto import tqdm

      self._bar = tqdm(
        total=self.total_steps, initial=info.step, unit="step", dynamic_ncols=True, desc="train"
      )
      return
    self._bar.update(1)
    self._bar.set_postfix(loss=f"{float(info.metrics['loss']):.4f}", refresh=False)

  def close(self):
    if self._bar is not None:
      self._bar.close()


class LogMetrics(Hook):
  """Accumulates every step's metrics; writes their means every `every` steps."""

  def __init__(self, every: int, tokens_per_batch: int | None, learning_rate_fn):
    self.every, self.tokens_per_batch, self.learning_rate_fn = (
      every,
      tokens_per_batch,
      learning_rate_fn,
    )

  def due(self, info):
    return True  # accumulates every step, writes on `every`

  def __call__(self, ctx, info):
    window = ctx.record.window
    for k, v in info.metrics.items():
      window.setdefault(k, []).append(float(v))
    if info.step % self.every and not info.final:
      return
    scalars = {k: float(np.mean(v)) for k, v in window.items()}
    scalars["step_time"] = statistics.median(ctx.step_times[-self.every :] or [info.seconds])
    if self.tokens_per_batch:
      scalars["tokens_per_sec"] = self.tokens_per_batch / scalars["step_time"]
    if self.learning_rate_fn is not None:
      scalars["learning_rate"] = float(self.learning_rate_fn(info.step - 1))
    ctx.writer.write(info.step, scalars)
    ctx.record.logged = scalars
    ctx.record.window = {}


class Evaluate(Hook):
  """`eval_fn(params, step, history)`; the history of earlier evaluations survives resumes."""

  def __init__(self, eval_fn: Callable[[Any, int, dict], dict], every: int | None):
    self.eval_fn, self.every = eval_fn, every

  def due(self, info):
    return info.final or bool(self.every and info.step % self.every == 0)

  def __call__(self, ctx, info):
    faults.point("eval")
    metrics = self.eval_fn(info.state.params, info.step, dict(ctx.record.evals))
    ctx.writer.write(
      info.step, {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
    )
    ctx.record.evals[str(info.step)] = metrics
    ctx.evaluated = True


class StopRequests(Hook):
  """Stops after this step on SIGTERM / SIGINT, or after `stop_after` steps of this invocation."""

  def __init__(self, stop_after: int | None):
    self.stop_after = stop_after

  def __call__(self, ctx, info):
    requested = _any_process(preemption.requested())
    if requested:
      ctx.stop = requested
    elif self.stop_after is not None and info.step - ctx.start_step >= self.stop_after:
      ctx.stop = "stop_after"


def _any_process(signal_name: str | None) -> str | None:
  """A stop request seen by any process, on all of them (multi-host).

  Hosts of a pod get the preemption signal at slightly different times; all
  must stop after the same step, or the collective checkpoint save would hang.
  """
  if jax.process_count() == 1:
    return signal_name
  from jax.experimental import multihost_utils

  codes = {None: 0, "SIGINT": 1, "SIGTERM": 2}
  code = int(np.max(multihost_utils.process_allgather(np.int32(codes.get(signal_name, 2)))))
  return {v: k for k, v in codes.items()}[code]


class Checkpoint(Hook):
  """Saves on the interval, at the end, after an evaluation (so the history has a checkpoint) and on a stop."""

  def __init__(self, every: int):
    self.every = every

  def due(self, info):
    return True

  def __call__(self, ctx, info):
    if not (info.final or ctx.stop or ctx.evaluated or info.step % self.every == 0):
      return
    data_iter = ctx.data_iter
    data_state = data_iter.get_state() if hasattr(data_iter, "get_state") else None
    # The free memory the steps keep for reuse (host_memory) back first: the save's
    # threads cannot use it, and it would come on top of what they allocate.
    host_memory.release_free_memory()
    ctx.ckpt.save(info.step, info.state, ctx.record.to_json(data_state), force=True)
    faults.point("checkpoint_write")
    ctx.last_good = info.step
