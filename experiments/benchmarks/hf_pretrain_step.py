"""The reference: the same ELECTRA pretraining step in HF `transformers` + PyTorch.

Built from the HF classes, doing the work `experiments/benchmarks/pretrain_step.py`
times in electra-jax:

  * an `ElectraForMaskedLM` generator (the config's `generator_hidden_size`
    fraction of the width: ELECTRA-Small → hidden 64, 1 head, FFN 256) and an
    `ElectraForPreTraining` discriminator sharing ONE embeddings module, the
    generator's output layer tied to the word embeddings;
  * dynamic masking per batch (15 % of the real tokens, at most
    `int((0.15 + 0.005) × L)` per sequence, never `[CLS]`/`[SEP]`/padding,
    85 % of them `[MASK]`), Gumbel-max sampling from the generator (no
    gradient), generator cross-entropy over the masked positions + 50 ×
    discriminator sigmoid cross-entropy over the real tokens;
  * backward, global-norm clipping at 1.0, `torch.optim.AdamW` (eps 1e-6,
    weight decay 0.01 not on LayerNorm / biases), a linear warmup / decay
    schedule, dropout on (train mode).

`--generator-logits masked` (default) projects onto the vocabulary only at
the masked positions, as electra-jax does; `all` calls `ElectraForMaskedLM`
as is (logits at every position, then picks the masked ones), the
straightforward HF usage.

Eager PyTorch, `torch.set_num_threads(--threads)` (2). Each step is timed
with `time.perf_counter` (CPU PyTorch runs synchronously); the first
`--warmup` steps are not counted. Same synthetic batches as the JAX script.

  python experiments/benchmarks/hf_pretrain_step.py --size small --batch-size 8 --steps 20
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

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import pretrain_step as jax_bench  # noqa: E402  (shared helpers; imports no jax at module level)

# The architecture and optimizer settings come from the JAX config file itself.
CONFIG_FILE = jax_bench.REPO / "experiments" / "configs" / "pretrain.py"


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
    description="Time the ELECTRA pretraining step (generator + discriminator + AdamW) in HF "
    "transformers + PyTorch on synthetic batches.",
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument(
    "--size", default="small", help="size preset of experiments/configs/pretrain.py"
  )
  parser.add_argument("--batch-size", type=int, default=8, help="sequences per step")
  parser.add_argument("--seq-len", type=int, default=128, help="sequence length")
  parser.add_argument("--steps", type=int, default=20, help="timed steps")
  parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
  parser.add_argument("--vocab-size", type=int, default=30522, help="vocabulary size")
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  parser.add_argument(
    "--generator-logits",
    choices=("masked", "all"),
    default="masked",
    help="vocabulary projection at the masked positions only, or at every position",
  )
  parser.add_argument(
    "--attn-implementation",
    default="sdpa",
    choices=("sdpa", "eager"),
    help="HF attention implementation",
  )
  parser.add_argument("--seed", type=int, default=0, help="seed for params and batches")
  parser.add_argument("--json", default="", help="also write the report to this JSON file")
  args = parser.parse_args(argv)
  if args.steps < 1 or args.warmup < 1 or args.batch_size < 1 or args.threads < 1:
    parser.error("--steps, --warmup, --batch-size and --threads must be >= 1")
  return args


def _arch(size: str):
  """The `experiments/configs/pretrain.py` ConfigDict of a size preset."""
  import importlib.util

  spec = importlib.util.spec_from_file_location("pretrain_config", CONFIG_FILE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = module.get_config(f"size={size}")
  return cfg


def build_models(cfg, vocab_size: int, attn_implementation: str):
  """HF generator + discriminator sharing one embeddings module."""
  import torch
  from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

  model_kw = dict(cfg.model.to_dict())
  disc_config = ElectraConfig(vocab_size=vocab_size, pad_token_id=jax_bench.PAD_ID, **model_kw)
  hidden = int(round(disc_config.hidden_size * float(cfg.generator_hidden_size)))
  # The official get_generator_config (also electra_jax.pretraining.generator_config).
  gen_kw = dict(
    model_kw,
    hidden_size=hidden,
    intermediate_size=4 * hidden,
    num_attention_heads=max(1, hidden // 64),
  )
  gen_config = ElectraConfig(vocab_size=vocab_size, pad_token_id=jax_bench.PAD_ID, **gen_kw)
  for c in (disc_config, gen_config):
    c._attn_implementation = attn_implementation
  discriminator = ElectraForPreTraining(disc_config)
  generator = ElectraForMaskedLM(gen_config)
  # One embeddings module (word, position, type, LayerNorm) for both, and the
  # generator's decoder weight IS the word-embedding table.
  generator.electra.embeddings = discriminator.electra.embeddings
  generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight
  both = torch.nn.ModuleDict({"generator": generator, "discriminator": discriminator})
  return both, disc_config, gen_config


def mask_batch(input_ids, input_mask, *, mask_prob, max_predictions, generator):
  """Dynamic masking, as `electra_jax.pretraining.mask_inputs`.

  Returns:
    (masked_input_ids, positions (B, P), masked_ids (B, P), weights (B, P)).
  """
  import torch

  b, length = input_ids.shape
  candidates = input_mask.bool()
  for token in (jax_bench.MASK_ID, jax_bench.CLS_ID, jax_bench.SEP_ID, jax_bench.PAD_ID):
    candidates &= input_ids != token
  num_tokens = input_mask.sum(-1).float()
  num_to_predict = torch.clamp(torch.round(num_tokens * mask_prob).long(), 1, max_predictions)
  num_to_predict = torch.minimum(num_to_predict, candidates.sum(-1))
  scores = torch.where(candidates, torch.rand(b, length, generator=generator), -1.0)
  positions = torch.topk(scores, max_predictions, dim=-1).indices  # distinct positions
  used = torch.arange(max_predictions)[None, :] < num_to_predict[:, None]
  masked_ids = torch.gather(input_ids, 1, positions)
  to_mask = used & (torch.rand(b, max_predictions, generator=generator) < 0.85)
  masked_input_ids = input_ids.clone()
  masked_input_ids.scatter_(1, positions, torch.where(to_mask, jax_bench.MASK_ID, masked_ids))
  return masked_input_ids, positions, masked_ids, used.float()


def make_step(models, optimizer, scheduler, *, cfg, max_predictions, generator_logits, rng):
  """The train step: `(input_ids, input_mask, segment_ids) -> loss` (updates in place)."""
  import torch
  import torch.nn.functional as F

  gen, disc = models["generator"], models["discriminator"]
  params = [p for p in models.parameters() if p.requires_grad]
  disc_weight = float(cfg.disc_weight)

  def step(input_ids, input_mask, segment_ids):
    masked_input_ids, positions, masked_ids, weights = mask_batch(
      input_ids,
      input_mask,
      mask_prob=float(cfg.mask_prob),
      max_predictions=max_predictions,
      generator=rng,
    )
    gather_index = positions[..., None]
    if generator_logits == "masked":
      h = gen.electra(
        masked_input_ids, attention_mask=input_mask, token_type_ids=segment_ids
      ).last_hidden_state
      h = torch.gather(h, 1, gather_index.expand(-1, -1, h.shape[-1]))
      logits = gen.generator_lm_head(gen.generator_predictions(h))
    else:
      all_logits = gen(
        masked_input_ids, attention_mask=input_mask, token_type_ids=segment_ids
      ).logits
      logits = torch.gather(all_logits, 1, gather_index.expand(-1, -1, all_logits.shape[-1]))
    gen_ce = F.cross_entropy(logits.flatten(0, 1), masked_ids.flatten(), reduction="none")
    gen_loss = (gen_ce * weights.flatten()).sum() / (weights.sum() + 1e-6)

    with torch.no_grad():
      u = torch.rand(logits.shape, generator=rng)
      gumbel = -torch.log(-torch.log(u + 1e-9) + 1e-9)
      sampled = torch.argmax(logits.detach() / float(cfg.temperature) + gumbel, dim=-1)
      fake_ids = input_ids.clone()
      fake_ids.scatter_(1, positions, torch.where(weights > 0, sampled, masked_ids))
      labels = (fake_ids != input_ids).float()

    disc_logits = disc(fake_ids, attention_mask=input_mask, token_type_ids=segment_ids).logits
    real = input_mask.float()
    disc_ce = F.binary_cross_entropy_with_logits(disc_logits, labels, reduction="none")
    disc_loss = (disc_ce * real).sum() / (real.sum() + 1e-6)
    loss = float(cfg.gen_weight) * gen_loss + disc_weight * disc_loss

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, float(cfg.clip_norm))
    optimizer.step()
    scheduler.step()
    return loss.detach()

  return step


def make_optimizer(models, cfg):
  """AdamW without decay on LayerNorm / biases, linear warmup then linear decay."""
  import torch

  decay, no_decay = [], []
  for name, p in models.named_parameters():  # shared params are listed once
    (no_decay if ("LayerNorm" in name or name.endswith("bias")) else decay).append(p)
  optimizer = torch.optim.AdamW(
    [
      {"params": decay, "weight_decay": float(cfg.weight_decay)},
      {"params": no_decay, "weight_decay": 0.0},
    ],
    lr=float(cfg.learning_rate),
    betas=(float(cfg.adam_b1), float(cfg.adam_b2)),
    eps=float(cfg.adam_eps),
  )
  warmup, total = int(cfg.warmup_steps), int(cfg.total_steps)

  def lr_lambda(step):
    if warmup and step < warmup:
      return step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))

  return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def main(argv=None) -> dict:
  args = parse_args(argv)
  import numpy as np
  import torch
  import transformers

  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  cfg = _arch(args.size)
  models, disc_config, gen_config = build_models(cfg, args.vocab_size, args.attn_implementation)
  models.train()
  optimizer, scheduler = make_optimizer(models, cfg)
  max_predictions = int((float(cfg.mask_prob) + 0.005) * args.seq_len)
  rng = torch.Generator().manual_seed(args.seed)
  step = make_step(
    models,
    optimizer,
    scheduler,
    cfg=cfg,
    max_predictions=max_predictions,
    generator_logits=args.generator_logits,
    rng=rng,
  )

  data_rng = np.random.default_rng(args.seed)
  total = args.warmup + args.steps
  batches = []
  for _ in range(total):
    b = jax_bench.synthetic_batch(data_rng, args.batch_size, args.seq_len, args.vocab_size)
    batches.append(
      tuple(torch.from_numpy(b[k]).long() for k in ("input_ids", "input_mask", "segment_ids"))
    )

  load_before = jax_bench.load_average()
  times = []
  first = None
  for i, batch in enumerate(batches):
    t0 = time.perf_counter()
    loss = step(*batch)
    dt = time.perf_counter() - t0
    if i == 0:
      first = dt
    if i >= args.warmup:
      times.append(dt)
  load_after = jax_bench.load_average()

  median = statistics.median(times)
  num_params = sum(p.numel() for p in models.parameters())
  report = {
    "benchmark": "HF transformers + PyTorch pretraining train step",
    "size": args.size,
    "generator_logits": args.generator_logits,
    "attn_implementation": args.attn_implementation,
    "discriminator": {
      k: getattr(disc_config, k)
      for k in ("embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
    },
    "generator": {
      k: getattr(gen_config, k)
      for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    },
    "num_params": num_params,
    "batch_size": args.batch_size,
    "seq_len": args.seq_len,
    "max_predictions": max_predictions,
    "vocab_size": args.vocab_size,
    "warmup_steps": args.warmup,
    "timed_steps": args.steps,
    "first_step_s": first,
    "median_s": median,
    "p10_s": jax_bench.percentile(times, 10),
    "p90_s": jax_bench.percentile(times, 90),
    "mean_s": statistics.fmean(times),
    "tokens_per_s": args.batch_size * args.seq_len / median,
    "final_loss": float(loss),
    "machine": {
      "cpu": jax_bench.cpu_model(),
      "usable_cores": jax_bench.usable_cores(),
      "load_average_before": load_before,
      "load_average_after": load_after,
      "python": platform.python_version(),
      "torch": torch.__version__,
      "transformers": transformers.__version__,
      "torch_threads": torch.get_num_threads(),
      "mkldnn": bool(torch.backends.mkldnn.is_available()),
    },
    "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
  }
  m = report["machine"]
  print(
    f"{report['benchmark']}: size={args.size}, generator logits {args.generator_logits}, "
    f"attention {args.attn_implementation}\n"
    f"  discriminator {report['discriminator']}, generator {report['generator']}, "
    f"params {num_params}\n"
    f"  batch {args.batch_size} x {args.seq_len} (P={max_predictions}, V={args.vocab_size}), "
    f"{args.warmup} warm-up + {args.steps} timed steps\n"
    f"  first step {first:.2f} s\n"
    f"  step time median {median * 1e3:.1f} ms  p10 {report['p10_s'] * 1e3:.1f} ms  "
    f"p90 {report['p90_s'] * 1e3:.1f} ms  mean {report['mean_s'] * 1e3:.1f} ms\n"
    f"  tokens/s (median) {report['tokens_per_s']:.0f}   final loss {report['final_loss']:.4f}\n"
    f"  machine: {m['cpu']}, {m['usable_cores']} usable cores, {m['torch_threads']} torch threads, "
    f"load {load_before} -> {load_after}\n"
    f"  torch {m['torch']} transformers {m['transformers']}",
    flush=True,
  )
  if args.json:
    tmp = args.json + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)
    os.replace(tmp, args.json)
  return report


if __name__ == "__main__":
  main()
