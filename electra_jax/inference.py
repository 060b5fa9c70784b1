"""The fast inference path: cache-sized micro-batches on CPU, bucketed lengths.

Why (issue 13, `experiments/benchmarks/README.md` has the measurements): on
XLA:CPU the per-token cost of an ELECTRA forward pass grows with the batch.
ELECTRA-Small at length 128 ran at the same tokens/s for batches of 8 and 16
and at half of it from 32 on. Two things happen past ~2,000 tokens per call:

  * XLA:CPU's YNNPACK fusion pass changes its mind: below that size each
    matmul is its own library call with the bias, GELU, softmax and
    LayerNorm in separate loop fusions; above it, the matmuls are fused with
    their elementwise consumers (and LayerNorm's reductions) into large
    `__ynn_fusion` subgraphs, which run slower on this CPU (the optimised HLO
    of batch 16 has 136 YNNPACK fusions that are plain dots, batch 32 has 61
    that swallow the epilogues);
  * the activations stop fitting in the caches (the FFN's intermediate
    activations alone are 16 MiB at 32 × 128, the L3 is 32 MiB shared, the L2 1 MiB
    per core), so the elementwise passes between the matmuls become
    memory-bound. With the fusion pass restricted to plain dots
    (`--xla_cpu_experimental_ynn_fusion_type=individual_dot`) the per-token
    CPU time still rose by 40 % from batch 8 to 128.

So a large batch is cut into micro-batches of `CHUNK_TOKENS` tokens inside
the jitted function (`microbatched`, a `lax.map` over the chunks): every
chunk compiles to the same program as a batch of that size, and the
throughput no longer falls with the batch (same outputs up to float
rounding: each row is computed alone). On GPU and TPU, which want big
batches, the function runs unchanged (`lax.platform_dependent`).

`bucket_length` pads a batch only to the next power of two
of its longest row, so short inputs do not pay for 128 or 512 positions;
`make_batched_predict` sorts rows by length so that batches are short
together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Tokens per micro-batch on CPU: ELECTRA-Small at length 128 reached its best
# per-token CPU time at 8 rows (1,024 tokens) and the same tokens/s as 16 rows.
CHUNK_TOKENS = 1024
_MIN_BUCKET = 16


def bucket_length(length: int, max_seq_length: int) -> int:
  """The padded length for a batch whose longest row has `length` tokens.

  Powers of two from 16, capped at `max_seq_length`: at most
  log2(max_seq_length / 8) compiled shapes, padding waste under 2x.
  """
  bucket = _MIN_BUCKET
  while bucket < length:
    bucket *= 2
  return min(bucket, max_seq_length)


def chunk_rows(row_tokens: int, tokens: int = CHUNK_TOKENS) -> int:
  """Rows per micro-batch for rows of `row_tokens` tokens (at least one)."""
  return max(1, tokens // max(1, row_tokens))


def microbatched(fn: Callable, tokens: int = CHUNK_TOKENS) -> Callable:
  """`fn(params, *inputs) -> outputs`, run in micro-batches of `tokens` tokens on CPU.

  Every input has the batch first; every leaf of the output pytree too. On
  CPU a batch of more than `chunk_rows` rows is padded with zero rows to a
  multiple of it, reshaped to (chunks, rows, ...), mapped with `lax.map`
  and cut back; elsewhere (or with `tokens <= 0`) `fn` runs as it is.
  Use inside `jax.jit` (the batch shape must be static).
  """
  if tokens <= 0:
    return fn

  def chunked(params, *inputs):
    b = inputs[0].shape[0]
    rows = chunk_rows(math.prod(inputs[0].shape[1:]), tokens)
    if b <= rows:
      return fn(params, *inputs)
    n = -(-b // rows)

    def split(x):
      x = jnp.pad(x, [(0, n * rows - b)] + [(0, 0)] * (x.ndim - 1))
      return x.reshape(n, rows, *x.shape[1:])

    out = jax.lax.map(lambda xs: fn(params, *xs), tuple(split(x) for x in inputs))
    return jax.tree.map(lambda y: y.reshape(n * rows, *y.shape[2:])[:b], out)

  def wrapped(params, *inputs):
    return jax.lax.platform_dependent(
      params, *inputs, cpu=chunked, default=lambda params, *inputs: fn(params, *inputs)
    )

  return wrapped


def length_independent(forward: Callable, params, inputs: Sequence[np.ndarray]) -> bool:
  """Whether `forward`'s outputs keep their shapes when the inputs' last axis is shorter.

  True for per-sequence outputs (classification logits), False for per-token
  ones (token tags, answer spans), which must keep the full length. Traced
  only (`jax.eval_shape`), nothing runs.
  """
  length = inputs[0].shape[-1]
  if length < 2 or any(x.shape[-1] != length for x in inputs):
    return False

  def shapes(n):
    args = [jax.ShapeDtypeStruct((1, *x.shape[1:-1], n), x.dtype) for x in inputs]
    out = jax.eval_shape(forward, params, *args)
    return jax.tree.map(lambda s: s.shape, out)

  # Every bucket a batch may be cut to, not just one: a head whose output
  # depends on the length only below some size (the official QA head's beam
  # is min(beam_size, length)) must not be bucketed.
  buckets = {bucket_length(1 << k, length) for k in range(length.bit_length() + 1)}
  full = shapes(length)
  return all(shapes(b) == full for b in sorted(buckets))


def make_batched_predict(
  forward: Callable, batch_size: int, keys: Sequence[str], mask_key: str = "input_mask"
) -> Callable:
  """`(params, features) -> outputs` (numpy pytree) over all rows of `features`.

  Rows go in batches of `batch_size` (the last one padded with zero rows);
  `forward(params, *[features[k] for k in keys])` is jitted with
  `microbatched`. When `mask_key` is one of `keys` and the outputs do not
  depend on the length (`length_independent`), rows are sorted by their
  number of real tokens and each batch is cut to `bucket_length` of its
  longest row; the outputs come back in the rows' order either way.
  """
  jitted = jax.jit(microbatched(forward))
  cache: dict[str, bool] = {}

  def predict(params, features: Mapping[str, np.ndarray]):
    inputs = [np.asarray(features[k]) for k in keys]
    n = len(inputs[0])
    if n == 0:
      return None
    if "bucket" not in cache:
      cache["bucket"] = mask_key in keys and length_independent(forward, params, inputs)
    full = inputs[0].shape[-1]
    if cache["bucket"]:
      mask = inputs[list(keys).index(mask_key)]
      lengths = (mask.reshape(n, -1, full) > 0).any(axis=1)
      lengths = np.where(lengths.any(axis=-1), full - np.argmax(lengths[:, ::-1], axis=-1), 1)
      order = np.argsort(lengths, kind="stable")
    else:
      order = np.arange(n)
    out = []
    for start in range(0, n, batch_size):
      rows = order[start : start + batch_size]
      m = len(rows)
      length = bucket_length(int(lengths[rows].max()), full) if cache["bucket"] else full
      chunk = [x[rows][..., :length] for x in inputs]
      if m < batch_size:  # pad to the fixed shape; padded rows are dropped below
        chunk = [
          np.concatenate([v, np.zeros((batch_size - m, *v.shape[1:]), v.dtype)]) for v in chunk
        ]
      outputs = jitted(params, *chunk)
      out.append(jax.tree.map(lambda x, m=m: np.asarray(x)[:m], outputs))
    stacked = jax.tree.map(lambda *xs: np.concatenate(xs), *out)
    inverse = np.empty(n, np.int64)
    inverse[order] = np.arange(n)
    return jax.tree.map(lambda x: x[inverse], stacked)

  return predict
