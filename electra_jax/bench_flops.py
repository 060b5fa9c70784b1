"""Analytic model FLOPs of the benchmarked workloads, and the peak FLOP/s of common accelerators.

The FLOPs a step executes, for achieved FLOP/s and MFU (`electra-jax bench`).
For the paper's equal-compute matching of ELECTRA and MLM use
`electra_jax/flops.py` instead: a term-by-term port of the official script
with its conventions (training = 2 × forward, dense lookups by default).

Counting rules: those of the official `flops_computation.py`
(google-research/electra), per token of a sequence of length `s`, with hidden
size `h`, embedding size `e`, FFN size `i`, `n` heads, vocabulary `v`:

  one transformer block, forward (`TransformerHparams.get_block_flops`):
    query/key/value kernels   3 · 2·h·h      + biases 3·h
    attention scores          2·h·s          (q·k over all heads)
    softmax                   5 · n·s        (max/subtract, exp, sum, divide)
    attention dropout         4 · n·s        (random number, >=, mask, scale)
    attention scale           n·s
    probabilities × values    2·h·s
    attention output kernel   2·h·h + h (bias) + 4·h (dropout) + h (residual)
                              + 5·h (LayerNorm)
    FFN                       2·h·i + i (bias) + 8·i (GELU) + 2·i·h + h (bias)
                              + 4·h (dropout) + h (residual) + 5·h (LayerNorm)
  input embeddings: 2·e (word + type + position adds) + 5·e (LayerNorm)
    + 4·e (dropout), + 2·e·h + h when e != h (the projection)
  MLM output (generator), at each of the P masked slots per sequence:
    2·h·e + e (dense to e) + 8·e (GELU) + 5·e (LayerNorm)
    + 2·e·v (tied decoder) + 5·v (softmax) + 2·v (target word)
  replaced-token detection head, per token: 2·h·h + h + 8·h + 2·h
  classification head (HF's two-layer head on [CLS], per sequence):
    2·h·h + h + 8·h (dense + GELU) + 2·h·c + c (c labels)

  step FLOPs = batch × Σ (per-token terms × s + per-sequence terms), times 1
  for inference, 3 for a training step.

Where this deviates from the official script, and why (each makes the count
match the work XLA is asked to do):

  * Training is 3 × forward (forward, then the backward's two matmuls per
    forward matmul: the gradient of the input and of the kernel); the
    official script takes backward = forward, i.e. 2 ×. Multiply by 2/3 for
    its convention (`flops_official_convention` in the report).
  * Embedding lookups are sparse (a gather, 0 FLOPs) for the word, position
    and token-type tables: the official `sparse_embed_lookup=True` for the
    word table, extended to the other two, which the official script counts
    as dense one-hot products.
  * Dropout is counted only when it runs (training); `deterministic=True`
    inference has none.
  * The official block has `attn_output_layer_norm = 5` per token instead of
    `5·h` (a slip); here it is 5·h like the FFN's LayerNorm.
  * The generator's output layer runs on exactly P = max_predictions slots per
    sequence (the official `output_frac` = P / s).
  * Not counted, as in the official script: masking, Gumbel sampling, the
    losses and the optimizer update (O(parameters) or O(P·v), a few percent of
    the step at most).

`tests/bench_test.py` checks these totals against XLA's own count of the
compiled program (`compiled.cost_analysis()["flops"]`).
"""

from __future__ import annotations

import dataclasses

DROPOUT_FLOPS = 4
LAYER_NORM_FLOPS = 5
ACTIVATION_FLOPS = 8
SOFTMAX_FLOPS = 5


@dataclasses.dataclass(frozen=True)
class Encoder:
  """The shape of one encoder (a discriminator, generator or classifier body)."""

  hidden: int
  layers: int
  heads: int
  intermediate: int
  embedding: int


def block_flops(enc: Encoder, seq: int, train: bool) -> float:
  """Forward FLOPs of one transformer block over one sequence."""
  h, i, n, s = enc.hidden, enc.intermediate, enc.heads, seq
  drop = DROPOUT_FLOPS if train else 0
  per_token = (
    3 * 2 * h * h
    + 3 * h
    + 2 * h * s  # scores
    + SOFTMAX_FLOPS * n * s
    + drop * n * s
    + n * s  # scale
    + 2 * h * s  # probabilities x values
    + 2 * h * h
    + h
    + drop * h
    + h
    + LAYER_NORM_FLOPS * h
    + 2 * h * i
    + i
    + ACTIVATION_FLOPS * i
    + 2 * i * h
    + h
    + drop * h
    + h
    + LAYER_NORM_FLOPS * h
  )
  return per_token * s


