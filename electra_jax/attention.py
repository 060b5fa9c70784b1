"""The core of self-attention — scores, padding mask, softmax, dropout, weighted sum — and who computes it.

`ElectraSelfAttention` (model.py) projects the queries, keys and values and
hands them here. Three implementations compute the same function:

  * `einsum`: two einsums around a float32 softmax, with attention-probability
    dropout (`model.ElectraSelfAttention` applies it). The reference, and the
    only one with dropout, so every training step with attention dropout on
    uses it.
  * `xla`: `jax.nn.dot_product_attention(implementation="xla")`, JAX's own
    composition of the same ops (float32 softmax too); on CPU it gives the
    einsum path's numbers (tests/attention_test.py).
  * `cudnn`: `jax.nn.dot_product_attention(implementation="cudnn")`, cuDNN's
    fused flash attention on NVIDIA GPUs: bfloat16/float16 inputs only, no
    dropout, head size a multiple of 8 up to 128. It never materialises the
    (batch, heads, length, length) probabilities.

`select` picks one at trace time. The default, `auto`, takes cuDNN where it
can run (a GPU, no dropout, half-precision compute, a head size it takes) and
the einsum path everywhere else, so CPU and TPU programs are what they were.
If cuDNN turns the call down when it is traced (no cuDNN, an old version, a
shape it does not take), `attend` falls back to the einsum path and logs it
once. The `ELECTRA_JAX_ATTENTION` environment variable (`auto`, `einsum`,
`xla`, `cudnn`) or `set_implementation` overrides the choice for everything
traced afterwards; a forced `xla`/`cudnn` still uses einsum where dropout is
active, since neither implements it.
"""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp

from electra_jax.errors import ElectraError

log = logging.getLogger(__name__)

Array = jax.Array

IMPLEMENTATIONS = ("auto", "einsum", "xla", "cudnn")
ENV_VAR = "ELECTRA_JAX_ATTENTION"
_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))

_requested: str | None = None  # None: read ENV_VAR (default auto)
_warned: set[str] = set()


def set_implementation(name: str | None) -> None:
  """Overrides `ELECTRA_JAX_ATTENTION` for everything traced from now on (None: back to it)."""
  if name is not None:
    _check(name)
  global _requested
  _requested = name


def requested() -> str:
  """The implementation asked for: `set_implementation`'s, else `$ELECTRA_JAX_ATTENTION`, else auto."""
  name = _requested if _requested is not None else os.environ.get(ENV_VAR, "auto") or "auto"
  return _check(name)


def _check(name: str) -> str:
  if name not in IMPLEMENTATIONS:
    raise ElectraError(
      f"attention implementation {name!r} is not one of {', '.join(IMPLEMENTATIONS)}"
    )
  return name


def select(
  requested_name: str, *, platform: str, dtype, dropout_active: bool, head_dim: int
) -> str:
  """The implementation to trace: `einsum`, `xla` or `cudnn`.

  Args:
    requested_name: one of `IMPLEMENTATIONS`.
    platform: the backend the program runs on (`jax.default_backend()`).
    dtype: the compute dtype of the queries, keys and values.
    dropout_active: attention-probability dropout applies (training with a
      non-zero rate); only the einsum path has it.
    head_dim: size of one head.
  """
  name = _check(requested_name)
  if dropout_active or name == "einsum":
    return "einsum"
  if name in ("xla", "cudnn"):
    return name
  cudnn_ok = (
    platform in ("gpu", "cuda")
    and jnp.dtype(dtype) in _HALF
    and head_dim % 8 == 0
    and head_dim <= 128
  )
  return "cudnn" if cudnn_ok else "einsum"


def scores_softmax(q: Array, k: Array, mask_bias: Array, dtype) -> Array:
  """The einsum path up to the probabilities: softmax(q·k / √d + mask) in float32, cast to `dtype`.

  Args:
    q, k: (batch, length, heads, head_dim).
    mask_bias: additive mask broadcastable to (batch, heads, length, length):
      0 where attended, a very negative float32 where padded.
    dtype: the compute dtype the probabilities are returned in.
  """
  head_dim = q.shape[-1]
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim).astype(dtype)
  # Softmax in float32 whatever the compute dtype: bf16 softmax loses mass.
  scores = scores.astype(jnp.float32) + mask_bias
  return jax.nn.softmax(scores, axis=-1).astype(dtype)


def weighted_values(probs: Array, v: Array) -> Array:
  """The einsum path's last step: (batch, heads, q, k) probabilities × (batch, k, heads, d) values."""
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def fused(q: Array, k: Array, v: Array, mask_bias: Array, implementation: str) -> Array | None:
  """`jax.nn.dot_product_attention` with `implementation` (`xla` or `cudnn`), no dropout.

  Returns (batch, length, heads, head_dim), or None when cuDNN turned the
  call down while it was traced (the caller then takes the einsum path).
  """
  if implementation == "xla":
    # The additive float32 mask as the einsum path adds it: the same softmax input.
    return jax.nn.dot_product_attention(q, k, v, bias=mask_bias, implementation="xla")
  b, length = q.shape[0], q.shape[1]
  # cuDNN takes a (batch, 1, q, k) mask; it turns it into its own large negative bias.
  mask = jnp.broadcast_to(mask_bias >= 0, (b, 1, length, k.shape[1]))
  try:
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
  except (ValueError, RuntimeError, NotImplementedError, TypeError) as e:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    if reason not in _warned:
      _warned.add(reason)
      log.info("cuDNN attention not available (%s): using the einsum path", reason)
    return None
