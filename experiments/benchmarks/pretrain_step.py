"""Times electra-jax's pretraining train step (generator + discriminator + AdamW).

What is timed is exactly what `electra-jax pretrain` jits: the model from
`pretraining.build_rtd_model`, the loss from `pretraining.make_loss_fn`
(dynamic masking, generator, Gumbel sampling, discriminator, both losses), the
optimizer from `optim.make_optimizer`, wrapped by `train.make_train_step` and
jitted with the train state donated. Only the data is synthetic: random
full-length sequences `[CLS] a… [SEP] b… [SEP]` (two segments, as the
prepared pretraining examples), a fresh batch per step, already on the device.

Each step is timed from the call to `jax.block_until_ready` on the new state
and metrics; the first `--warmup` steps (compilation included) are not
counted. Reports median / p10 / p90 step time and tokens/s (batch × length /
median), the compile time, and the machine (CPU model, usable cores, load
average before and after, jax / jaxlib / flax / optax versions, backend).

Example (ELECTRA-Small with its 1/4-width generator, batch 8 × 128):

  python experiments/benchmarks/pretrain_step.py \
      --config experiments/configs/pretrain.py:size=small --batch-size 8 --steps 20

Any `--config.KEY=VALUE` override of the pretraining config is accepted
(e.g. `--config.compute_dtype=bfloat16`, `--config.scan_layers=True`).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = str(REPO / "experiments" / "configs" / "pretrain.py") + ":size=small"

# BERT uncased vocabulary (the bundled `sample_data/vocab.txt`): the ids the
# masking must never pick, and the first id of an ordinary word piece.
CLS_ID, SEP_ID, PAD_ID, MASK_ID = 101, 102, 0, 103
FIRST_WORD_ID = 999


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
    description=(
      "Time the jitted ELECTRA pretraining step (generator + discriminator + AdamW) on "
      "synthetic batches. Extra --config.KEY=VALUE arguments override the pretraining config."
    ),
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument(
    "--config",
    default=DEFAULT_CONFIG,
    help="pretraining config spec, path[:args] (size=tiny|small|base|large)",
  )
  parser.add_argument("--batch-size", type=int, default=8, help="sequences per step")
  parser.add_argument(
    "--seq-len", type=int, default=0, help="sequence length (0: the config's max_seq_length)"
  )
  parser.add_argument("--steps", type=int, default=20, help="timed steps")
  parser.add_argument(
    "--warmup", type=int, default=3, help="untimed steps first (the first one compiles)"
  )
  parser.add_argument(
    "--vocab-size", type=int, default=30522, help="vocabulary size (30522: BERT uncased)"
  )
  parser.add_argument("--seed", type=int, default=0, help="seed for params and batches")
  parser.add_argument(
    "--xla-flags",
    default="",
    help="appended to XLA_FLAGS before jax is imported (e.g. '--xla_cpu_use_thunk_runtime=false')",
  )
  parser.add_argument(
    "--no-default-xla-flags",
    action="store_true",
    help="do not add electra_jax.xla_env.DEFAULT_CPU_FLAGS (the CLI adds them)",
  )
  parser.add_argument(
    "--no-cpu-kernels",
    action="store_true",
    help="do not call electra_jax.cpu_kernels.enable() (the CLI calls it)",
  )
  parser.add_argument("--json", default="", help="also write the report to this JSON file")
  args, rest = parser.parse_known_args(argv)
  bad = [a for a in rest if not a.startswith("--config.")]
  if bad:
    parser.error(f"unrecognised arguments: {' '.join(bad)}")
  args.overrides = rest
  if args.steps < 1 or args.warmup < 1 or args.batch_size < 1:
    parser.error("--steps, --warmup and --batch-size must be >= 1")
  return args


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


def usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def load_average() -> list[float]:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return []


def percentile(values: list[float], q: float) -> float:
  """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
  ordered = sorted(values)
  pos = (len(ordered) - 1) * q / 100
  lo = int(pos)
  hi = min(lo + 1, len(ordered) - 1)
  return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def synthetic_batch(rng, batch_size: int, length: int, vocab_size: int) -> dict:
  """`[CLS] a [SEP] b [SEP]` with a random split point, no padding (numpy)."""
  import numpy as np

  ids = rng.integers(FIRST_WORD_ID, vocab_size, size=(batch_size, length), dtype=np.int32)
  segment_ids = np.zeros((batch_size, length), np.int32)
  ids[:, 0] = CLS_ID
  ids[:, -1] = SEP_ID
  for row in range(batch_size):
    split = int(rng.integers(2, length - 2))
    ids[row, split] = SEP_ID
    segment_ids[row, split + 1 :] = 1
  return {
    "input_ids": ids,
    "input_mask": np.ones((batch_size, length), np.int32),
    "segment_ids": segment_ids,
  }