def embedding_flops(enc: Encoder, seq: int, train: bool) -> float:
  """Forward FLOPs of the input embeddings (sparse lookups) over one sequence."""
  e, h = enc.embedding, enc.hidden
  per_token = 2 * e + LAYER_NORM_FLOPS * e + (DROPOUT_FLOPS * e if train else 0)
  if e != h:
    per_token += 2 * e * h + h
  return per_token * seq


def encoder_flops(enc: Encoder, seq: int, train: bool) -> float:
  return embedding_flops(enc, seq, train) + enc.layers * block_flops(enc, seq, train)


def mlm_output_flops(hidden: int, embedding: int, vocab: int, positions: int) -> float:
  """The generator's output layer at `positions` slots of one sequence."""
  e = embedding
  per_slot = (
    2 * hidden * e
    + e
    + ACTIVATION_FLOPS * e
    + LAYER_NORM_FLOPS * e
    + 2 * e * vocab
    + SOFTMAX_FLOPS * vocab
    + 2 * vocab
  )
  return per_slot * positions


def rtd_head_flops(hidden: int, seq: int) -> float:
  """The discriminator's per-token replaced/original head over one sequence."""
  h = hidden
  return (2 * h * h + h + ACTIVATION_FLOPS * h + 2 * h) * seq


def classifier_head_flops(hidden: int, num_labels: int, train: bool) -> float:
  """HF's classification head (dense + GELU + out_proj on [CLS]) for one sequence."""
  h = hidden
  drop = 2 * DROPOUT_FLOPS * h if train else 0
  return 2 * h * h + h + ACTIVATION_FLOPS * h + 2 * h * num_labels + num_labels + drop


def pretrain_step_flops(
  disc: Encoder, gen: Encoder, *, batch: int, seq: int, vocab: int, positions: int
) -> dict:
  """FLOPs of one ELECTRA pretraining step (generator + discriminator, forward + backward)."""
  forward = (
    encoder_flops(gen, seq, True)
    + mlm_output_flops(gen.hidden, gen.embedding, vocab, positions)
    + encoder_flops(disc, seq, True)
    + rtd_head_flops(disc.hidden, seq)
  ) * batch
  return {"forward": forward, "total": 3 * forward, "official_convention": 2 * forward}


def classifier_flops(enc: Encoder, *, batch: int, seq: int, num_labels: int, train: bool) -> dict:
  """FLOPs of a classifier forward (inference) or a fine-tuning step (`train`)."""
  forward = (
    encoder_flops(enc, seq, train) + classifier_head_flops(enc.hidden, num_labels, train)
  ) * batch
  factor = 3 if train else 1
  return {
    "forward": forward,
    "total": factor * forward,
    "official_convention": (2 if train else 1) * forward,
  }


# Dense peak FLOP/s per JAX device, (bf16/fp16 tensor rate, the rate XLA's default
# fp32 matmul gets: TF32 on Ampere and later, plain FP32 before). Vendor data
# sheets, without sparsity. TPU v2/v3 show each TensorCore as a device (half a
# chip); v4 and v5p are megacore (one device per chip); TPUs do fp32 matmuls at
# the bf16 rate at JAX's default precision.
PEAK_FLOPS: dict[str, tuple[float, float]] = {
  "H200": (989.4e12, 494.7e12),
  "H100 PCIe": (756.5e12, 378.0e12),
  "H100": (989.4e12, 494.7e12),  # SXM
  "A100": (312e12, 156e12),
  "L40S": (362e12, 183e12),
  "L40": (181e12, 90.5e12),
  "L4": (121e12, 60e12),
  "V100": (125e12, 15.7e12),  # fp16 tensor cores; no bf16
  "T4": (65e12, 8.1e12),  # fp16 tensor cores; no bf16
  "TPU v3": (61.5e12, 61.5e12),  # per TensorCore (123 per chip)
  "TPU v4": (275e12, 275e12),
  "TPU v5 lite": (197e12, 197e12),  # v5e
  "TPU v5e": (197e12, 197e12),
  "TPU v5p": (459e12, 459e12),
  "TPU v5": (459e12, 459e12),  # v5p reports "TPU v5"
  "TPU v6 lite": (918e12, 918e12),  # v6e (Trillium)
}


def peak_flops(device_kind: str, compute_dtype: str) -> tuple[str, float] | None:
  """`(table key, peak FLOP/s)` of a device kind (`jax.devices()[0].device_kind`), or None.

  The longest table key contained in the device kind wins ("H100 PCIe" over
  "H100"); the bf16 column for a 16-bit compute dtype, else the fp32 one.
  CPUs have no entry.
  """
  kind = device_kind.lower()
  matches = [k for k in PEAK_FLOPS if k.lower() in kind]
  if not matches:
    return None
  key = max(matches, key=len)
  low, full = PEAK_FLOPS[key]
  return key, (low if compute_dtype in ("bfloat16", "float16") else full)
