"""The HF `transformers` + PyTorch side of `electra-jax bench --compare-torch`.

The same workloads as `electra_jax.bench`, built from HF classes with the
same shapes, hyperparameters and synthetic batches; eager PyTorch on CPU with
`torch.set_num_threads(--torch-threads)` (default: one per usable core),
timed with `time.perf_counter` (CPU PyTorch is synchronous; on CUDA each step
ends with `torch.cuda.synchronize()`). torch is imported only here, and only
with `--compare-torch` (it is in the `test` extra, not a dependency).

  pretrain   an `ElectraForMaskedLM` generator (the config's generator
             fraction of the width) and an `ElectraForPreTraining`
             discriminator sharing ONE embeddings module, the generator's
             decoder tied to the word embeddings; dynamic masking as
             `electra_jax.pretraining.mask_inputs`, Gumbel-max sampling (no
             gradient), `gen + 50 × disc` loss, backward, `clip_grad_norm_`,
             `torch.optim.AdamW` (eps 1e-6, no decay on LayerNorm / biases),
             linear warmup / decay, dropout on. Variant `masked` projects onto
             the vocabulary only at the masked positions (as electra-jax);
             `all` calls `ElectraForMaskedLM` as is (logits at every position).
  finetune   `ElectraForSequenceClassification` (2 labels), mean
             cross-entropy, AdamW, clip 1.0, linear schedule, dropout on: the
             HF Trainer recipe (no layer-wise decay).
  inference  the same classifier in eval mode under `torch.inference_mode()`.
"""

from __future__ import annotations

import time

from electra_jax import bench_setup as bench
from electra_jax import host_memory


