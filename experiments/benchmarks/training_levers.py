"""A/B timing of candidate speed-ups ("levers") of the pretraining step, in one process.

Each variant is the pretraining step `electra-jax pretrain` jits (model, loss,
optimizer from `experiments/configs/pretrain.py`, `train.make_train_step`,
state donated, CPU kernels and the default XLA flag on), with one change:

  base        the step as it is
  rbg         dropout/masking/sampling keys of JAX's `rbg` PRNG (a new random stream)
  unsafe_rbg  the same with `unsafe_rbg`
  drop16      dropout masks from 16 random bits per element (4 elements per
              threefry hash instead of 1; keep probability rounded to 1/65536)
  argmax_accuracy  the generator's MLM accuracy from an argmax over the vocabulary, as
              before 2026-12-02 (now: the label's logit reaches the row's maximum)
  fused_qkv   the query/key/value kernels concatenated at run time: one matmul
              per layer instead of three (same param tree)
  bf16        --config.compute_dtype=bfloat16

The variants are compiled first, then run in turns (A B C A B C ...) so that
all of them see the same machine load, and each step is timed in wall time and
in process CPU time (`time.process_time`, all threads): on a machine shared with
other jobs the CPU time moves much less than the wall time. Prints the median
of both per variant, the compile time and the loss after the last step.

  python experiments/benchmarks/training_levers.py --size small --variants base,rbg,drop16,fused_qkv
  python experiments/benchmarks/training_levers.py --optimizer   # the optimizer update alone
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--size", default="small", help="tiny, small, base or large")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=128)
  p.add_argument("--variants", default="base,rbg,drop16,fused_qkv", help="comma list (see above)")
  p.add_argument("--rounds", type=int, default=5, help="turns of every variant")
  p.add_argument("--steps-per-round", type=int, default=3)
  p.add_argument(
    "--optimizer",
    action="store_true",
    help="time the optimizer update alone instead: the optax chain over the param tree vs "
    "optax.flatten (one vector)",
  )
  return p.parse_args(argv)


# -- the variants: each changes what is traced, so each is set up right before its trace --


def _bernoulli16(key, p, shape):
  """`jax.random.bernoulli` from 16 bits per element: one threefry hash gives 4 elements."""
  import jax
  import jax.extend.random as jrandom
  import jax.numpy as jnp

  n = math.prod(shape)
  words = (n + 1) // 2
  raw = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  bits = jrandom.threefry_2x32(raw, jax.lax.iota(jnp.uint32, words + words % 2))
  halves = jax.lax.bitcast_convert_type(bits, jnp.uint16).reshape(-1)[:n]
  return halves.reshape(shape) < jnp.uint16(round(p * 65536))


def _fused_qkv_attention(self, x, mask_bias, deterministic):
  """`ElectraSelfAttention.__call__` with one matmul for q, k and v (params unchanged)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from electra_jax import attention, cpu_kernels

  c = self.config
  b, length, width = x.shape
  kernels, biases = [], []
  for name in ("query", "key", "value"):
    scope = _DenseParams(c.hidden_size, c.initializer_range, self.param_dtype, name=name)
    kernel, bias = scope(width)
    kernels.append(kernel)
    biases.append(bias)
  kernel = jnp.concatenate(kernels, axis=1).astype(self.dtype)
  dot = cpu_kernels.dot_general_for_dense() or jax.lax.dot_general
  y = dot(x.astype(self.dtype), kernel, (((2,), (0,)), ((), ()))) + jnp.concatenate(biases)
  y = y.reshape(b, length, 3, c.num_attention_heads, c.head_dim)
  q, k, v = y[:, :, 0], y[:, :, 1], y[:, :, 2]
  probs = attention.scores_softmax(q, k, mask_bias, self.dtype)
  probs = nn.Dropout(c.attention_probs_dropout_prob)(probs, deterministic=deterministic)
  return attention.weighted_values(probs, v).reshape(b, length, c.hidden_size)


def _dense_params_module():
  import flax.linen as nn
  import jax.numpy as jnp

  class DenseParams(nn.Module):
    """Declares `kernel` and `bias` as `nn.Dense` would (same names and init), returns them."""

    features: int
    stddev: float
    param_dtype: object = jnp.float32

    @nn.compact
    def __call__(self, in_features):
      init = nn.with_logical_partitioning(
        nn.initializers.normal(self.stddev), ("embed", "joined_kv")
      )
      kernel = self.param("kernel", init, (in_features, self.features), self.param_dtype)
      zeros = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("joined_kv",))
      bias = self.param("bias", zeros, (self.features,), self.param_dtype)
      return kernel, bias

  return DenseParams


