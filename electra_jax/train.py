"""The one train loop, shared by pretraining and fine-tuning.

The caller says what is trained (`TrainTask`: boxed init, loss, optimizer,
optional init_from params, signature, eval function) and how the loop runs
(`LoopSettings`); `train_loop` does the rest the same way for both:

  * `setup_initial_state`: a checkpoint in `WORKDIR/checkpoints`, else
    `init_params` (e.g. converted weights, `init_from`), else scratch; mesh +
    logical-axis rules → `NamedSharding`s for the whole `TrainState`
    (abstract init with `jax.eval_shape`, then a jitted init with
    `out_shardings`, so no full copy of the params ever sits on one device);
  * one jitted step `(state, batch) -> (state, metrics)` with explicit in/out
    shardings and the state donated; the per-step RNG is
    `fold_in(state.rng, state.step)`, so a resumed run draws the same numbers;
  * after each step, the periodic actions of `hooks.py`: NaN stop, progress
    bar, metrics (`metrics.jsonl`, TensorBoard), evaluation, stop requests
    (SIGTERM/SIGINT), Orbax checkpoints (params, optimizer state, step, RNG,
    iterator position and the `LoopRecord`: evaluation history, metric
    window);
  * `results.json` at the end (status `complete` or `stopped`), returned
    with the final state as `(state, results)`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from electra_jax import checkpointing, faults, fileio, hooks, host_memory, preemption, sharding
from electra_jax import workdir as workdir_lib
from electra_jax.errors import ElectraError
from electra_jax.hooks import TrainingStopped  # noqa: F401 (raised from the loop; callers catch train.TrainingStopped)

log = logging.getLogger(__name__)

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


# Tokens per training micro-batch on XLA:CPU (`make_train_step`), measured in
# experiments/benchmarks/README.md ("Fine-tuning step: micro-batches"): past a
# few thousand tokens per call XLA:CPU's fusions and the caches make every token
# slower, and the temporaries grow with the batch. GPU/TPU run the batch whole.
CPU_MICROBATCH_TOKENS = 1024


def resolve_microbatch_tokens(setting: int) -> int:
  """A `microbatch_tokens` setting made concrete: -1 (auto) is `CPU_MICROBATCH_TOKENS` on
  the CPU backend and 0 (off) on GPU/TPU; other values are kept."""
  if setting >= 0:
    return setting
  return CPU_MICROBATCH_TOKENS if jax.default_backend() == "cpu" else 0


def microbatch_count(rows: int, length: int, microbatch_tokens: int) -> int:
  """How many equal micro-batches `rows` rows of `length` tokens are split into.

  The smallest divisor `k` of `rows` with `rows / k * length <= microbatch_tokens`
  (1 when the batch fits, or when `microbatch_tokens` is 0).
  """
  if microbatch_tokens <= 0:
    return 1
  max_rows = max(1, microbatch_tokens // max(1, length))
  return next(k for k in range(1, rows + 1) if rows % k == 0 and rows // k <= max_rows)


def num_microbatches(batch: dict, microbatch_tokens: int) -> int:
  """`microbatch_count` of a batch, read from its static shapes at trace time: rows are
  the leading axis of every leaf, the length the longest second axis."""
  leaves = jax.tree.leaves(batch)
  if not leaves:
    return 1
  length = max((x.shape[1] for x in leaves if x.ndim >= 2), default=1)
  return microbatch_count(leaves[0].shape[0], length, microbatch_tokens)


def _split_microbatches(batch: dict, k: int) -> dict:
  """`[B, ...]` leaves → `[k, B/k, ...]`; micro-batch j holds rows j, j+k, ... (strided,
  so that with the batch sharded over devices every micro-batch keeps rows on each)."""

  def split(x):
    return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)

  return jax.tree.map(split, batch)


def make_train_step(
  loss_fn: LossFn,
  optimizer: optax.GradientTransformation,
  *,
  microbatch_tokens: int = 0,
  loss_reduction: str = "mean",
) -> Callable:
  """The pure step `(state, batch) -> (state, metrics)` (not yet jitted).

  With `microbatch_tokens` > 0, a batch of more tokens is run as `k` equal
  micro-batches (`num_microbatches`) in a `lax.scan` whose gradients are summed
  (`loss_reduction="sum"`: the loss is a sum over examples) or averaged
  (`"mean"`: a mean over examples), then one optimizer update: the same update
  as the whole batch's to float rounding when dropout is off, with activations
  (and XLA's temporary buffers) of one micro-batch only. Micro-batch `i` draws
  its dropout from `fold_in(step_rng, i)`, so with dropout on the random masks
  differ from the whole batch's (a different, equally valid draw). Only for
  losses that decompose over examples that way: the caller says so.
  Metrics are averaged over the micro-batches.
  """
  if loss_reduction not in ("mean", "sum"):
    raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")

  def value_and_grads(params, batch, rng):
    def objective(p):
      return loss_fn(p, batch, rng, False)

    return jax.value_and_grad(objective, has_aux=True)(params)

  def accumulated(params, batch, rng, k):
    def body(acc, xs):
      i, chunk = xs
      (loss, metrics), grads = value_and_grads(params, chunk, jax.random.fold_in(rng, i))
      return jax.tree.map(jnp.add, acc, grads), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, (losses, metrics) = jax.lax.scan(
      body, zeros, (jnp.arange(k), _split_microbatches(batch, k))
    )
    if loss_reduction == "mean":
      grads = jax.tree.map(lambda g: g / k, grads)
    loss = jnp.sum(losses) if loss_reduction == "sum" else jnp.mean(losses)
    return (loss, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)), grads

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    step_rng = jax.random.fold_in(state.rng, state.step)
    k = num_microbatches(batch, microbatch_tokens)
    if k == 1:
      (loss, metrics), grads = value_and_grads(state.params, batch, step_rng)
    else:
      (loss, metrics), grads = accumulated(state.params, batch, step_rng, k)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics)
    metrics["loss"] = loss
    metrics["grad_norm"] = optax.tree.norm(grads)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  return train_step


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """How the loop runs: length, devices, intervals. Nothing here changes the math but `seed`.

  Attributes:
    total_steps: loop steps of the whole run.
    seed: seeds the train-state RNG (dropout, masking, sampling) and scratch init.
    mesh_shape: e.g. `{"data": -1, "fsdp": 1, "model": 1}`.
    sharding_rules: logical-axis rule preset (`dp`, `fsdp`, `fsdp_tp`).
    log_every: metrics interval in steps.
    checkpoint_every: checkpoint interval (also saved at the end, after every
      evaluation and when stopped).
    keep_checkpoints: how many checkpoints to keep.
    async_checkpoints: save in the background.
    eval_every: evaluation interval (and at the last step) when the task has
      an `eval_fn`.
    tokens_per_batch: for the tokens/s metric.
    progress: show a progress bar.
    stop_after: stop (with a checkpoint) after this many steps of this
      invocation — for tests of interrupted runs.
  """

  total_steps: int
  seed: int = 0
  mesh_shape: dict | None = None
  sharding_rules: str = "dp"
  log_every: int = 50
  checkpoint_every: int = 1000
  keep_checkpoints: int | None = 3
  async_checkpoints: bool = True
  eval_every: int | None = None
  tokens_per_batch: int | None = None
  progress: bool = True
  stop_after: int | None = None


@dataclasses.dataclass(frozen=True)
class TrainTask:
  """What is trained: everything that differs between pretraining and fine-tuning.

  Attributes:
    init_boxed_params: `rng -> params` as returned by `model.init(...)["params"]`
      (still boxed with logical axis names).
    loss_fn: `(params, batch, rng, deterministic) -> (loss, metrics)`.
    optimizer: an optax transformation (see `optim.make_optimizer`).
    init_params: optional `() -> plain params` used instead of scratch init
      when the workdir has no checkpoint (e.g. converted weights).
    signature: what identifies the model; a workdir holding a checkpoint
      written with a different signature is refused.
    learning_rate_fn: `step -> lr` for logging.
    eval_fn: optional `(params, step, history) -> metrics`; `history` maps
      the steps of earlier evaluations (`str(step)`) to their metrics,
      restored from the checkpoint on resume.
    microbatch_tokens: run a larger batch as micro-batches of at most this
      many tokens with summed gradients (`make_train_step`); 0 = off. Only for
      a loss that is a sum or mean over examples (`loss_reduction`).
    loss_reduction: `"mean"` or `"sum"`, how `loss_fn` reduces over examples.
  """

  init_boxed_params: Callable[[jax.Array], PyTree]
  loss_fn: LossFn
  optimizer: optax.GradientTransformation
  init_params: Callable[[], PyTree] | None = None
  signature: dict | None = None
  learning_rate_fn: Callable[[int], float] | None = None
  eval_fn: EvalFn | None = None
  microbatch_tokens: int = 0
  loss_reduction: str = "mean"


def train_loop(
  workdir: str,
  task: TrainTask,
  data_iter: Iterator[dict],
  settings: LoopSettings,
  *,
  extra_results: dict | None = None,
  devices: list | None = None,
) -> tuple[TrainState, dict]:
  """Runs (or resumes) training in `workdir` up to `settings.total_steps`.

  `data_iter` yields host numpy batches (this process's shard); if it has
  `get_state()` / `set_state(state)` its position is checkpointed.
  `extra_results` is merged into `results.json`; `devices` (default: all)
  make the mesh.

  Returns:
    `(state, results)`: the final `TrainState` and the JSON results (also
    written to `WORKDIR/results.json`): `status` is `complete` or `stopped`
    (`stopped` says why: `SIGTERM`, `SIGINT`, `stop_after`, `data
    exhausted`), `eval` holds every evaluation. A workdir whose checkpoint is
    already at `total_steps` is not touched: its stored results come back.
  """
  if settings.total_steps <= 0:
    raise ElectraError(f"total_steps must be positive, got {settings.total_steps}")
  workdir = os.path.abspath(workdir)
  mesh = sharding.make_mesh(settings.mesh_shape or {"data": -1}, devices=devices)
  rules = sharding.logical_axis_rules(settings.sharding_rules)
  with nn.logical_axis_rules(rules):  # outside the mesh: no constraints on abstract values
    init = _Init(settings.seed, task)
    abstract_boxed = init.abstract_state()
  with sharding.mesh_context(mesh), nn.logical_axis_rules(rules):
    ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"),
      save_every=settings.checkpoint_every,
      keep=settings.keep_checkpoints,
      async_save=settings.async_checkpoints,
    )
    latest = ckpt.latest_step()
    _check_resumable(workdir, task, ckpt, latest, settings.total_steps)
    shardings = sharding.param_shardings(abstract_boxed, mesh, rules)
    state, record = setup_initial_state(init, abstract_boxed, shardings, ckpt, latest, data_iter)
    host_memory.release_free_memory()  # what the init's compilation and run freed
    if latest == settings.total_steps:  # finished before: change nothing
      ckpt.close()
      return state, _finished_results(workdir, record, settings.total_steps, extra_results)
    batch_sharding = sharding.batch_sharding(mesh, rules)
    step_fn = _jitted_step(task, shardings, batch_sharding)
    start = int(jax.device_get(state.step))
    ctx = hooks.LoopContext(
      workdir=workdir,
      total_steps=settings.total_steps,
      ckpt=ckpt,
      writer=hooks.MetricsWriter(workdir, resume_step=start),
      record=record,
      data_iter=data_iter,
      start_step=start,
      last_good=latest,
    )
    state, reason = _run_steps(ctx, state, step_fn, batch_sharding, make_hooks(task, settings))
  results = {
    "status": "complete" if reason == "completed" else "stopped",
    "step": int(jax.device_get(state.step)),
    "total_steps": settings.total_steps,
    "stopped": reason,
    "final_metrics": record.logged,
    "median_step_time": statistics.median(ctx.step_times) if ctx.step_times else None,
    "eval": record.evals,
    "devices": [str(d) for d in jax.devices()],
    **(extra_results or {}),
  }
  write_results(workdir, results)
  return state, results


def _jitted_step(task: TrainTask, shardings, batch_sharding) -> Callable:
  """The task's train step, jitted with explicit shardings and the state donated."""
  step = make_train_step(
    task.loss_fn,
    task.optimizer,
    microbatch_tokens=task.microbatch_tokens,
    loss_reduction=task.loss_reduction,
  )
  return jax.jit(
    step,
    in_shardings=(shardings, batch_sharding),
    out_shardings=(shardings, None),
    donate_argnums=(0,),
  )


def make_hooks(task: TrainTask, settings: LoopSettings) -> list[hooks.Hook]:
  """The loop's periodic actions, in the order they run after each step."""
  actions = [
    hooks.NanStop(),
    hooks.LogMetrics(settings.log_every, settings.tokens_per_batch, task.learning_rate_fn),
  ]
  if settings.progress and jax.process_index() == 0:
    actions.insert(1, hooks.ProgressBar(settings.total_steps))
  if task.eval_fn is not None:
    actions.append(hooks.Evaluate(task.eval_fn, settings.eval_every))
  actions += [hooks.StopRequests(settings.stop_after), hooks.Checkpoint(settings.checkpoint_every)]
  return actions


def _run_steps(ctx, state, step_fn, batch_sharding, actions) -> tuple[TrainState, str]:
  """Steps until the last step, a stop request or the end of the data; returns why it ended."""
  step, reason = ctx.start_step, "completed"
  try:
    with preemption.handle_stop_signals():
      while step < ctx.total_steps:
        if preemption.requested():  # before this invocation's first step: nothing new to save
          reason = preemption.requested()
          break
        try:
          batch = sharding.shard_batch(next(ctx.data_iter), batch_sharding)
        except StopIteration:
          reason = "data exhausted"
          break
        if step == ctx.start_step:
          log.info(
            "compiling the train step (step %d of %d includes it)", step + 1, ctx.total_steps
          )
        t0 = time.perf_counter()
        state, metrics = step_fn(state, batch)
        metrics = jax.device_get(metrics)
        seconds = time.perf_counter() - t0
        step += 1
        if step == ctx.start_step + 1:
          log.info("step %d done in %.1f s (compilation included)", step, seconds)
          host_memory.after_first_step()  # the one-off memory of the first step back
        else:
          ctx.step_times.append(seconds)
        faults.point("after_step")
        ctx.evaluated = False
        info = hooks.StepInfo(step, state, metrics, seconds, final=step == ctx.total_steps)
        for action in actions:
          if action.due(info):
            action(ctx, info)
        if ctx.stop:
          reason = ctx.stop
          break
  finally:
    ctx.ckpt.wait()
    for action in actions:
      action.close()
    ctx.writer.close()
    ctx.ckpt.close()
    host_memory.release_free_memory()  # the steps' kept temporaries, before the export
  return state, reason


def _check_resumable(workdir, task, ckpt, latest, total_steps) -> None:
  if task.signature is not None:
    try:
      check_workdir_signature(workdir, task.signature, resuming=latest is not None)
    except ElectraError:
      ckpt.close()
      raise
  if latest is not None and latest > total_steps:
    ckpt.close()
    raise ElectraError(
      f"{ckpt.directory} holds step {latest}, past total_steps {total_steps}: use a new --workdir"
    )


class _Init:
  """How a fresh `TrainState` is made: from scratch, or around given params."""

  def __init__(self, seed: int, task: TrainTask):
    self.task = task
    self.init_rng, self.state_rng = jax.random.split(jax.random.PRNGKey(seed))

  def create_state(self, params) -> TrainState:
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=self.task.optimizer.init(params),
      rng=self.state_rng,
    )

  def abstract_state(self):
    return jax.eval_shape(
      lambda r: self.create_state(self.task.init_boxed_params(r)), self.init_rng
    )


def setup_initial_state(
  init: _Init, abstract_boxed, state_shardings, ckpt, latest, data_iter
) -> tuple[TrainState, hooks.LoopRecord]:
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
    record, data_state = hooks.LoopRecord.from_json(saved)
    if data_state and hasattr(data_iter, "set_state"):
      data_iter.set_state(data_state)
    log.info("resumed from %s at step %d", ckpt.directory, latest)
    return state, record
  if init.task.init_params is not None:
    host_params = init.task.init_params()
    try:
      placed = jax.device_put(host_params, state_shardings.params)
    except ValueError as e:
      raise ElectraError(
        f"init_from params do not match the model: {str(e).splitlines()[0]}"
      ) from None
    state = jax.jit(init.create_state, out_shardings=state_shardings)(placed)
    return state, hooks.LoopRecord()
  state = jax.jit(
    lambda r: init.create_state(strip_boxes(init.task.init_boxed_params(r))),
    out_shardings=state_shardings,
  )(init.init_rng)
  return state, hooks.LoopRecord()


def _finished_results(workdir, record, total_steps, extra_results) -> dict:
  """The stored results of a finished run, written once if a kill came before they were."""
  stored = workdir_lib.read_results(workdir)
  if stored is not None and stored.get("status") == "complete":
    log.info("%s: training already at its last step (%d); nothing to train", workdir, total_steps)
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


def write_results(workdir: str, results: dict) -> None:
  """Writes `WORKDIR/results.json` atomically (process 0 only)."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  fileio.atomic_write_text(
    os.path.join(workdir, "results.json"), json.dumps(results, indent=2, default=str)
  )
