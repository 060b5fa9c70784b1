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

import json
import math
import os
import signal
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

from electra_jax import checkpointing, sharding
from electra_jax.errors import ElectraError

PyTree = Any
LossFn = Callable[[PyTree, dict, jax.Array, bool], tuple[jax.Array, dict]]


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


def check_workdir_signature(workdir: str, signature: dict) -> None:
  """Refuses to resume a workdir written for a different model.

  `signature` describes what must not change across a resume (the model
  config, the objective). It is stored on first use.
  """
  path = _signature_path(workdir)
  normalised = json.loads(json.dumps(signature, sort_keys=True, default=str))
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      stored = json.load(f)
    if stored != normalised:
      diff = sorted(k for k in set(stored) | set(normalised) if stored.get(k) != normalised.get(k))
      raise ElectraError(
        f"workdir {workdir} holds a checkpoint of a different model (differs in: {', '.join(diff)}); "
        "use a new --workdir or the original config"
      )
    return
  if jax.process_index() != 0:  # one writer on a shared workdir (multi-host)
    return
  os.makedirs(workdir, exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(normalised, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


class MetricsWriter:
  """Flat scalar dicts to `metrics.jsonl` and TensorBoard (process 0 only)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled and jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
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


def _progress(total: int, initial: int, enabled: bool):
  if not enabled:
    return None
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, desc="train")


class _SigtermFlag:
  """Turns SIGTERM (TPU VM preemption) into a flag the loop polls."""

  def __init__(self):
    self.raised = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler, no flag
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def use_unrolled_threefry_on_cpu() -> bool:
  """Makes JAX's default PRNG (threefry) fast on CPU; the bits are unchanged.

  On CPU, JAX lowers `threefry2x32` as a rolled 5-iteration `while` loop (to
  keep compile times short). XLA cannot fuse across that loop, so every
  dropout mask and the generator's Gumbel noise goes through full-size
  buffers written and re-read each iteration: ~25 % of an ELECTRA-Small
  pretraining step. The unrolled lowering (JAX's default on the other
  platforms) computes the same bits in one fused elementwise loop, 10-30x
  faster on CPU, at the cost of some compile time.

  Uses a private JAX API; if that moved this is a no-op. Called by
  `make_train_step` (training is where dropout and sampling draw random bits),
  not on import, so merely importing the model changes nothing in JAX.

  Returns:
    Whether the unrolled lowering is now registered for CPU.
  """
  try:
    from jax._src.interpreters import mlir
    from jax._src.random import threefry2x32

    mlir.register_lowering(
      threefry2x32.threefry2x32_p,
      threefry2x32._threefry2x32_lowering_rule,
      platform="cpu",
      inline=False,
    )
  except (ImportError, AttributeError, TypeError):  # JAX internals moved: keep the default
    return False
  return True


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation) -> Callable:
  """The pure step `(state, batch) -> (state, metrics)` (not yet jitted)."""
  use_unrolled_threefry_on_cpu()

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
  eval_fn: Callable[[PyTree, int], dict] | None = None,
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
    checkpoint_every: checkpoint interval in steps (and always at the end).
    keep_checkpoints: how many checkpoints to keep.
    async_checkpoints: save in the background.
    init_params: optional `() -> plain params` used instead of scratch init
      when the workdir has no checkpoint (e.g. converted weights).
    signature: what identifies the model; a workdir written with a different
      signature is refused.
    tokens_per_batch: for the tokens/s metric.
    learning_rate_fn: `step -> lr` for logging.
    eval_fn: optional `(params, step) -> metrics` run every `eval_every` steps
      and at the end.
    eval_every: evaluation interval in steps.
    extra_results: merged into `results.json`.
    progress: show a progress bar.
    stop_after: stop (with a checkpoint) after this many steps of this
      invocation — for tests of interrupted runs.
    devices: devices for the mesh (default: all).

  Returns:
    The final results dict (also written to `WORKDIR/results.json`).
  """
  if total_steps <= 0:
    raise ElectraError(f"total_steps must be positive, got {total_steps}")
  workdir = os.path.abspath(workdir)
  if signature is not None:
    check_workdir_signature(workdir, signature)

  mesh = sharding.make_mesh(mesh_shape or {"data": -1}, devices=devices)
  rules = sharding.logical_axis_rules(sharding_rules)

  def create_state(rng, params):
    return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), rng=rng
    )

  base_rng = jax.random.PRNGKey(seed)
  init_rng, state_rng = jax.random.split(base_rng)

  # Shapes and logical names first, outside the mesh context: Flax would
  # otherwise apply sharding constraints to abstract values.
  with nn.logical_axis_rules(rules):
    abstract_boxed = jax.eval_shape(
      lambda r: create_state(state_rng, init_boxed_params(r)), init_rng
    )
  with sharding.mesh_context(mesh), nn.logical_axis_rules(rules):
    state_shardings = sharding.param_shardings(abstract_boxed, mesh, rules)
    abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      strip_boxes(abstract_boxed),
      state_shardings,
    )
    batch_sharding = sharding.batch_sharding(mesh, rules)

    ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"),
      save_every=checkpoint_every,
      keep=keep_checkpoints,
      async_save=async_checkpoints,
    )
    latest = ckpt.latest_step()
    if latest is not None:
      state, data_state = ckpt.restore(latest, abstract_state)
      if data_state and hasattr(data_iter, "set_state"):
        data_iter.set_state(data_state)
      print(f"resumed from {ckpt.directory} at step {latest}", flush=True)
    elif init_params is not None:
      host_params = init_params()
      param_shardings = state_shardings.params
      try:
        placed = jax.device_put(host_params, param_shardings)
      except ValueError as e:
        raise ElectraError(
          f"init_from params do not match the model: {str(e).splitlines()[0]}"
        ) from None
      state = jax.jit(lambda p: create_state(state_rng, p), out_shardings=state_shardings)(placed)
    else:
      state = jax.jit(
        lambda r: create_state(state_rng, strip_boxes(init_boxed_params(r))),
        out_shardings=state_shardings,
      )(init_rng)

    step_fn = jax.jit(
      make_train_step(loss_fn, optimizer),
      in_shardings=(state_shardings, batch_sharding),
      out_shardings=(state_shardings, None),
      donate_argnums=(0,),
    )

    start = int(jax.device_get(state.step))
    writer = MetricsWriter(workdir)
    bar = _progress(total_steps, start, progress and jax.process_index() == 0)
    last_good = ckpt.latest_step()
    window: dict[str, list[float]] = {}
    step_times: list[float] = []
    last_logged: dict[str, float] = {}
    eval_results: dict[str, Any] = {}
    steps_this_run = 0
    stopped_reason = "completed"
    step = start
    try:
      with _SigtermFlag() as sigterm:
        while step < total_steps:
          try:
            host_batch = next(data_iter)
          except StopIteration:
            stopped_reason = "data exhausted"
            break
          batch = sharding.shard_batch(host_batch, batch_sharding)
          t0 = time.perf_counter()
          state, metrics = step_fn(state, batch)
          metrics = jax.device_get(metrics)
          dt = time.perf_counter() - t0
          step += 1
          steps_this_run += 1
          loss = float(metrics["loss"])
          if not math.isfinite(loss):
            where = (
              f"step {last_good} in {ckpt.directory}" if last_good is not None else "none saved yet"
            )
            raise TrainingStopped(
              f"non-finite loss ({loss}) at step {step}; last good checkpoint: {where}"
            )
          if steps_this_run > 1:  # the first step of a run includes compilation
            step_times.append(dt)
          for k, v in metrics.items():
            window.setdefault(k, []).append(float(v))
          if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
          final = step == total_steps
          if step % log_every == 0 or final:
            scalars = {k: float(np.mean(v)) for k, v in window.items()}
            recent = step_times[-log_every:] or [dt]
            scalars["step_time"] = statistics.median(recent)
            if tokens_per_batch:
              scalars["tokens_per_sec"] = tokens_per_batch / scalars["step_time"]
            if learning_rate_fn is not None:
              scalars["learning_rate"] = float(learning_rate_fn(step - 1))
            writer.write(step, scalars)
            last_logged = scalars
            window = {}
          if eval_fn is not None and eval_every and (step % eval_every == 0) and not final:
            eval_results[str(step)] = _run_eval(eval_fn, state.params, step, writer)
          interrupted = sigterm.raised or (stop_after is not None and steps_this_run >= stop_after)
          if final or interrupted or ckpt.should_save(step):
            data_state = data_iter.get_state() if hasattr(data_iter, "get_state") else None
            ckpt.save(step, state, data_state, force=True)
            last_good = step
          if interrupted:
            stopped_reason = "SIGTERM" if sigterm.raised else "stop_after"
            break
    finally:
      ckpt.wait()
      if bar is not None:
        bar.close()
    if eval_fn is not None and stopped_reason == "completed":
      eval_results[str(step)] = _run_eval(eval_fn, state.params, step, writer)
    writer.close()
    ckpt.close()

  results = {
    "step": step,
    "total_steps": total_steps,
    "stopped": stopped_reason,
    "final_metrics": last_logged,
    "median_step_time": statistics.median(step_times) if step_times else None,
    "eval": eval_results,
    "devices": [str(d) for d in jax.devices()],
    **(extra_results or {}),
  }
  write_results(workdir, results)
  results["state"] = state
  return results


def write_results(workdir: str, results: dict) -> None:
  """Writes `WORKDIR/results.json` atomically (process 0 only)."""
  if jax.process_index() != 0:
    return
  tmp = os.path.join(workdir, "results.json.tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2, default=str)
  os.replace(tmp, os.path.join(workdir, "results.json"))


def _run_eval(eval_fn, params, step, writer) -> dict:
  metrics = eval_fn(params, step)
  writer.write(step, {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
  return metrics