_DenseParams = None


def _argmax_masked_lm_loss(logits, labels, weights):
  """The generator's MLM loss with its accuracy from an argmax over the vocabulary (before 2026-12-02)."""
  import optax

  from electra_jax import cpu_kernels, pretraining

  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype("float32"), labels)
  preds = cpu_kernels.argmax(logits)
  return pretraining._weighted_mean(ce, weights), pretraining._accuracy(preds, labels, weights)


class Patches:
  """Sets up one variant's patches before its trace, undoing the previous one's."""

  def __init__(self):
    import flax.linen.stochastic as stochastic

    from electra_jax import model as model_lib
    from electra_jax import pretraining

    self.stochastic, self.model_lib, self.pretraining = stochastic, model_lib, pretraining
    self.bernoulli = stochastic.random.bernoulli
    self.attention_call = model_lib.ElectraSelfAttention.__call__
    self.masked_lm_loss = pretraining.masked_lm_loss

  def apply(self, variant: str):
    global _DenseParams
    import flax.linen as nn

    self.stochastic.random.bernoulli = self.bernoulli
    self.model_lib.ElectraSelfAttention.__call__ = self.attention_call
    self.pretraining.masked_lm_loss = self.masked_lm_loss
    if variant == "argmax_accuracy":
      self.pretraining.masked_lm_loss = _argmax_masked_lm_loss
    if variant == "drop16":
      self.stochastic.random.bernoulli = _bernoulli16
    elif variant == "fused_qkv":
      _DenseParams = _DenseParams or _dense_params_module()
      self.model_lib.ElectraSelfAttention.__call__ = nn.compact(_fused_qkv_attention)


def build(variant: str, args, patches: Patches):
  import jax
  import jax.numpy as jnp

  from electra_jax import bench_setup, experiment, pretraining, run_pretraining, train
  from electra_jax.bench_setup import CLS_ID, MASK_ID, PAD_ID, SEP_ID, VOCAB_SIZE
  from electra_jax.config import ElectraConfig

  patches.apply(variant)
  overrides = ["--config.compute_dtype=bfloat16"] if variant == "bf16" else []
  cfg = experiment.load_config(
    str(REPO / "experiments" / "configs" / "pretrain.py") + f":size={args.size}", overrides
  )
  disc = ElectraConfig(vocab_size=VOCAB_SIZE, pad_token_id=PAD_ID, **cfg.model.to_dict())
  objective = run_pretraining.make_objective(
    cfg, mask_id=MASK_ID, special_ids=(CLS_ID, SEP_ID, PAD_ID), length=args.seq
  )
  model = run_pretraining.make_rtd_model(cfg, disc, objective)
  optimizer = run_pretraining.make_optimizer(cfg)
  loss_fn = pretraining.make_loss_fn(model, objective)
  if variant in ("rbg", "unsafe_rbg"):
    plain_loss = loss_fn

    def loss_fn(params, batch, rng, deterministic):
      key = jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl=variant)
      return plain_loss(params, batch, key, deterministic)

  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(0))

  def create(rng):
    inputs = pretraining.init_inputs(1, args.seq, objective.max_predictions)
    params = train.strip_boxes(model.init(rng, *inputs)["params"])
    return train.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), rng=state_rng
    )

  state = jax.jit(create)(init_rng)
  spec = bench_setup.Spec(workload="pretrain", batch=args.batch, seq=args.seq)
  batches = [jax.device_put(b) for b in bench_setup.synthetic_batches(spec)]  # 4, as `bench`'s
  step = jax.jit(train.make_train_step(loss_fn, optimizer), donate_argnums=(0,))
  t0, c0 = time.perf_counter(), time.process_time()
  compiled = step.lower(state, batches[0]).compile()
  compile_s = (time.perf_counter() - t0, time.process_time() - c0)
  return {
    "step": compiled,
    "state": state,
    "batches": batches,
    "compile": compile_s,
  }


