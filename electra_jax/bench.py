"""`electra-jax bench`: time a pretraining step, a fine-tuning step or inference, optionally against HF PyTorch.

Workloads (`--size tiny|small|base|large`, `--batch B --seq L`, synthetic
full-length `[CLS] a [SEP] b [SEP]` batches over the 30,522-token BERT
vocabulary, no padding, made and placed on the device before timing):

  pretrain   the step `electra-jax pretrain` jits for
             `experiments/configs/pretrain.py:size=S`: dynamic masking,
             generator, Gumbel sampling, discriminator, both losses, AdamW
             (clip, weight-decay mask, schedule); the state donated.
  finetune   the step `electra-jax finetune` jits for
             `experiments/configs/glue.py:task=sst2,size=S` with
             `recipe=standard` (HF's classification head, mean cross-entropy,
             bias-corrected AdamW with layer-wise decay, clip 1.0), 2 labels.
  inference  the forward `predict` and the dev-set evaluation run: the same
             classifier, `deterministic=True`, jitted, logits out, in
             cache-sized micro-batches on CPU (`electra_jax.inference`;
             `--microbatch-tokens 0` runs the batch in one call).

Any `--config.KEY=VALUE` overrides that config (e.g.
`--config.compute_dtype=bfloat16`, `--config.scan_layers=True`).

How it is measured: the jitted function is lowered and compiled ahead of time
(`compile_s`: lowering + XLA compilation; the persistent compilation cache is
off unless `--use-compilation-cache`), then `--warmup` untimed calls,
then `--steps` timed calls, each from the call to `jax.block_until_ready` on
its outputs. Reported: median / p10 / p90 step time, tokens/s (B × L /
median), peak RSS of the process that ran the workload (`getrusage`
`ru_maxrss`), the model FLOPs of one step (`electra_jax.bench_flops`, the
formula written out there) next to XLA's count for the compiled program
(`cost_analysis()["flops"]`), the achieved FLOP/s (model FLOPs / median), and
on a GPU/TPU in `bench_flops.PEAK_FLOPS` the MFU (achieved / peak).

`--compare-torch` (needs `torch` and `transformers`, the `test` extra) also
times the same workload in HF `transformers` + PyTorch (`bench_torch.py`) in
the same invocation. Each side runs in its own worker process, so each
one's peak RSS is its own (the parent holds no model), and the sides take turns
in `ROUNDS` rounds of timed steps (JAX, HF, JAX, HF, ...), so both see the
same machine. Each side opens each of its turns with `ROUND_WARMUP` untimed
step (the first step after the other side's turn ran up to 70 % slower, on
both sides). For `pretrain` two HF variants run: the generator's vocabulary
projection at the masked positions only (as electra-jax) and at every position
(`ElectraForMaskedLM` as people call it). `ratio` is electra-jax's speed over
HF's (the masked-only variant for pretrain; `ratio_all_logits` against the
other), paired by round (`paired_ratio`): on the 2-core VM the speed of both
sides drifts by 20-40 % over seconds with nothing else running, and the ratio
of the overall medians (`ratio_of_medians`, also reported) swung by ±20 %
between invocations.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

from electra_jax import bench_flops, host_memory
from electra_jax.bench_setup import (  # noqa: F401  (re-exported for the tests and callers)
  CLS_ID,
  MASK_ID,
  NUM_LABELS,
  PAD_ID,
  ROUND_WARMUP,
  ROUNDS,
  SEP_ID,
  SIZES,
  VOCAB_SIZE,
  WORKLOADS,
  Spec,
  generator_shape,
  load_config,
  max_predictions,
  model_kwargs,
  peak_rss_mib,
  synthetic_batches,
  usable_cores,
  usage,
  usage_lists,
  usage_since,
)
from electra_jax.errors import ElectraError


def model_flops(spec: Spec, cfg) -> dict:
  """The analytic FLOPs of one step (`bench_flops`)."""
  kw = model_kwargs(cfg)
  disc = bench_flops.Encoder(
    hidden=kw["hidden_size"],
    layers=kw["num_hidden_layers"],
    heads=kw["num_attention_heads"],
    intermediate=kw["intermediate_size"],
    embedding=kw["embedding_size"],
  )
  if spec.workload == "pretrain":
    g = generator_shape(cfg)
    gen = dataclasses.replace(
      disc,
      hidden=g["hidden_size"],
      heads=g["num_attention_heads"],
      intermediate=g["intermediate_size"],
    )
    return bench_flops.pretrain_step_flops(
      disc,
      gen,
      batch=spec.batch,
      seq=spec.seq,
      vocab=VOCAB_SIZE,
      positions=max_predictions(cfg, spec.seq),
    )
  return bench_flops.classifier_flops(
    disc, batch=spec.batch, seq=spec.seq, num_labels=NUM_LABELS, train=spec.workload == "finetune"
  )


# -- the JAX side -------------------------------------------------------------------


def xla_flops(compiled) -> float | None:
  """XLA's FLOP count of a compiled program (`cost_analysis()`), or None if unavailable."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001  (not every backend implements it)
    return None
  if isinstance(cost, (list, tuple)):  # older jax: one dict per device program
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


