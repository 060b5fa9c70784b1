"""The one train loop, shared by pretraining and fine-tuning.

The caller supplies what differs between the two — how to build the initial
(boxed, logically annotated) params, the loss function, the optimizer and the
data iterator — and `train_loop` does the rest the same way for both:

  * mesh + logical-axis rules → `NamedSharding`s for the whole `TrainState`
    (abstract init with `jax.eval_shape`, then a jitted init with
    `out_shardings`, so no full copy of the params ever sits on one device);
  * one jitted step `(state, batch) -> (state, metrics)` with explicit in/out
    shardings and the state donated; the per-step RNG is
    `fold_in(state.rng, state.step)`, so a resumed run draws the same numbers;
  * resume order: a checkpoint in `WORKDIR/checkpoints`, else `init_params`
    (e.g. converted weights, `init_from`), else scratch;
  * Orbax checkpoints every `checkpoint_every` steps and at the end (params,
    optimizer state, step, RNG, iterator state); SIGTERM saves and exits;
  * a NaN/Inf loss stops the run naming the step and the last good checkpoint;
  * metrics every `log_every` steps to `metrics.jsonl` and TensorBoard, a
    progress bar, and `results.json` at the end.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from electra_jax import checkpointing, faults, fileio, preemption, sharding
from electra_jax import workdir as workdir_lib
from electra_jax.errors import ElectraError

PyTree = Any
LossFn = Callable[[PyTree, dict, jax.Array, bool], tuple[jax.Array, dict]]
EvalFn = Callable[[PyTree, int, dict], dict]


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data position."""

  step: jax.Array
  params: PyTree
  opt_state: PyTree
  rng: jax.Array  # raw uint32[2] key; serialises as a plain array


class TrainingStopped(ElectraError):
  """Raised when training stops early on a non-finite loss."""


def strip_boxes(tree: PyTree) -> PyTree:
  """Removes Flax's logical-axis boxes without applying sharding constraints.

  (`nn.meta.unbox` constrains each value to its sharding under an ambient
  mesh, which fails on abstract values; `out_shardings` place them instead.)
  """
  return jax.tree.map(
    lambda x: x.unbox(apply_constraint=False) if isinstance(x, nn.meta.AxisMetadata) else x,
    tree,
    is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata),
  )


def _signature_path(workdir: str) -> str:
  return os.path.join(workdir, "model_signature.json")


def check_workdir_signature(workdir: str, signature: dict, *, resuming: bool = True) -> None:
  """Refuses to resume a workdir written for a different model.

  `signature` describes what must not change across a resume (the model
  config, the objective). It is compared only when the workdir holds a
  checkpoint (`resuming`); otherwise it is (re)written, so a run that failed
  before its first checkpoint does not block the corrected one.
  """
  path = _signature_path(workdir)
  normalised = json.loads(json.dumps(signature, sort_keys=True, default=str))
  stored = workdir_lib.read_json(path) if os.path.exists(path) else None
  if stored is not None and resuming:
    if stored != normalised:
      diff = sorted(k for k in set(stored) | set(normalised) if stored.get(k) != normalised.get(k))
      raise ElectraError(
        f"workdir {workdir} holds a checkpoint of a different model (differs in: {', '.join(diff)}); "
        "use a new --workdir or the original config"
      )
    return
  if jax.process_index() != 0 or stored == normalised:  # one writer (multi-host); no-op rewrite
    return
  os.makedirs(workdir, exist_ok=True)
  fileio.atomic_write_text(path, json.dumps(normalised, indent=2, sort_keys=True))


class MetricsWriter:
  """Flat scalar dicts to `metrics.jsonl` and TensorBoard (process 0 only)."""

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
  """Drops rows past `step` (written after the checkpoint a resume starts from).

  The resumed run writes them again, so `metrics.jsonl` ends as an
  uninterrupted run's would; a torn last line (a kill mid-write) goes too.
  """
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


def _progress(total: int, initial: int, enabled: bool):
  if not enabled:
    return None
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, desc="train")


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation) -> Callable:
  """The pure step `(state, batch) -> (state, metrics)` (not yet jitted)."""

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    step_rng = jax.random.fold_in(state.rng, state.step)

    def objective(params):
      return loss_fn(params, batch, step_rng, False)

    (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics)
    metrics["loss"] = loss
    metrics["grad_norm"] = optax.tree.norm(grads)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  return train_step