def run_levers(args) -> None:
  import jax

  patches = Patches()
  variants = [v.strip() for v in args.variants.split(",") if v.strip()]
  built = {}
  for v in variants:
    built[v] = build(v, args, patches)
    wall, cpu = built[v]["compile"]
    print(f"{v}: compiled in {wall:.1f} s wall / {cpu:.1f} s CPU", flush=True)
  patches.apply("base")
  times = {v: {"wall": [], "cpu": []} for v in variants}
  for b in built.values():  # one untimed step each
    b["state"], metrics = b["step"](b["state"], b["batches"][0])
    jax.block_until_ready(metrics)
  load_before = os.getloadavg()
  for _ in range(args.rounds):
    for v, b in built.items():
      for i in range(args.steps_per_round):
        t0, c0 = time.perf_counter(), time.process_time()
        b["state"], metrics = b["step"](b["state"], b["batches"][i % 4])
        jax.block_until_ready((b["state"], metrics))
        times[v]["wall"].append(time.perf_counter() - t0)
        times[v]["cpu"].append(time.process_time() - c0)
      b["loss"] = float(metrics["loss"])
  print(f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}")
  base = statistics.median(times[variants[0]]["cpu"])
  for v in variants:
    wall, cpu = statistics.median(times[v]["wall"]), statistics.median(times[v]["cpu"])
    # Step i of a round against step i of the first variant's turn in that round.
    paired = statistics.median(
      a / b for a, b in zip(times[v]["wall"], times[variants[0]]["wall"], strict=True)
    )
    print(
      f"{v:16s} wall {wall * 1e3:8.1f} ms ({paired:5.3f}x paired)  CPU {cpu * 1e3:8.1f} ms "
      f"({cpu / base:5.2f}x {variants[0]})  loss {built[v]['loss']:.6f}",
      flush=True,
    )


def run_optimizer(args) -> None:
  """The optimizer update + apply on the ELECTRA-<size> RTD params: tree chain vs optax.flatten."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from electra_jax import optim, pretraining, train
  from electra_jax.bench_setup import VOCAB_SIZE
  from electra_jax.config import ElectraConfig, shape

  model = pretraining.build_rtd_model(ElectraConfig(vocab_size=VOCAB_SIZE, **shape(args.size)))
  inputs = pretraining.init_inputs(1, args.seq, 19)
  abstract = jax.eval_shape(lambda r: model.init(r, *inputs)["params"], jax.random.key(0))
  abstract = train.strip_boxes(abstract)
  rng = np.random.default_rng(0)

  def normal(a, scale):
    return jnp.asarray(rng.normal(size=a.shape).astype(np.float32) * scale)

  params = jax.tree.map(lambda a: normal(a, 0.02), abstract)
  grads = jax.tree.map(lambda a: normal(a, 1e-3), abstract)
  schedule = optim.make_schedule(5e-4, 100, 1000)
  decays = jax.tree.leaves(optim.weight_decay_mask(abstract))
  mask = jnp.concatenate(
    [jnp.full((a.size,), d) for a, d in zip(jax.tree.leaves(abstract), decays, strict=True)]
  )

  def flat_decay(update, _, flat_params):
    return jnp.where(mask, update + 0.01 * flat_params, update), optax.EmptyState()

  flat = optax.chain(
    optax.clip_by_global_norm(1.0),
    optax.flatten(
      optax.chain(
        optax.scale_by_adam(0.9, 0.999, 1e-6),
        optax.GradientTransformation(lambda p: optax.EmptyState(), flat_decay),
        optax.scale_by_learning_rate(schedule),
      )
    ),
  )
  chains = {"tree": optim.make_optimizer(5e-4, 1000, 100), "flatten": flat}
  compiled = {}
  for name, opt in chains.items():

    def update(p, s, g, opt=opt):
      u, s = opt.update(g, s, p)
      return optax.apply_updates(p, u), s

    state = opt.init(params)
    exe = jax.jit(update, donate_argnums=(0, 1)).lower(params, state, grads).compile()
    fusions = exe.as_text().count(" fusion(")
    compiled[name] = [exe, jax.tree.map(jnp.copy, params), state, fusions, []]
  for _ in range(args.rounds):
    for entry in compiled.values():
      exe, p, s, _, cpu = entry
      for _ in range(5):
        c0 = time.perf_counter(), time.process_time()
        p, s = exe(p, s, grads)
        jax.block_until_ready((p, s))
        cpu.append((time.perf_counter() - c0[0], time.process_time() - c0[1]))
      entry[1], entry[2] = p, s
  for name, (_, _, _, fusions, t) in compiled.items():
    wall = statistics.median(x[0] for x in t) * 1e3
    cpu = statistics.median(x[1] for x in t) * 1e3
    print(f"{name:8s} {fusions:5d} fusions  wall {wall:7.1f} ms  CPU {cpu:7.1f} ms")
  print(f"load average {os.getloadavg()[0]:.1f}")


def main(argv=None) -> None:
  args = parse_args(argv)
  sys.path.insert(0, str(REPO))
  from electra_jax import xla_env

  xla_env.set_default_xla_flags()  # as the CLI
  from electra_jax import cpu_kernels

  cpu_kernels.enable()
  if args.optimizer:
    run_optimizer(args)
  else:
    run_levers(args)


if __name__ == "__main__":
  main()