class JaxRunner:
  """Builds the workload's jitted function, compiles it ahead of time, runs timed steps."""

  def __init__(self, spec: Spec):
    import jax

    self.spec = spec
    self.cfg = load_config(spec)
    # A cache hit would make compile_s a load time: off unless asked for.
    jax.config.update("jax_enable_compilation_cache", bool(spec.compilation_cache))
    fn, init, donate = self.build()
    # Inference params arrive as a restored checkpoint does for `predict`: host arrays put
    # on the device, no XLA program run to make them (`_build_inference`). Compiling the
    # random init raised the worker's peak RSS by ~175 MiB (Small), running it op by op by
    # ~140, neither of which `predict` pays. Training steps init jitted, as the train loop.
    make = init if spec.workload == "inference" else jax.jit(init)
    self.carry = make(jax.random.PRNGKey(spec.seed))
    del make, init
    # As the train loop does (host_memory): what the init freed goes back to the OS now,
    # the compilation's after it (the worker installs `trim_after_compiles`), the first
    # step's after that step (`run`).
    host_memory.release_free_memory()
    self.num_params = sum(x.size for x in jax.tree.leaves(_params_of(self.carry)))
    self.batches = [jax.device_put(b) for b in synthetic_batches(spec)]
    self._i = 0
    jitted = jax.jit(fn, donate_argnums=(0,) if donate else ())
    t0 = time.perf_counter()
    self.compiled = jitted.lower(self.carry, self.batches[0]).compile()
    self.compile_s = time.perf_counter() - t0
    self.xla_flops = xla_flops(self.compiled)
    self.donate = donate
    self.last = None
    self.usage: list[tuple] = []  # each step's process CPU s, kernel CPU s, page faults

  def build(self):
    return build(self.spec, self.cfg)

  def run(self, n: int) -> list[float]:
    """Runs `n` steps; returns each one's wall time (s), call to `block_until_ready`."""
    import jax

    times = []
    for _ in range(n):
      batch = self.batches[self._i % len(self.batches)]
      self._i += 1
      u0, t0 = usage(), time.perf_counter()
      carry, out = self.compiled(self.carry, batch)
      jax.block_until_ready(out)
      if self.donate:
        jax.block_until_ready(carry)
      times.append(time.perf_counter() - t0)
      self.usage.append(usage_since(u0))
      self.carry = carry
      self.last = out
      if self._i == 1 and self.spec.workload == "inference":
        # The trim only: `predict` has no train loop, and its temporaries (1,024-token
        # micro-batches) are small enough that glibc keeps them anyway.
        host_memory.release_free_memory()
      elif self._i == 1:
        host_memory.after_first_step()  # as the train loop
    return times

  def final(self) -> dict:
    import jax

    out = {
      "peak_rss_mib": peak_rss_mib(),
      "num_params": int(self.num_params),
      **usage_lists(self.usage[-self.spec.steps :]),  # the timed steps (warm-up first)
    }
    if self.spec.workload != "inference" and self.last is not None:
      out["final_loss"] = float(self.last["loss"])
    stats = _device_memory(jax.devices()[0])
    if stats is not None:
      out["device_peak_mib"] = stats
    return out

  def describe(self) -> dict:
    import flax
    import jax
    import jaxlib

    from electra_jax import cpu_kernels, job_setup

    device = jax.devices()[0]
    return {
      "backend": jax.default_backend(),
      "device_kind": device.device_kind,
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "cpu_kernels": cpu_kernels.enabled(),
      "malloc": host_memory.describe_malloc(),
      # `auto` resolved (bfloat16 on GPU/TPU): the MFU peak depends on it.
      "compute_dtype": job_setup.resolve_compute_dtype(str(self.cfg.compute_dtype)),
    }