def train_loop(
  *,
  workdir: str,
  total_steps: int,
  init_boxed_params: Callable[[jax.Array], PyTree],
  loss_fn: LossFn,
  optimizer: optax.GradientTransformation,
  data_iter: Iterator[dict],
  seed: int = 0,
  mesh_shape: dict | None = None,
  sharding_rules: str = "dp",
  log_every: int = 50,
  checkpoint_every: int = 1000,
  keep_checkpoints: int | None = 3,
  async_checkpoints: bool = True,
  init_params: Callable[[], PyTree] | None = None,
  signature: dict | None = None,
  tokens_per_batch: int | None = None,
  learning_rate_fn: Callable[[int], float] | None = None,
  eval_fn: EvalFn | None = None,
  eval_every: int | None = None,
  extra_results: dict | None = None,
  progress: bool = True,
  stop_after: int | None = None,
  devices: list | None = None,
) -> dict:
  """Runs (or resumes) training in `workdir` up to `total_steps`.

  Args:
    workdir: output directory: checkpoints, metrics.jsonl, results.json.
    total_steps: number of optimizer steps of the whole run.
    init_boxed_params: `rng -> params` as returned by `model.init(...)["params"]`
      (still boxed with logical axis names); run under `jax.eval_shape` for
      shardings, then under `jit` for scratch init.
    loss_fn: `(params, batch, rng, deterministic) -> (loss, metrics)`.
    optimizer: an optax transformation (see `optim.make_optimizer`).
    data_iter: yields host numpy batches (per-process shard); if it has
      `get_state()` / `set_state(state)` the position is checkpointed.
    seed: seeds the train-state RNG (dropout, masking, sampling).
    mesh_shape: e.g. `{"data": -1, "fsdp": 1, "model": 1}`.
    sharding_rules: logical-axis rule preset (`dp`, `fsdp`, `fsdp_tp`).
    log_every: metrics interval in steps.
    checkpoint_every: checkpoint interval in steps (and always at the end,
      after every evaluation and when stopped).
    keep_checkpoints: how many checkpoints to keep.
    async_checkpoints: save in the background.
    init_params: optional `() -> plain params` used instead of scratch init
      when the workdir has no checkpoint (e.g. converted weights).
    signature: what identifies the model; a workdir holding a checkpoint
      written with a different signature is refused.
    tokens_per_batch: for the tokens/s metric.
    learning_rate_fn: `step -> lr` for logging.
    eval_fn: optional `(params, step, history) -> metrics`, run every
      `eval_every` steps and at the last step; `history` maps the steps of
      the earlier evaluations (`str(step)`) to their metrics, restored from
      the checkpoint on resume, so "best so far" survives interruptions.
    eval_every: evaluation interval in steps.
    extra_results: merged into `results.json`.
    progress: show a progress bar.
    stop_after: stop (with a checkpoint) after this many steps of this
      invocation — for tests of interrupted runs.
    devices: devices for the mesh (default: all).

  Returns:
    The results dict (also written to `WORKDIR/results.json`, without
    `state`): `status` is `complete` or `stopped` (`stopped` says why:
    `SIGTERM`, `SIGINT`, `stop_after`, `data exhausted`), `eval` holds every
    evaluation, `state` the final `TrainState`. A workdir whose checkpoint is
    already at `total_steps` is not touched: its stored results come back.
  """
  if total_steps <= 0:
    raise ElectraError(f"total_steps must be positive, got {total_steps}")
  workdir = os.path.abspath(workdir)
  mesh = sharding.make_mesh(mesh_shape or {"data": -1}, devices=devices)
  rules = sharding.logical_axis_rules(sharding_rules)
  init = _Init(seed, optimizer, init_boxed_params, init_params)
  # Shapes and logical names first, outside the mesh context: Flax would
  # otherwise apply sharding constraints to abstract values.
  with nn.logical_axis_rules(rules):
    abstract_boxed = init.abstract_state()
  with sharding.mesh_context(mesh), nn.logical_axis_rules(rules):
    ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"),
      save_every=checkpoint_every,
      keep=keep_checkpoints,
      async_save=async_checkpoints,
    )
    latest = ckpt.latest_step()
    if signature is not None:
      check_workdir_signature(workdir, signature, resuming=latest is not None)
    if latest is not None and latest > total_steps:
      ckpt.close()
      raise ElectraError(
        f"{ckpt.directory} holds step {latest}, past total_steps {total_steps}: use a new --workdir"
      )
    state_shardings = sharding.param_shardings(abstract_boxed, mesh, rules)
    state, record = setup_initial_state(
      init, abstract_boxed, state_shardings, ckpt, latest, data_iter
    )
    if latest == total_steps:  # finished before: change nothing
      ckpt.close()
      results = _finished_results(workdir, record, total_steps, extra_results)
      results["state"] = state
      return results
    step_fn = jax.jit(
      make_train_step(loss_fn, optimizer),
      in_shardings=(state_shardings, sharding.batch_sharding(mesh, rules)),
      out_shardings=(state_shardings, None),
      donate_argnums=(0,),
    )
    loop = _Loop(
      workdir=workdir,
      total_steps=total_steps,
      ckpt=ckpt,
      record=record,
      batch_sharding=sharding.batch_sharding(mesh, rules),
      log_every=log_every,
      tokens_per_batch=tokens_per_batch,
      learning_rate_fn=learning_rate_fn,
      eval_fn=eval_fn,
      eval_every=eval_every,
      progress=progress and jax.process_index() == 0,
      stop_after=stop_after,
    )
    state, stopped_reason = loop.run(state, step_fn, data_iter)

  results = {
    "status": "complete" if stopped_reason == "completed" else "stopped",
    "step": loop.step,
    "total_steps": total_steps,
    "stopped": stopped_reason,
    "final_metrics": record.logged,
    "median_step_time": statistics.median(loop.step_times) if loop.step_times else None,
    "eval": record.evals,
    "devices": [str(d) for d in jax.devices()],
    **(extra_results or {}),
  }
  write_results(workdir, results)
  results["state"] = state
  return results