class TorchRunner:
  def __init__(self, spec: bench.Spec, cfg, variant: str = "default"):
    import torch

    self.spec, self.cfg, self.variant = spec, cfg, variant
    self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    threads = spec.torch_threads or bench.usable_cores()
    torch.set_num_threads(threads)
    torch.manual_seed(spec.seed)
    self.rng = torch.Generator(device=self.device).manual_seed(spec.seed)
    if spec.workload == "pretrain":
      self.models = self._build_pretrain()
    else:
      self.models = self._build_classifier()
    self.num_params = sum(p.numel() for p in self.models.parameters())
    self.batches = [
      {k: torch.from_numpy(b[k]).long().to(self.device) for k in b}
      for b in bench.synthetic_batches(spec)
    ]
    self._i = 0
    self.first_step_s = None
    self.last_loss = None
    self.usage: list[tuple] = []

  def _config(self, **changes):
    from transformers import ElectraConfig

    kw = dict(bench.model_kwargs(self.cfg), **changes)
    config = ElectraConfig(**kw)
    config._attn_implementation = "sdpa"
    return config

  def _build_pretrain(self):
    import torch
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    cfg = self.cfg
    disc = ElectraForPreTraining(self._config())
    gen = ElectraForMaskedLM(self._config(**bench.generator_shape(cfg)))
    # One embeddings module (word, position, type, LayerNorm) for both, and the
    # generator's decoder weight IS the word-embedding table.
    gen.electra.embeddings = disc.electra.embeddings
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
    models = torch.nn.ModuleDict({"generator": gen, "discriminator": disc}).to(self.device)
    models.train()
    self.max_predictions = bench.max_predictions(cfg, self.spec.seq)
    self._optimizer(
      models,
      lr=float(cfg.learning_rate),
      betas=(float(cfg.adam_b1), float(cfg.adam_b2)),
      eps=float(cfg.adam_eps),
      weight_decay=float(cfg.weight_decay),
      warmup=int(cfg.warmup_steps),
      total=int(cfg.total_steps),
    )
    self.clip = float(cfg.clip_norm)
    return models

  def _build_classifier(self):
    from transformers import ElectraForSequenceClassification

    cfg = self.cfg
    model = ElectraForSequenceClassification(self._config(num_labels=bench.NUM_LABELS))
    model = model.to(self.device)
    if self.spec.workload == "finetune":
      model.train()
      total = 10_000
      self._optimizer(
        model,
        lr=float(cfg.learning_rate),
        betas=(0.9, 0.999),
        eps=float(cfg.adam_eps),
        weight_decay=float(cfg.weight_decay),
        warmup=int(float(cfg.warmup_fraction) * total),
        total=total,
      )
      self.clip = float(cfg.clip_norm)
    else:
      model.eval()
    return model

  def _optimizer(self, models, *, lr, betas, eps, weight_decay, warmup, total):
    """AdamW without decay on LayerNorm / biases, linear warmup then linear decay."""
    import torch

    decay, no_decay = [], []
    for name, p in models.named_parameters():  # shared params are listed once
      (no_decay if ("LayerNorm" in name or name.endswith("bias")) else decay).append(p)
    self.optimizer = torch.optim.AdamW(
      [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
      ],
      lr=lr,
      betas=betas,
      eps=eps,
    )

    def lr_lambda(step):
      if warmup and step < warmup:
        return step / warmup
      return max(0.0, (total - step) / max(1, total - warmup))

    self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)

  # -- steps ----------------------------------------------------------------------

  def _mask(self, input_ids, input_mask):
    """Dynamic masking, as `electra_jax.pretraining.mask_inputs`."""
    import torch

    cfg, p = self.cfg, self.max_predictions
    b, length = input_ids.shape
    candidates = input_mask.bool()
    for token in (bench.MASK_ID, bench.CLS_ID, bench.SEP_ID, bench.PAD_ID):
      candidates &= input_ids != token
    num_tokens = input_mask.sum(-1).float()
    num = torch.clamp(torch.round(num_tokens * float(cfg.mask_prob)).long(), 1, p)
    num = torch.minimum(num, candidates.sum(-1))
    rand = torch.rand(b, length, generator=self.rng, device=self.device)
    scores = torch.where(candidates, rand, -1.0)
    positions = torch.topk(scores, p, dim=-1).indices  # distinct positions
    used = torch.arange(p, device=self.device)[None, :] < num[:, None]
    masked_ids = torch.gather(input_ids, 1, positions)
    keep = torch.rand(b, p, generator=self.rng, device=self.device) < 0.85
    to_mask = used & keep
    masked_input_ids = input_ids.clone()
    masked_input_ids.scatter_(1, positions, torch.where(to_mask, bench.MASK_ID, masked_ids))
    return masked_input_ids, positions, masked_ids, used.float()

  def _pretrain_step(self, batch):
    import torch
    import torch.nn.functional as F

    cfg = self.cfg
    gen, disc = self.models["generator"], self.models["discriminator"]
    input_ids, input_mask, segment_ids = (
      batch["input_ids"],
      batch["input_mask"],
      batch["segment_ids"],
    )
    masked_input_ids, positions, masked_ids, weights = self._mask(input_ids, input_mask)
    index = positions[..., None]
    if self.variant == "masked":
      h = gen.electra(
        masked_input_ids, attention_mask=input_mask, token_type_ids=segment_ids
      ).last_hidden_state
      h = torch.gather(h, 1, index.expand(-1, -1, h.shape[-1]))
      logits = gen.generator_lm_head(gen.generator_predictions(h))
    else:
      all_logits = gen(
        masked_input_ids, attention_mask=input_mask, token_type_ids=segment_ids
      ).logits
      logits = torch.gather(all_logits, 1, index.expand(-1, -1, all_logits.shape[-1]))
    gen_ce = F.cross_entropy(logits.flatten(0, 1), masked_ids.flatten(), reduction="none")
    gen_loss = (gen_ce * weights.flatten()).sum() / (weights.sum() + 1e-6)
    with torch.no_grad():
      u = torch.rand(logits.shape, generator=self.rng, device=self.device)
      gumbel = -torch.log(-torch.log(u + 1e-9) + 1e-9)
      sampled = torch.argmax(logits.detach() / float(cfg.temperature) + gumbel, dim=-1)
      fake_ids = input_ids.clone()
      fake_ids.scatter_(1, positions, torch.where(weights > 0, sampled, masked_ids))
      labels = (fake_ids != input_ids).float()
    disc_logits = disc(fake_ids, attention_mask=input_mask, token_type_ids=segment_ids).logits
    real = input_mask.float()
    disc_ce = F.binary_cross_entropy_with_logits(disc_logits, labels, reduction="none")
    disc_loss = (disc_ce * real).sum() / (real.sum() + 1e-6)
    loss = float(cfg.gen_weight) * gen_loss + float(cfg.disc_weight) * disc_loss
    return self._update(loss)

  def _update(self, loss):
    import torch

    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(self.models.parameters()), self.clip)
    self.optimizer.step()
    self.scheduler.step()
    return loss.detach()

  def _finetune_step(self, batch):
    import torch.nn.functional as F

    logits = self.models(
      batch["input_ids"], attention_mask=batch["input_mask"], token_type_ids=batch["segment_ids"]
    ).logits
    return self._update(F.cross_entropy(logits, batch["labels"]))

  def _inference_step(self, batch):
    import torch

    with torch.inference_mode():
      return self.models(
        batch["input_ids"], attention_mask=batch["input_mask"], token_type_ids=batch["segment_ids"]
      ).logits

  def run(self, n: int) -> list[float]:
    import torch

    step = {
      "pretrain": self._pretrain_step,
      "finetune": self._finetune_step,
      "inference": self._inference_step,
    }[self.spec.workload]
    times = []
    for _ in range(n):
      batch = self.batches[self._i % len(self.batches)]
      self._i += 1
      u0, t0 = bench.usage(), time.perf_counter()
      out = step(batch)
      if self.device.type == "cuda":
        torch.cuda.synchronize()
      dt = time.perf_counter() - t0
      self.usage.append(bench.usage_since(u0))
      if self.first_step_s is None:
        self.first_step_s = dt
      times.append(dt)
      if self.spec.workload != "inference":
        self.last_loss = out
    return times

  def final(self) -> dict:
    out = {
      "peak_rss_mib": bench.peak_rss_mib(),
      "num_params": int(self.num_params),
      "first_step_s": self.first_step_s,
      **bench.usage_lists(self.usage[-self.spec.steps :]),
    }
    if self.last_loss is not None:
      out["final_loss"] = float(self.last_loss)
    return out

  def describe(self) -> dict:
    import torch
    import transformers

    return {
      "variant": self.variant,
      "torch": torch.__version__,
      "transformers": transformers.__version__,
      "torch_threads": torch.get_num_threads(),
      "device": str(self.device),
      "attn_implementation": "sdpa",
      "malloc": host_memory.describe_malloc(),  # glibc's defaults, as people run HF
    }