def build(spec: Spec, cfg):
  """`(fn(carry, batch) -> (carry, outputs), init(rng) -> carry, donate)` of the workload.

  `carry` is the train state (donated) or, for inference, the params.
  """
  return {
    "pretrain": _build_pretrain,
    "finetune": _build_finetune,
    "inference": _build_inference,
  }[spec.workload](spec, cfg)


def lower_abstract(spec: Spec):
  """The workload's jitted function lowered for abstract inputs: no params made, nothing compiled."""
  import jax

  cfg = load_config(spec)
  fn, init, _ = build(spec, cfg)
  carry = jax.eval_shape(init, jax.random.PRNGKey(0))
  batch = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), synthetic_batches(spec, 1)[0]
  )
  return jax.jit(fn).lower(carry, batch)


def _build_pretrain(spec: Spec, cfg):
  import jax
  import jax.numpy as jnp

  from electra_jax import pretraining, run_pretraining, train
  from electra_jax.config import ElectraConfig

  disc_config = ElectraConfig(**model_kwargs(cfg))
  objective = run_pretraining.make_objective(
    cfg, mask_id=MASK_ID, special_ids=(CLS_ID, SEP_ID, PAD_ID), length=spec.seq
  )
  model = run_pretraining.make_rtd_model(cfg, disc_config, objective)
  optimizer = run_pretraining.make_optimizer(cfg)

  def create_state(rng):
    init_rng, state_rng = jax.random.split(rng)
    inputs = pretraining.init_inputs(1, spec.seq, objective.max_predictions)
    params = train.strip_boxes(model.init(init_rng, *inputs)["params"])
    return train.TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=optimizer.init(params),
      rng=state_rng,
    )

  step = train.make_train_step(pretraining.make_loss_fn(model, objective), optimizer)

  def fn(state, batch):
    batch = {k: batch[k] for k in ("input_ids", "input_mask", "segment_ids")}
    return step(state, batch)

  return fn, create_state, True


def _classifier(cfg):
  from electra_jax import job_setup
  from electra_jax import model as model_lib
  from electra_jax.config import ElectraConfig

  config = ElectraConfig(**model_kwargs(cfg))
  dtype = job_setup.compute_dtype(str(cfg.compute_dtype))
  return model_lib.build_model(
    config, "sequence_classification", dtype=dtype, num_labels=NUM_LABELS
  )


def _build_finetune(spec: Spec, cfg):
  import jax
  import jax.numpy as jnp
  import optax

  from electra_jax import recipes, run_finetuning, train

  model = _classifier(cfg)
  optimizer = run_finetuning.make_optimizer(
    cfg, recipes.resolve(cfg), total_steps=10_000, num_layers=model.config.num_hidden_layers
  )

  def create_state(rng):
    init_rng, state_rng = jax.random.split(rng)
    boxed = model.init(init_rng, jnp.zeros((1, spec.seq), jnp.int32))["params"]
    params = train.strip_boxes(boxed)
    return train.TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=optimizer.init(params),
      rng=state_rng,
    )

  def loss_fn(params, batch, rng, deterministic):
    logits = model.apply(
      {"params": params},
      batch["input_ids"],
      attention_mask=batch["input_mask"],
      token_type_ids=batch["segment_ids"],
      deterministic=deterministic,
      rngs={"dropout": rng},
    )
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]))
    return loss, {}

  step = train.make_train_step(
    loss_fn, optimizer, microbatch_tokens=_microbatch_tokens(spec), loss_reduction="mean"
  )
  return step, create_state, True