@dataclasses.dataclass
class LoopRecord:
  """What the loop carries across a resume besides the `TrainState`.

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


class _Init:
  """How a fresh `TrainState` is made: from scratch, or around given params."""

  def __init__(self, seed, optimizer, init_boxed_params, init_params):
    self.optimizer, self.init_boxed_params, self.init_params = (
      optimizer,
      init_boxed_params,
      init_params,
    )
    self.init_rng, self.state_rng = jax.random.split(jax.random.PRNGKey(seed))

  def create_state(self, params) -> TrainState:
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=self.optimizer.init(params),
      rng=self.state_rng,
    )

  def abstract_state(self):
    return jax.eval_shape(lambda r: self.create_state(self.init_boxed_params(r)), self.init_rng)


def setup_initial_state(
  init: _Init, abstract_boxed, state_shardings, ckpt, latest, data_iter
) -> tuple[TrainState, LoopRecord]:
  """`(state, record)`: restored from step `latest`, else from `init_params`, else scratch.

  `record` holds the evaluation history and the metrics window of the
  restored run (empty for a new one); the iterator is moved to the restored
  position.
  """
  if latest is not None:
    abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      strip_boxes(abstract_boxed),
      state_shardings,
    )
    state, saved = ckpt.restore(latest, abstract_state)
    record, data_state = LoopRecord.from_json(saved)
    if data_state and hasattr(data_iter, "set_state"):
      data_iter.set_state(data_state)
    _say(f"resumed from {ckpt.directory} at step {latest}")
    return state, record
  if init.init_params is not None:
    host_params = init.init_params()
    try:
      placed = jax.device_put(host_params, state_shardings.params)
    except ValueError as e:
      raise ElectraError(
        f"init_from params do not match the model: {str(e).splitlines()[0]}"
      ) from None
    state = jax.jit(init.create_state, out_shardings=state_shardings)(placed)
    return state, LoopRecord()
  state = jax.jit(
    lambda r: init.create_state(strip_boxes(init.init_boxed_params(r))),
    out_shardings=state_shardings,
  )(init.init_rng)
  return state, LoopRecord()


def _finished_results(workdir, record, total_steps, extra_results) -> dict:
  """The stored results of a finished run, written once if a kill came before they were."""
  stored = workdir_lib.read_results(workdir)
  if stored is not None and stored.get("status") == "complete":
    _say(f"{workdir}: training already at its last step ({total_steps}); nothing to train")
    return stored
  results = {
    "status": "complete",
    "step": total_steps,
    "total_steps": total_steps,
    "stopped": "completed",
    "final_metrics": record.logged,
    "median_step_time": None,
    "eval": record.evals,
    "devices": [str(d) for d in jax.devices()],
    **(extra_results or {}),
  }
  write_results(workdir, results)
  return results


def _say(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


class _Loop:
  """The step loop and its periodic actions: log, evaluate, checkpoint, stop."""

  def __init__(self, *, workdir, total_steps, ckpt, record, batch_sharding, log_every,
               tokens_per_batch, learning_rate_fn, eval_fn, eval_every, progress, stop_after):  # fmt: skip
    self.workdir, self.total_steps, self.ckpt, self.record = workdir, total_steps, ckpt, record
    self.batch_sharding, self.log_every = batch_sharding, log_every
    self.tokens_per_batch, self.learning_rate_fn = tokens_per_batch, learning_rate_fn
    self.eval_fn, self.eval_every = eval_fn, eval_every
    self.progress, self.stop_after = progress, stop_after
    self.step_times: list[float] = []
    self.step = 0
    self._first = True
    self.last_good = ckpt.latest_step()

  def run(self, state, step_fn, data_iter) -> tuple[TrainState, str]:
    """Steps until `total_steps`, a stop request, or the end of the data."""
    self.step = start = int(jax.device_get(state.step))
    writer = MetricsWriter(self.workdir, resume_step=start)
    bar = None
    reason = "completed"
    try:
      with preemption.handle_stop_signals():
        while self.step < self.total_steps:
          if preemption.requested():  # before this invocation's first step: nothing new to save
            reason = preemption.requested()
            break
          try:
            host_batch = next(data_iter)
          except StopIteration:
            reason = "data exhausted"
            break
          if self.step == start:
            _say(f"compiling the train step (step {start + 1} of {self.total_steps} includes it)")
          state, metrics, dt = self._one_step(state, step_fn, host_batch)
          if bar is None and self.progress:
            bar = _progress(self.total_steps, self.step, True)
          elif bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(metrics['loss']):.4f}", refresh=False)
          self._log(writer, metrics, dt)
          faults.point("after_step")
          final = self.step == self.total_steps
          evaluated = self._maybe_eval(writer, state, final)
          stop = preemption.requested() or (
            "stop_after"
            if self.stop_after is not None and self.step - start >= self.stop_after
            else None
          )
          if final or stop or evaluated or self.ckpt.should_save(self.step):
            self._save(state, data_iter)
          if stop:
            reason = stop
            break
    finally:
      self.ckpt.wait()
      if bar is not None:
        bar.close()
      writer.close()
      self.ckpt.close()
    return state, reason

  def _one_step(self, state, step_fn, host_batch):
    batch = sharding.shard_batch(host_batch, self.batch_sharding)
    t0 = time.perf_counter()
    state, metrics = step_fn(state, batch)
    metrics = jax.device_get(metrics)
    dt = time.perf_counter() - t0
    self.step += 1
    loss = float(metrics["loss"])
    if not math.isfinite(loss):
      where = (
        f"step {self.last_good} in {self.ckpt.directory}"
        if self.last_good is not None
        else "none saved yet"
      )
      raise TrainingStopped(
        f"non-finite loss ({loss}) at step {self.step}; last good checkpoint: {where}"
      )
    if self._first:  # includes compilation: not a step time
      self._first = False
      _say(f"step {self.step} done in {dt:.1f} s (compilation included)")
    else:
      self.step_times.append(dt)
    return state, metrics, dt

  def _log(self, writer, metrics, dt) -> None:
    window = self.record.window
    for k, v in metrics.items():
      window.setdefault(k, []).append(float(v))
    if self.step % self.log_every and self.step != self.total_steps:
      return
    scalars = {k: float(np.mean(v)) for k, v in window.items()}
    recent = self.step_times[-self.log_every :] or [dt]
    scalars["step_time"] = statistics.median(recent)
    if self.tokens_per_batch:
      scalars["tokens_per_sec"] = self.tokens_per_batch / scalars["step_time"]
    if self.learning_rate_fn is not None:
      scalars["learning_rate"] = float(self.learning_rate_fn(self.step - 1))
    writer.write(self.step, scalars)
    self.record.logged = scalars
    self.record.window = {}

  def _maybe_eval(self, writer, state, final) -> bool:
    if self.eval_fn is None or not (
      final or (self.eval_every and self.step % self.eval_every == 0)
    ):
      return False
    faults.point("eval")
    history = dict(self.record.evals)
    metrics = self.eval_fn(state.params, self.step, history)
    writer.write(
      self.step, {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
    )
    self.record.evals[str(self.step)] = metrics
    return True

  def _save(self, state, data_iter) -> None:
    data_state = data_iter.get_state() if hasattr(data_iter, "get_state") else None
    self.ckpt.save(self.step, state, self.record.to_json(data_state), force=True)
    faults.point("checkpoint_write")
    self.last_good = self.step


def write_results(workdir: str, results: dict) -> None:
  """Writes `WORKDIR/results.json` atomically (process 0 only)."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  fileio.atomic_write_text(
    os.path.join(workdir, "results.json"), json.dumps(results, indent=2, default=str)
  )
