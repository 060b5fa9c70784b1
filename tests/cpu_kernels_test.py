"""electra_jax.cpu_kernels: each kernel against the plain JAX it replaces, and the switch.

The test session runs with the kernels on (conftest.py, as the CLI does); the
`plain_xla` fixture turns them off for one test and back on after it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax import cpu_kernels
from electra_jax import model as model_lib


@pytest.fixture
def plain_xla():
  cpu_kernels.disable()
  yield
  cpu_kernels.enable()


@pytest.mark.parametrize("features", [3, 24])  # narrower and wider than the 7 inputs: both branches
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dense_matmul_gradients_match_plain_dot(features, dtype):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 5, 7)), dtype)
  kernel = jnp.asarray(rng.standard_normal((7, features)), dtype)
  cot = jnp.asarray(rng.standard_normal((2, 5, features)), dtype)
  dims = (((2,), (0,)), ((), ()))

  def loss(dot_general):
    return lambda x, k: jnp.sum(dot_general(x, k, dims).astype(jnp.float32) * cot)

  ours = jax.jit(jax.value_and_grad(loss(cpu_kernels.dense_dot_general), argnums=(0, 1)))(x, kernel)
  ref = jax.jit(jax.value_and_grad(loss(jax.lax.dot_general), argnums=(0, 1)))(x, kernel)
  tol = 1e-5 if dtype == jnp.float32 else 3e-2
  for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(
      np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol, atol=tol
    )


def test_dense_dot_general_passes_other_contractions_through():
  x = jnp.arange(24.0).reshape(2, 3, 4)
  kernel = jnp.arange(12.0).reshape(3, 4)
  dims = (((1, 2), (0, 1)), ((), ()))  # not nn.Dense's contraction: plain lax.dot_general
  np.testing.assert_array_equal(
    cpu_kernels.dense_dot_general(x, kernel, dims), jax.lax.dot_general(x, kernel, dims)
  )


def test_argmax_last_axis_is_jnp_argmax_with_ties():
  # Small integers make ties common: the first index of the maximum must win.
  x = jnp.asarray(np.random.default_rng(0).integers(0, 4, size=(5, 3, 11)), jnp.float32)
  want = jnp.argmax(x, axis=-1)
  np.testing.assert_array_equal(cpu_kernels.argmax_last_axis(x), want)
  np.testing.assert_array_equal(jax.jit(cpu_kernels.argmax_last_axis)(x), want)
  np.testing.assert_array_equal(cpu_kernels.argmax(x), want)


def _model_loss_and_jaxpr(config):
  model = model_lib.build_model(config, "pretraining")
  params = model_lib.init_params(model, jax.random.key(0))
  ids = jnp.asarray(np.random.default_rng(0).integers(0, config.vocab_size, (2, 7)), jnp.int32)

  def loss(params):
    return jnp.sum(model.apply({"params": params}, ids) ** 2)

  grad = jax.value_and_grad(loss)
  return jax.jit(grad)(params), str(jax.make_jaxpr(grad)(params))


def test_model_dense_layers_follow_the_switch(tiny_config):
  assert cpu_kernels.enabled()
  (on_loss, on_grads), on_jaxpr = _model_loss_and_jaxpr(tiny_config)
  assert "custom_vjp" in on_jaxpr
  cpu_kernels.disable()
  try:
    assert cpu_kernels.dot_general_for_dense() is None
    (off_loss, off_grads), off_jaxpr = _model_loss_and_jaxpr(tiny_config)
  finally:
    cpu_kernels.enable()
  assert "custom_vjp" not in off_jaxpr
  # Same forward pass; the reordered kernel-gradient matmul may round differently.
  assert on_loss == off_loss
  for on, off in zip(jax.tree.leaves(on_grads), jax.tree.leaves(off_grads)):
    np.testing.assert_allclose(on, off, rtol=1e-5, atol=1e-6)


def _threefry_hlo_and_bits():
  key = jax.random.key(3)

  def bits(key):  # a new function each call, so nothing cached is reused
    return jax.random.bits(key, (4, 33))

  return jax.jit(bits).lower(key).as_text(), np.asarray(jax.jit(bits)(key))


def test_unrolled_threefry_keeps_the_bits(plain_xla):
  rolled_hlo, rolled_bits = _threefry_hlo_and_bits()
  cpu_kernels.enable()
  unrolled_hlo, unrolled_bits = _threefry_hlo_and_bits()
  assert "stablehlo.while" in rolled_hlo
  assert "stablehlo.while" not in unrolled_hlo
  np.testing.assert_array_equal(unrolled_bits, rolled_bits)


def test_argmax_without_kernels_is_jnp_argmax(plain_xla):
  x = jnp.asarray([[0.0, 2.0, 2.0], [5.0, 1.0, 5.0]])
  assert "argmax" in str(jax.make_jaxpr(cpu_kernels.argmax)(x))
  np.testing.assert_array_equal(cpu_kernels.argmax(x), [1, 0])