def _build_inference(spec: Spec, cfg):
  import jax
  import jax.numpy as jnp
  import numpy as np

  from electra_jax import inference, train

  model = _classifier(cfg)

  def init(rng):
    """Random params made on the host (numpy), then put on the device, as a restore."""
    shapes = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, spec.seq), jnp.int32)), rng)
    host = np.random.default_rng(spec.seed)

    def leaf(path, a):
      name = jax.tree_util.keystr(path[-1:])
      if "scale" in name:  # LayerNorm
        return np.ones(a.shape, a.dtype)
      if a.ndim == 1:  # biases
        return np.zeros(a.shape, a.dtype)
      return (host.standard_normal(a.shape) * 0.02).astype(a.dtype)  # initializer_range

    params = train.strip_boxes(shapes["params"])
    return jax.device_put(jax.tree_util.tree_map_with_path(leaf, params))

  def apply(params, ids, mask, types):
    return model.apply(
      {"params": params}, ids, attention_mask=mask, token_type_ids=types, deterministic=True
    )

  # What `predict` and the dev-set evaluation run: cache-sized micro-batches on CPU.
  forward = inference.microbatched(apply, _microbatch_tokens(spec))

  def fn(params, batch):
    logits = forward(params, batch["input_ids"], batch["input_mask"], batch["segment_ids"])
    return params, logits

  return fn, init, False


def _microbatch_tokens(spec: Spec) -> int | None:
  """Tokens per micro-batch of the workload as `predict` / the fine-tuning step run it;
  None for pretraining (whose step is not micro-batched)."""
  from electra_jax import inference, train

  if spec.workload == "pretrain":
    return None
  if spec.workload == "inference" and spec.microbatch_tokens < 0:
    return inference.CHUNK_TOKENS
  return train.resolve_microbatch_tokens(spec.microbatch_tokens)


def _params_of(carry):
  return getattr(carry, "params", carry)


def _device_memory(device) -> float | None:
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001
    return None
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 2**20


# -- worker processes (--compare-torch) ----------------------------------------------


def _worker_main(side: str, spec_json: str) -> int:
  """A worker: builds its side, says `ready`, then answers `run N` / `done` lines on stdin."""
  spec = Spec(**{**json.loads(spec_json), "overrides": tuple(json.loads(spec_json)["overrides"])})
  if side == "jax":
    host_memory.reuse_freed_memory()  # as the CLI, before JAX starts its CPU client
    from electra_jax import cpu_kernels, xla_env

    xla_env.set_default_xla_flags()
    cpu_kernels.enable()
    host_memory.trim_after_compiles()  # as the CLI
    runner = JaxRunner(spec)
    ready = {"compile_s": runner.compile_s, "xla_flops": runner.xla_flops, **runner.describe()}
  else:
    from electra_jax import bench_torch

    runner = bench_torch.TorchRunner(spec, load_config(spec), variant=side.split(":", 1)[1])
    ready = runner.describe()
  out = sys.stdout
  sys.stdout = sys.stderr  # nothing else may write on the protocol channel
  _send(out, {"ready": ready})
  for line in sys.stdin:
    cmd = line.split()
    if cmd and cmd[0] == "run":
      _send(out, {"times": runner.run(int(cmd[1]))})
    elif cmd and cmd[0] == "done":
      _send(out, {"final": runner.final()})
      return 0
  return 1


def _send(stream, obj) -> None:
  stream.write(json.dumps(obj) + "\n")
  stream.flush()


