"""CPU-fast forms of three computations, off unless `enable()` is called.

On XLA:CPU three pieces of the pretraining step lower to slow code, and each
has a rewrite that computes the same numbers faster
(experiments/benchmarks/README.md has the profiles):

  * `dense_dot_general`: `nn.Dense`'s matmul with a backward pass laid out for
    XLA:CPU (the kernel gradient as a plain row-major matmul); ~15 % of an
    ELECTRA-Small step.
  * `argmax_last_axis`: `jnp.argmax(x, -1)` as two plain reductions XLA:CPU
    vectorises; ~6 % (the Gumbel sampling and MLM accuracy over the vocab).
  * the unrolled `threefry2x32` lowering (JAX's default on GPU/TPU) for CPU
    too; the same random bits, ~25 % of the step. A private JAX API.

They live here, not in `model.py` / `pretraining.py` / `train.py`, so that
those read as the model and the objective; and they are switched on
explicitly, as `xla_env` is, by the CLI (`cli.main`), the benchmark scripts
and the test session (`tests/conftest.py`), because the threefry one changes
JAX globally and none of them is what a reader of the model expects by
default. Library users get plain XLA unless they call `enable()` themselves.

The model and the objective ask this module at trace time
(`dot_general_for_dense()`, `argmax()`): a hook read while tracing needs no
new field on every Linen module or on the hashable `ElectraConfig`, and adds
nothing to checkpoints or configs. So `enable()` must run before the first
trace of a function it should affect; a function already traced (and cached by
`jax.jit`) keeps what it was traced with. Enabled, the step computes exactly
what it computed when these lived in the model (same losses, bit for bit).
Disabled, the forward pass and the random bits are the same and gradients
differ at most by float rounding of the reordered matmul.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

_enabled = False


def enable() -> None:
  """Switches the CPU kernels on for everything traced from now on."""
  global _enabled
  _set_unrolled_threefry(True)
  _enabled = True


def disable() -> None:
  """Back to plain XLA (JAX's own threefry lowering on CPU); mostly for tests."""
  global _enabled
  _set_unrolled_threefry(False)
  _enabled = False


def enabled() -> bool:
  return _enabled


def dot_general_for_dense() -> Callable | None:
  """The `dot_general=` for `nn.Dense`: `dense_dot_general` when enabled.

  `None` otherwise, which makes `nn.Dense` use `lax.dot_general`.
  """
  return dense_dot_general if _enabled else None


def argmax(x: Array) -> Array:
  """`jnp.argmax(x, axis=-1)`; `argmax_last_axis` when enabled (same result)."""
  return argmax_last_axis(x) if _enabled else jnp.argmax(x, axis=-1)


@jax.custom_vjp
def _dense_matmul(x: Array, kernel: Array) -> Array:
  """`x @ kernel` over the last axis of `x`, with a backward pass laid out for XLA:CPU.

  The forward pass is the plain `dot_general` `nn.Dense` would run. In the
  backward pass XLA:CPU turns the kernel gradient `x^T @ g` (a contraction over
  the batch and length axes) into a dot with both operands transposed, which
  runs on its slow generic path (~50 GFLOP/s on one core, vs ~170 GFLOP/s for a
  plain matmul). Here the smaller of `x` and `g` is transposed explicitly and
  `optimization_barrier` keeps XLA from folding the transpose back, so the dot
  is a plain row-major matmul (on CPU only). On ELECTRA-Small this makes the
  pretraining step ~15 % faster on CPU; the result is the same product.
  """
  return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _dense_matmul_fwd(x, kernel):
  return _dense_matmul(x, kernel), (x, kernel)


def _dense_matmul_bwd(residuals, g):
  x, kernel = residuals
  dx = jax.lax.dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())))
  x2 = x.reshape(-1, x.shape[-1])
  g2 = g.reshape(-1, g.shape[-1])
  # GPU and TPU handle transposed operands well: leave the layout to XLA there.
  dk = jax.lax.platform_dependent(x2, g2, cpu=_kernel_grad_cpu, default=lambda a, b: a.T @ b)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


def _kernel_grad_cpu(x2: Array, g2: Array) -> Array:
  """`x2^T @ g2` with the smaller operand transposed up front (see `_dense_matmul`)."""
  barrier = jax.lax.optimization_barrier
  if x2.shape[1] <= g2.shape[1]:
    return barrier(x2.T) @ g2
  return barrier(barrier(g2.T) @ x2).T  # transpose g2, and the (small) result


_dense_matmul.defvjp(_dense_matmul_fwd, _dense_matmul_bwd)


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """`lax.dot_general` for `nn.Dense`, routing its standard contraction to `_dense_matmul`."""
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  standard = (
    tuple(lhs_contract) == (lhs.ndim - 1,)
    and tuple(rhs_contract) == (0,)
    and not lhs_batch
    and not rhs_batch
    and rhs.ndim == 2
    and precision is None
    and preferred_element_type is None
  )
  if standard:
    return _dense_matmul(lhs, rhs)
  return jax.lax.dot_general(
    lhs, rhs, dimension_numbers, precision=precision, preferred_element_type=preferred_element_type
  )


def argmax_last_axis(x: Array) -> Array:
  """`jnp.argmax(x, axis=-1)` for finite `x`: the first index of the maximum.

  Written as a max, then a min over the indices reaching it: two plain
  reductions that XLA:CPU vectorises and fuses with what produces `x`, where
  `argmax`'s (value, index) reduction is not vectorised. Over (B, P, vocab)
  it made the Gumbel sampling ~3x faster on CPU. (A row holding NaN gives the
  last index instead of the NaN's; the loss is NaN then anyway.)
  """
  best = jnp.max(x, axis=-1, keepdims=True)
  index = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  first = jnp.min(jnp.where(x == best, index, x.shape[-1]), axis=-1)
  return jnp.minimum(first, x.shape[-1] - 1)


def _set_unrolled_threefry(unrolled: bool) -> bool:
  """Picks JAX's CPU lowering of `threefry2x32` (its default PRNG); the bits are the same.

  On CPU, JAX lowers `threefry2x32` as a rolled 5-iteration `while` loop (to
  keep compile times short). XLA cannot fuse across that loop, so every
  dropout mask and the generator's Gumbel noise goes through full-size
  buffers written and re-read each iteration: ~25 % of an ELECTRA-Small
  pretraining step. The unrolled lowering (JAX's default on the other
  platforms) computes the same bits in one fused elementwise loop, 10-30x
  faster on CPU, at the cost of some compile time.

  Uses a private JAX API; if that moved this is a no-op.

  Returns:
    Whether the requested lowering is now registered for CPU.
  """
  try:
    from jax._src.interpreters import mlir
    from jax._src.random import threefry2x32

    if unrolled:
      mlir.register_lowering(
        threefry2x32.threefry2x32_p,
        threefry2x32._threefry2x32_lowering_rule,
        platform="cpu",
        inline=False,
      )
    else:  # as jax/_src/random/threefry2x32.py registers it
      mlir.register_lowering(
        threefry2x32.threefry2x32_p, threefry2x32._threefry2x32_cpu_lowering_rule, platform="cpu"
      )
  except (ImportError, AttributeError, TypeError):  # JAX internals moved: keep the default
    return False
  return True
