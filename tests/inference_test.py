"""The fast inference path: micro-batches and bucketed lengths give the plain forward's outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax import inference
from electra_jax.model import build_model, init_params


@pytest.fixture(scope="module")
def classifier(tiny_config):
  model = build_model(tiny_config, "sequence_classification", num_labels=3)
  return model, init_params(model, jax.random.key(0), length=32)


@pytest.fixture(scope="module")
def tagger(tiny_config):
  model = build_model(tiny_config, "token_classification", num_labels=5)
  return model, init_params(model, jax.random.key(1), length=32)


def _forward(model):
  def forward(params, ids, mask, types):
    return model.apply(
      {"params": params}, ids, attention_mask=mask, token_type_ids=types, deterministic=True
    )

  return forward


def _features(n, length, vocab, seed=0):
  """Rows of random lengths 2..length, padded with zeros."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(2, length + 1, size=n)
  ids = rng.integers(1, vocab, size=(n, length)).astype(np.int32)
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
  types = ((np.arange(length)[None, :] >= lengths[:, None] // 2) & (mask > 0)).astype(np.int32)
  return {"input_ids": ids * mask, "input_mask": mask, "segment_ids": types}


@pytest.mark.parametrize("batch", [1, 7, 8, 17, 40])
def test_microbatched_equals_the_plain_forward(classifier, batch):
  model, params = classifier
  f = _features(batch, 32, model.config.vocab_size)
  args = (f["input_ids"], f["input_mask"], f["segment_ids"])
  plain = jax.jit(_forward(model))(params, *args)
  # 64 tokens per chunk: 2 rows of 32, so 17 rows are 9 chunks (one padded row).
  chunked_fn = inference.microbatched(_forward(model), tokens=64)
  chunked = jax.jit(chunked_fn)(params, *args)
  assert chunked.shape == plain.shape
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(plain), rtol=1e-5, atol=1e-6)
  # The batch really is split on CPU: a loop over the chunks in the program.
  program = jax.jit(chunked_fn).lower(params, *args).as_text()
  assert ("stablehlo.while" in program) == (batch > 2)


def test_microbatched_keeps_pytree_outputs(tiny_config):
  def fn(params, x):
    return {"sum": x.sum(-1) * params, "first": (x[:, 0], x[:, :2])}

  x = jnp.arange(5 * 4, dtype=jnp.float32).reshape(5, 4)
  got = jax.jit(inference.microbatched(fn, tokens=8))(2.0, x)
  want = fn(2.0, x)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), got, want)


def test_chunk_rows():
  assert inference.chunk_rows(128) == inference.CHUNK_TOKENS // 128
  assert inference.chunk_rows(4096) == 1
  assert inference.chunk_rows(16, tokens=100) == 6


def test_batched_predict_buckets_and_keeps_the_order(classifier):
  model, params = classifier
  f = _features(37, 32, model.config.vocab_size, seed=3)
  keys = ("input_ids", "input_mask", "segment_ids")
  assert inference.length_independent(_forward(model), params, [f[k] for k in keys])
  calls = []

  def counting(params, ids, mask, types):
    calls.append(ids.shape)
    return _forward(model)(params, ids, mask, types)

  got = inference.make_batched_predict(counting, 8, keys)(params, f)
  want = jax.jit(_forward(model))(params, f["input_ids"], f["input_mask"], f["segment_ids"])
  np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-6)
  # Short rows ran at their bucket (16), long ones at 32: lengths sorted, then bucketed.
  assert {shape[1] for shape in calls if shape[0] == 8} == {16, 32}


def test_batched_predict_keeps_the_length_of_per_token_outputs(tagger):
  model, params = tagger
  f = _features(11, 32, model.config.vocab_size, seed=4)
  keys = ("input_ids", "input_mask", "segment_ids")
  assert not inference.length_independent(_forward(model), params, [f[k] for k in keys])
  got = inference.make_batched_predict(_forward(model), 4, keys)(params, f)
  want = jax.jit(_forward(model))(params, f["input_ids"], f["input_mask"], f["segment_ids"])
  assert got.shape == want.shape == (11, 32, 5)
  np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-6)


def test_batched_predict_of_nothing_is_none(classifier):
  model, params = classifier
  f = _features(1, 32, model.config.vocab_size)
  empty = {k: v[:0] for k, v in f.items()}
  keys = ("input_ids", "input_mask", "segment_ids")
  assert inference.make_batched_predict(_forward(model), 4, keys)(params, empty) is None


def test_length_independent_checks_every_bucket():
  # Outputs of width min(20, length) (the official QA head's beam) are the
  # same at 512 and 256 but not at a 16-token bucket: not length-independent.
  ids = np.zeros((2, 512), np.int32)

  def beam_like(params, ids, mask):
    return jnp.zeros((ids.shape[0], min(20, ids.shape[-1])))

  def per_sequence(params, ids, mask):
    return jnp.zeros((ids.shape[0], 3))

  assert not inference.length_independent(beam_like, {}, [ids, ids])
  assert inference.length_independent(per_sequence, {}, [ids, ids])