class _Worker:
  def __init__(self, side: str, spec: Spec):
    env = dict(os.environ)
    # The package this process runs from, for a worker started in any directory.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    self.side = side
    self.proc = subprocess.Popen(
      [
        sys.executable,
        "-m",
        "electra_jax.bench",
        "--worker",
        side,
        json.dumps(dataclasses.asdict(spec)),
      ],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=env,
    )

  def ask(self, command: str | None = None) -> dict:
    if command is not None:
      self.proc.stdin.write(command + "\n")
      self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      err = self.proc.stderr.read().strip().splitlines()
      self.proc.wait()
      last = err[-1] if err else f"exit status {self.proc.returncode}"
      raise ElectraError(f"the {self.side} benchmark worker failed: {last}")
    return json.loads(line)

  def close(self) -> None:
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()


# -- orchestration -------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
  """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
  ordered = sorted(values)
  pos = (len(ordered) - 1) * q / 100
  lo = int(pos)
  hi = min(lo + 1, len(ordered) - 1)
  return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _timing(times: list[float], tokens: int, side: dict | None = None) -> dict:
  median = statistics.median(times)
  out = {
    "step_ms_median": median * 1e3,
    "step_ms_p10": percentile(times, 10) * 1e3,
    "step_ms_p90": percentile(times, 90) * 1e3,
    "tokens_per_s": tokens / median,
    "timed_steps": len(times),
  }
  side = side or {}
  if side.get("cpu_times"):
    # CPU time of the process per step (all threads): less sensitive than the
    # wall time to other jobs on a shared machine.
    cpu = statistics.median(side["cpu_times"])
    out.update(cpu_ms_median=cpu * 1e3, tokens_per_cpu_s=tokens / cpu if cpu > 0 else None)
  if side.get("sys_times"):
    # Of it, the kernel's: mostly page faults, when the allocator hands a step fresh pages.
    out["sys_cpu_ms_median"] = statistics.median(side["sys_times"]) * 1e3
  if side.get("page_faults"):
    out["page_faults_median"] = statistics.median(side["page_faults"])
  return out


def _chunks(steps: int, rounds: int) -> list[int]:
  rounds = max(1, min(rounds, steps))
  base, extra = divmod(steps, rounds)
  return [base + (1 if r < extra else 0) for r in range(rounds)]


def run(spec: Spec, compare_torch: bool = False) -> dict:
  """Runs the benchmark; returns the report (the `--json` object)."""
  spec.check()
  cfg = load_config(spec)  # config errors surface here, before anything is built
  flops = model_flops(spec, cfg)
  load_before = _load_average()
  if compare_torch:
    side = _compare(spec, cfg)
  else:
    runner = JaxRunner(spec)
    runner.run(spec.warmup)
    times = runner.run(spec.steps)
    side = {
      "jax": {
        "times": times,
        "compile_s": runner.compile_s,
        "xla_flops": runner.xla_flops,
        **runner.final(),
        "describe": runner.describe(),
      }
    }
  return _report(spec, cfg, flops, side, load_before, _load_average())


def _compare(spec: Spec, cfg) -> dict:
  try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
  except ImportError as e:
    raise ElectraError(
      f"--compare-torch needs torch and transformers ({e.name} is missing): "
      "pip install 'electra-jax[test]'"
    ) from None
  variants = ["masked", "all"] if spec.workload == "pretrain" else ["default"]
  workers = {"jax": _Worker("jax", spec)}
  for v in variants:
    workers[f"torch:{v}"] = _Worker(f"torch:{v}", spec)
  try:
    ready = {name: w.ask()["ready"] for name, w in workers.items()}
    for w in workers.values():
      if spec.warmup:
        w.ask(f"run {spec.warmup}")
    times: dict[str, list[float]] = {name: [] for name in workers}
    rounds: dict[str, list[float]] = {name: [] for name in workers}  # each turn's median
    for n in _chunks(spec.steps, ROUNDS):
      for name, w in workers.items():  # JAX, HF masked, HF all, JAX, ...
        w.ask(f"run {ROUND_WARMUP}")  # untimed: back in cache after the other side's turn
        turn = w.ask(f"run {n}")["times"]
        times[name] += turn
        rounds[name].append(statistics.median(turn))
    finals = {name: w.ask("done")["final"] for name, w in workers.items()}
  finally:
    for w in workers.values():
      w.close()
  out = {}
  for name in workers:
    info = dict(ready[name])
    entry = {"times": times[name], "round_medians": rounds[name], **finals[name]}
    if name == "jax":
      entry.update(compile_s=info.pop("compile_s"), xla_flops=info.pop("xla_flops"), describe=info)
    else:
      entry["describe"] = info
    out[name] = entry
  return out


def paired_ratio(jax_side: dict, torch_side: dict) -> float:
  """Speed ratio electra-jax / HF: the median over rounds of the two turns' ratio.

  Each round pairs adjacent turns of the two sides, so a machine that slows
  down for a few seconds (the 2-core VM does, by 20-40 %, with nothing else
  running) slows both turns of a pair; the median over the pairs is then much
  steadier than the ratio of the two overall medians (`ratio_of_medians`).
  """
  pairs = zip(jax_side["round_medians"], torch_side["round_medians"], strict=True)
  return statistics.median(t / j for j, t in pairs)


def _report(spec: Spec, cfg, flops: dict, side: dict, load_before, load_after) -> dict:
  jax_side = side["jax"]
  describe = jax_side["describe"]
  timing = _timing(jax_side["times"], spec.tokens, jax_side)
  achieved = flops["total"] / (timing["step_ms_median"] / 1e3)
  peak = bench_flops.peak_flops(describe["device_kind"], describe["compute_dtype"])
  kw = model_kwargs(cfg)
  report: dict[str, Any] = {
    "workload": spec.workload,
    "size": spec.size,
    "batch": spec.batch,
    "seq": spec.seq,
    "overrides": list(spec.overrides),
    **({"microbatch_tokens": _microbatch_tokens(spec)} if spec.workload != "pretrain" else {}),
    **timing,
    "compile_s": jax_side["compile_s"],
    "peak_rss_mib": jax_side["peak_rss_mib"],
    "model_flops_per_step": flops["total"],
    "flops_official_convention": flops["official_convention"],
    "xla_flops_per_step": jax_side["xla_flops"],
    "achieved_flops_per_s": achieved,
    "peak_flops_per_s": peak[1] if peak else None,
    "peak_flops_device": peak[0] if peak else None,
    "mfu": achieved / peak[1] if peak else None,
    "num_params": jax_side["num_params"],
    "model": {
      k: kw[k]
      for k in (
        "embedding_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
      )
    },
  }
  if "device_peak_mib" in jax_side:
    report["device_peak_mib"] = jax_side["device_peak_mib"]
  if "final_loss" in jax_side:
    report["final_loss"] = jax_side["final_loss"]
  if spec.workload == "pretrain":
    report["generator"] = generator_shape(cfg)
    report["max_predictions"] = max_predictions(cfg, spec.seq)
  torch_sides = {k.split(":", 1)[1]: v for k, v in side.items() if k.startswith("torch:")}
  if torch_sides:
    variants = {}
    for name, entry in torch_sides.items():
      variants[name] = {
        **_timing(entry["times"], spec.tokens, entry),
        "first_step_s": entry.get("first_step_s"),
        "peak_rss_mib": entry["peak_rss_mib"],
        "num_params": entry["num_params"],
        "final_loss": entry.get("final_loss"),
        **entry["describe"],
      }
    main = variants.get("masked") or variants["default"]
    report["torch_tokens_per_s"] = main["tokens_per_s"]
    report["torch_step_ms_median"] = main["step_ms_median"]
    report["torch_peak_rss_mib"] = main["peak_rss_mib"]
    main_name = "masked" if "masked" in variants else "default"
    report["ratio"] = paired_ratio(jax_side, torch_sides[main_name])
    report["ratio_of_medians"] = report["tokens_per_s"] / main["tokens_per_s"]
    if "all" in variants:
      report["torch_all_logits_tokens_per_s"] = variants["all"]["tokens_per_s"]
      report["ratio_all_logits"] = paired_ratio(jax_side, torch_sides["all"])
    report["torch"] = variants
    report["measured"] = (
      f"each side in its own worker process, alternating in {len(_chunks(spec.steps, ROUNDS))} "
      f"rounds, each opened by {ROUND_WARMUP} untimed step; peak RSS is each worker's own"
    )
  else:
    report["measured"] = "in this process; peak RSS is this process's"
  report["warmup_steps"] = spec.warmup
  report["machine"] = {
    "cpu": cpu_model(),
    "usable_cores": usable_cores(),
    "load_average_before": load_before,
    "load_average_after": load_after,
    "python": platform.python_version(),
    **describe,
  }
  report["date"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
  return report


def format_report(r: dict) -> str:
  """The human-readable report."""
  m = r["machine"]
  lines = [
    f"electra-jax bench: {r['workload']}, size={r['size']}, batch {r['batch']} x {r['seq']}"
    + (f" {' '.join(r['overrides'])}" if r["overrides"] else ""),
    f"  model {r['model']}, {r['num_params']:,} params, compute {m['compute_dtype']}",
    f"  compile {r['compile_s']:.2f} s; {r['warmup_steps']} warm-up + {r['timed_steps']} timed steps",
    f"  electra-jax  step median {r['step_ms_median']:.1f} ms  p10 {r['step_ms_p10']:.1f}  "
    f"p90 {r['step_ms_p90']:.1f}  {r['tokens_per_s']:,.0f} tokens/s  peak RSS "
    f"{r['peak_rss_mib']:,.0f} MiB" + _cpu_text(r),
  ]
  xla = r["xla_flops_per_step"]
  lines.append(
    f"  model FLOPs/step {r['model_flops_per_step'] / 1e9:,.2f} G (XLA counts "
    + (f"{xla / 1e9:,.2f} G" if xla else "n/a")
    + f"); achieved {r['achieved_flops_per_s'] / 1e9:,.1f} GFLOP/s"
    + (
      f", MFU {100 * r['mfu']:.1f} % of {r['peak_flops_device']} "
      f"({r['peak_flops_per_s'] / 1e12:,.1f} TFLOP/s)"
      if r["mfu"] is not None
      else ""
    )
  )
  for name, v in (r.get("torch") or {}).items():
    label = {"masked": "HF (masked-only gen. logits)", "all": "HF (all-position gen. logits)"}.get(
      name, "HF + PyTorch"
    )
    lines.append(
      f"  {label}  step median {v['step_ms_median']:.1f} ms  p10 {v['step_ms_p10']:.1f}  "
      f"p90 {v['step_ms_p90']:.1f}  {v['tokens_per_s']:,.0f} tokens/s  peak RSS "
      f"{v['peak_rss_mib']:,.0f} MiB  ({v['torch_threads']} threads)" + _cpu_text(v)
    )
  if "ratio" in r:
    lines.append(
      f"  ratio electra-jax / HF: {r['ratio']:.2f}x"
      + (
        f" (vs all-position logits: {r['ratio_all_logits']:.2f}x)"
        if "ratio_all_logits" in r
        else ""
      )
      + f"  [{r['measured']}]"
    )
  lines.append(
    f"  machine: {m['cpu']}, {m['usable_cores']} usable cores, load {m['load_average_before']} -> "
    f"{m['load_average_after']}; {m['backend']} ({m['device_kind']}), jax {m['jax']}"
  )
  return "\n".join(lines)


def _cpu_text(r: dict) -> str:
  if not r.get("tokens_per_cpu_s"):
    return ""
  text = f"  CPU {r['cpu_ms_median']:.1f} ms/step ({r['tokens_per_cpu_s']:,.0f} tokens/CPU-s"
  if "sys_cpu_ms_median" in r:
    text += f"; {r['sys_cpu_ms_median']:.1f} ms in the kernel"
  if "page_faults_median" in r:
    text += f", {r['page_faults_median']:,.0f} page faults"
  return text + ")"


def cpu_model() -> str:
  """The CPU model name from /proc/cpuinfo (platform.processor() elsewhere)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def _load_average() -> list[float]:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return []


if __name__ == "__main__":
  if len(sys.argv) == 4 and sys.argv[1] == "--worker":
    sys.exit(_worker_main(sys.argv[2], sys.argv[3]))
  sys.exit("usage: electra-jax bench ... (this module's __main__ is the benchmark's worker)")
