"""electra_jax.attention: which implementation is traced, and that they compute the same attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax import attention
from electra_jax import model as model_lib
from electra_jax.errors import ElectraError


@pytest.fixture(autouse=True)
def _default_implementation(monkeypatch):
  monkeypatch.delenv(attention.ENV_VAR, raising=False)
  attention.set_implementation(None)
  yield
  attention.set_implementation(None)


@pytest.mark.parametrize(
  "requested, platform, dtype, dropout, head_dim, expected",
  [
    ("auto", "cpu", jnp.float32, False, 64, "einsum"),
    ("auto", "cpu", jnp.bfloat16, False, 64, "einsum"),
    ("auto", "tpu", jnp.bfloat16, False, 64, "einsum"),
    ("auto", "gpu", jnp.bfloat16, False, 64, "cudnn"),
    ("auto", "gpu", jnp.float16, False, 128, "cudnn"),
    ("auto", "gpu", jnp.float32, False, 64, "einsum"),  # cuDNN flash takes half precision only
    ("auto", "gpu", jnp.bfloat16, True, 64, "einsum"),  # dropout: einsum only
    ("auto", "gpu", jnp.bfloat16, False, 256, "einsum"),  # head too large for cuDNN
    ("auto", "gpu", jnp.bfloat16, False, 60, "einsum"),  # not a multiple of 8
    ("einsum", "gpu", jnp.bfloat16, False, 64, "einsum"),
    ("xla", "cpu", jnp.float32, False, 64, "xla"),
    ("xla", "cpu", jnp.float32, True, 64, "einsum"),
    ("cudnn", "cpu", jnp.float32, False, 64, "cudnn"),  # forced: attend falls back if it fails
    ("cudnn", "gpu", jnp.bfloat16, True, 64, "einsum"),
  ],
)
def test_select(requested, platform, dtype, dropout, head_dim, expected):
  got = attention.select(
    requested, platform=platform, dtype=dtype, dropout_active=dropout, head_dim=head_dim
  )
  assert got == expected


def test_requested_from_env_and_setter(monkeypatch):
  assert attention.requested() == "auto"
  monkeypatch.setenv(attention.ENV_VAR, "xla")
  assert attention.requested() == "xla"
  attention.set_implementation("einsum")
  assert attention.requested() == "einsum"
  monkeypatch.setenv(attention.ENV_VAR, "flash")
  attention.set_implementation(None)
  with pytest.raises(ElectraError, match="'flash' is not one of auto, einsum, xla, cudnn"):
    attention.requested()
  with pytest.raises(ElectraError, match="is not one of"):
    attention.set_implementation("flash")


def _qkv_and_mask(batch=3, length=16, heads=4, head_dim=64):
  rng = np.random.default_rng(0)
  q, k, v = (
    jnp.asarray(rng.normal(size=(batch, length, heads, head_dim)), jnp.float32) for _ in range(3)
  )
  lengths = np.array([length, length - 5, 3])[:batch]
  mask = np.arange(length)[None, :] < lengths[:, None]
  mask_bias = jnp.where(mask[:, None, None, :], 0.0, jnp.finfo(jnp.float32).min)
  return q, k, v, mask_bias


def test_xla_implementation_equals_einsum_on_cpu():
  q, k, v, mask_bias = _qkv_and_mask()
  reference = attention.weighted_values(attention.scores_softmax(q, k, mask_bias, jnp.float32), v)
  fused = attention.fused(q, k, v, mask_bias, "xla")
  np.testing.assert_allclose(np.asarray(fused), np.asarray(reference), rtol=1e-6, atol=1e-6)


def test_cudnn_falls_back_where_it_cannot_run():
  """On this CPU the cuDNN call is turned down while tracing: None, and the einsum path runs."""
  q, k, v, mask_bias = _qkv_and_mask()
  assert attention.fused(q, k, v, mask_bias, "cudnn") is None


@pytest.mark.parametrize("implementation", ["xla", "cudnn"])
def test_model_outputs_equal_across_implementations(tiny_config, implementation):
  model = model_lib.build_model(tiny_config, "pretraining")
  params = model_lib.init_params(model, jax.random.key(0))
  ids = jnp.asarray(np.random.default_rng(1).integers(5, tiny_config.vocab_size, (2, 12)))
  mask = jnp.asarray([[1] * 12, [1] * 7 + [0] * 5])
  rngs = {"dropout": jax.random.key(2)}

  def run(deterministic):
    fn = jax.jit(
      lambda p: model.apply({"params": p}, ids, mask, deterministic=deterministic, rngs=rngs)
    )
    return np.asarray(fn(params))

  attention.set_implementation("einsum")
  reference = {d: run(d) for d in (True, False)}
  attention.set_implementation(implementation)
  np.testing.assert_allclose(run(True), reference[True], rtol=1e-5, atol=1e-6)
  # Training with attention dropout: einsum whatever was asked, so the same numbers bit for bit.
  np.testing.assert_array_equal(run(False), reference[False])