def main(argv=None) -> dict:
  args = parse_args(argv)
  sys.path.insert(0, str(REPO))
  from electra_jax import xla_env

  if args.xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
  if not args.no_default_xla_flags:
    xla_env.set_default_xla_flags()  # what `electra-jax pretrain` runs with

  import flax
  import jax
  import jaxlib
  import numpy as np
  import optax

  from electra_jax import cpu_kernels, experiment, pretraining, run_pretraining, train
  from electra_jax.config import ElectraConfig

  if not args.no_cpu_kernels:
    cpu_kernels.enable()  # what `electra-jax pretrain` runs with; before the step is traced

  cfg = experiment.load_config(args.config, args.overrides)
  length = args.seq_len or int(cfg.max_seq_length)
  disc_config = ElectraConfig(
    vocab_size=args.vocab_size, pad_token_id=PAD_ID, **cfg.model.to_dict()
  )
  objective = run_pretraining.make_objective(
    cfg, mask_id=MASK_ID, special_ids=(CLS_ID, SEP_ID, PAD_ID), length=length
  )
  max_predictions = objective.max_predictions
  model = run_pretraining.make_rtd_model(cfg, disc_config, objective)
  optimizer = run_pretraining.make_optimizer(cfg)

  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(args.seed))

  def create_state(rng):
    boxed = model.init(rng, *pretraining.init_inputs(1, length, max_predictions))["params"]
    params = train.strip_boxes(boxed)
    return train.TrainState(
      step=jax.numpy.zeros((), jax.numpy.int32),
      params=params,
      opt_state=optimizer.init(params),
      rng=state_rng,
    )

  state = jax.jit(create_state)(init_rng)
  num_params = {k: int(sum(x.size for x in jax.tree.leaves(v))) for k, v in state.params.items()}
  step_fn = jax.jit(
    train.make_train_step(pretraining.make_loss_fn(model, objective), optimizer),
    donate_argnums=(0,),
  )

  data_rng = np.random.default_rng(args.seed)
  total = args.warmup + args.steps
  # Batches are made and placed before timing: the benchmark is the step, not the input pipeline.
  batches = [
    jax.device_put(synthetic_batch(data_rng, args.batch_size, length, args.vocab_size))
    for _ in range(total)
  ]
  load_before = load_average()
  times = []
  compile_s = None
  for i, batch in enumerate(batches):
    t0 = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready((state, metrics))
    dt = time.perf_counter() - t0
    if i == 0:
      compile_s = dt
    if i >= args.warmup:
      times.append(dt)
  loss = float(metrics["loss"])
  load_after = load_average()

  median = statistics.median(times)
  tokens = args.batch_size * length
  report = {
    "benchmark": "electra-jax pretraining train step",
    "config": args.config,
    "overrides": args.overrides,
    "objective": objective.name,
    "discriminator": {
      k: getattr(disc_config, k)
      for k in ("embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
    },
    "generator": {
      k: getattr(model.gen_config, k)
      for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    },
    "num_params": num_params,
    "compute_dtype": str(cfg.compute_dtype),
    "batch_size": args.batch_size,
    "seq_len": length,
    "max_predictions": max_predictions,
    "vocab_size": args.vocab_size,
    "warmup_steps": args.warmup,
    "timed_steps": args.steps,
    "first_step_s": compile_s,
    "median_s": median,
    "p10_s": percentile(times, 10),
    "p90_s": percentile(times, 90),
    "mean_s": statistics.fmean(times),
    "tokens_per_s": tokens / median,
    "final_loss": loss,
    "machine": {
      "cpu": cpu_model(),
      "usable_cores": usable_cores(),
      "load_average_before": load_before,
      "load_average_after": load_after,
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "optax": optax.__version__,
      "backend": jax.default_backend(),
      "device": str(jax.devices()[0]),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "cpu_kernels": cpu_kernels.enabled(),
    },
    "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
  }
  print_report(report)
  if args.json:
    tmp = args.json + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)
    os.replace(tmp, args.json)
  return report


def print_report(r: dict) -> None:
  m = r["machine"]
  print(
    f"{r['benchmark']}: {r['config']} {' '.join(r['overrides'])}\n"
    f"  objective {r['objective']}, discriminator {r['discriminator']}, generator {r['generator']}\n"
    f"  params {r['num_params']}, compute {r['compute_dtype']}\n"
    f"  batch {r['batch_size']} x {r['seq_len']} (P={r['max_predictions']}, V={r['vocab_size']}), "
    f"{r['warmup_steps']} warm-up + {r['timed_steps']} timed steps\n"
    f"  first step (compile) {r['first_step_s']:.2f} s\n"
    f"  step time median {r['median_s'] * 1e3:.1f} ms  p10 {r['p10_s'] * 1e3:.1f} ms  "
    f"p90 {r['p90_s'] * 1e3:.1f} ms  mean {r['mean_s'] * 1e3:.1f} ms\n"
    f"  tokens/s (median) {r['tokens_per_s']:.0f}   final loss {r['final_loss']:.4f}\n"
    f"  machine: {m['cpu']}, {m['usable_cores']} usable cores, load {m['load_average_before']} -> "
    f"{m['load_average_after']}\n"
    f"  jax {m['jax']} jaxlib {m['jaxlib']} flax {m['flax']} optax {m['optax']}, "
    f"backend {m['backend']} ({m['device']}), XLA_FLAGS={m['xla_flags']!r}",
    flush=True,
  )


if __name__ == "__main__":
  main()
