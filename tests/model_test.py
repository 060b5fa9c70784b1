"""Tests for electra_jax.model beyond HF parity (see convert_test.py for that).

Scan-over-layers against the unrolled stack, bf16 compute against the float32
HF reference, sharded execution on 8 fake CPU devices against one device,
activations against HF's `ACT2FN`, and the heads' output contracts.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_reference import (
  ALL_HEADS,
  batch,
  hf_model,
  hf_output,
  jax_output,
  require_hf,
  state_dict_numpy,
)
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from electra_jax import convert, heads
from electra_jax import model as model_lib
from electra_jax.config import ACTIVATIONS, ElectraConfig
from electra_jax.errors import ElectraError

# bf16 has an 8-bit mantissa (relative step 2**-8 ~ 0.4%); through two layers
# and the heads, errors stay well under 3% of the output's scale.
BF16_RTOL = 3e-2


@pytest.fixture(scope="module")
def tiny(tiny_config):
  """The shape these tests have always used: 4 attention heads, a 97-token vocabulary."""
  return tiny_config.replace(vocab_size=97, num_attention_heads=4)


def _from_hf(head, config_name="factorized", **overrides):
  hf = hf_model(head, config_name, seed=3, **overrides)
  hf_config = hf.config.to_dict()
  config = ElectraConfig.from_hf(hf_config)
  kwargs = convert.head_kwargs_from_hf(hf_config, head)
  params, _ = convert.hf_to_params(state_dict_numpy(hf), config, head, head_kwargs=kwargs)
  return hf, config, kwargs, params


@pytest.mark.parametrize("head", ["pretraining", "multiple_choice"])
def test_scan_layers_equals_unrolled(head, tiny):
  model = model_lib.build_model(tiny, head)
  params = model_lib.init_params(model, jax.random.key(0))
  scanned_model = model_lib.build_model(tiny, head, scan_layers=True)
  scanned = model_lib.layers_to_scan(params, tiny.num_hidden_layers)
  # The stacked layout is what the scanned module itself initialises.
  abstract = jax.eval_shape(
    lambda: scanned_model.init(jax.random.key(0), model_lib.dummy_inputs(scanned_model))
  )
  want = jax.tree.map(lambda a: a.shape, nn.meta.unbox(abstract["params"]))
  assert jax.tree.map(lambda a: a.shape, scanned) == want
  inputs = batch(head, tiny.vocab_size, seed=4)
  a = jax_output(model, params, head, inputs)
  b = jax_output(scanned_model, scanned, head, inputs)
  np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
  back = model_lib.scan_to_layers(scanned, tiny.num_hidden_layers)
  jax.tree.map(np.testing.assert_array_equal, back, params)


def test_remat_and_scan_gradients_match(tiny):
  head = "pretraining"
  model = model_lib.build_model(tiny, head)
  params = model_lib.init_params(model, jax.random.key(1))
  remat_scan = model_lib.build_model(tiny, head, scan_layers=True, remat=True)
  inputs = batch(head, tiny.vocab_size, seed=5)
  ids, mask = jnp.asarray(inputs["input_ids"]), jnp.asarray(inputs["attention_mask"])

  def loss(m, p):
    return jnp.sum(m.apply({"params": p}, ids, attention_mask=mask) ** 2)

  g = jax.grad(lambda p: loss(model, p))(params)
  g_scan = jax.grad(lambda p: loss(remat_scan, p))(
    model_lib.layers_to_scan(params, tiny.num_hidden_layers)
  )
  g_scan = model_lib.scan_to_layers(g_scan, tiny.num_hidden_layers)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), g, g_scan)


@pytest.mark.parametrize("head", ["pretraining", "masked_lm", "sequence_classification"])
def test_bf16_compute_close_to_float32_hf(head):
  hf, config, kwargs, params = _from_hf(head)
  inputs = batch(head, config.vocab_size, seed=6)
  ref = hf_output(hf, head, inputs)
  model = model_lib.build_model(config, head, dtype=jnp.bfloat16, **kwargs)
  got = jax_output(model, params, head, inputs)
  scale = float(np.max(np.abs(ref)))
  diff = float(np.max(np.abs(got - ref)))
  print(
    f"{head}: bf16 max abs diff {diff:.3g}, output scale {scale:.3g}, tolerance {BF16_RTOL * scale:.3g}"
  )
  assert diff <= BF16_RTOL * scale
  # ... and bf16 is really used: the result is not bit-identical to float32.
  f32 = jax_output(model_lib.build_model(config, head, **kwargs), params, head, inputs)
  assert np.max(np.abs(f32 - got)) > 0


def test_bf16_params_and_compute(tiny):
  model = model_lib.build_model(tiny, "pretraining", dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  params = model_lib.init_params(model, jax.random.key(0))
  assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(params))
  out = jax_output(model, params, "pretraining", batch("pretraining", tiny.vocab_size))
  assert np.all(np.isfinite(out))


# Simple data + tensor parallel rules: batch over `data`, hidden dims over `model`.
SHARDING_RULES = (
  ("batch", "data"),
  ("activation_batch", "data"),
  ("embed", "model"),
  ("mlp", "model"),
  ("joined_kv", "model"),
  ("activation_mlp", "model"),
)


@pytest.mark.parametrize("head", ["pretraining", "masked_lm", "question_answering"])
def test_sharded_forward_matches_single_device(head, tiny):
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8 (conftest.py)")
  model = model_lib.build_model(tiny, head)
  params = model_lib.init_params(model, jax.random.key(2))
  inputs = batch(head, tiny.vocab_size, batch_size=4, length=8, seed=7)
  single = jax_output(model, params, head, inputs)

  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
  param_shardings = nn.logical_to_mesh_sharding(model_lib.logical_axes(model), mesh, SHARDING_RULES)
  sharded_params = jax.device_put(params, param_shardings)
  batch_sharding = NamedSharding(mesh, P("data", None))
  arrays = {k: jax.device_put(jnp.asarray(v), batch_sharding) for k, v in inputs.items()}
  # The kernels really are split over `model`: each device holds half a (hidden, mlp) kernel.
  kernel = sharded_params["electra"]["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"]
  assert kernel.sharding.shard_shape(kernel.shape) == (
    tiny.hidden_size // 2,
    tiny.intermediate_size,
  )

  @jax.jit
  def forward(p, a):
    with nn.logical_axis_rules(SHARDING_RULES):
      out = model.apply(
        {"params": p},
        a["input_ids"],
        attention_mask=a["attention_mask"],
        token_type_ids=a["token_type_ids"],
      )
    return out.logits if head == "question_answering" else out

  with jax.set_mesh(mesh):
    out = forward(sharded_params, arrays)
  diff = float(np.max(np.abs(np.asarray(out) - single)))
  print(f"{head}: sharded (4x2 mesh) vs single device max abs diff {diff:.3g}")
  assert diff <= 1e-5


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_hf(name):
  torch, _ = require_hf()
  from transformers.activations import ACT2FN

  x = np.linspace(-6, 6, 241, dtype=np.float32)
  ref = ACT2FN[name](torch.tensor(x)).numpy()
  got = np.asarray(model_lib.activation_fn(name)(jnp.asarray(x)))
  np.testing.assert_allclose(got, ref, atol=2e-6, rtol=0)


def test_dropout_only_when_not_deterministic(tiny):
  config = tiny.replace(hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)
  model = model_lib.build_model(config, "sequence_classification", num_labels=3)
  params = model_lib.init_params(model, jax.random.key(0))
  ids = jnp.asarray(batch(None, config.vocab_size)["input_ids"])
  a = model.apply({"params": params}, ids, deterministic=True)
  b = model.apply({"params": params}, ids, deterministic=True)
  np.testing.assert_array_equal(a, b)
  c = model.apply({"params": params}, ids, deterministic=False, rngs={"dropout": jax.random.key(1)})
  assert np.max(np.abs(np.asarray(c) - np.asarray(a))) > 1e-3


def test_masked_positions_select_rows_of_full_logits(tiny):
  model = model_lib.build_model(tiny, "masked_lm")
  params = model_lib.init_params(model, jax.random.key(0))
  ids = jnp.asarray(batch(None, tiny.vocab_size, batch_size=2)["input_ids"])
  full = model.apply({"params": params}, ids)
  positions = jnp.array([[0, 3, 5], [1, 1, 8]])
  part = model.apply({"params": params}, ids, masked_positions=positions)
  assert part.shape == (2, 3, tiny.vocab_size)
  want = np.take_along_axis(np.asarray(full), np.asarray(positions)[..., None], axis=1)
  np.testing.assert_allclose(part, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("head", ALL_HEADS, ids=str)
def test_output_shapes(head, tiny):
  kwargs = {"num_labels": 5} if head in heads.LABELED_HEADS else {}
  model = model_lib.build_model(tiny, head, **kwargs)
  params = model_lib.init_params(model, jax.random.key(0))
  inputs = batch(head, tiny.vocab_size, batch_size=2, length=7, choices=4)
  out = jax_output(model, params, head, inputs)
  want = {
    None: (2, 7, tiny.hidden_size),
    "pretraining": (2, 7),
    "masked_lm": (2, 7, tiny.vocab_size),
    "sequence_classification": (2, 5),
    "sequence_classification_official": (2, 5),
    "question_answering": (2, 7, 2),
    "question_answering_official": (2, 7),  # the start beam: min(beam_size 20, length 7)
    "token_classification": (2, 7, 5),
    "multiple_choice": (2, 4),
  }[head]
  assert out.shape == want


def test_official_head_is_cls_dropout_and_one_glorot_dense(tiny):
  """finetune/classification: dropout(0.1) on [CLS] → tf.layers.dense(num_labels); no pooler."""
  model = model_lib.build_model(tiny, "sequence_classification_official", num_labels=3)
  params = model_lib.init_params(model, jax.random.key(0))
  head = jax.tree.map(np.shape, params["task_specific"])
  assert head == {"dense": {"kernel": (tiny.hidden_size, 3), "bias": (3,)}}
  assert set(params) == {"electra", "task_specific"}
  kernel = np.asarray(params["task_specific"]["dense"]["kernel"])
  limit = np.sqrt(6 / (tiny.hidden_size + 3))  # Glorot uniform, TF's dense default
  assert np.all(np.abs(kernel) <= limit) and np.abs(kernel).max() > 0.5 * limit
  assert not np.any(params["task_specific"]["dense"]["bias"])
  ids = np.asarray(batch(None, tiny.vocab_size)["input_ids"])
  hidden = model_lib.build_model(tiny, None).apply({"params": params["electra"]}, ids)
  logits = model.apply({"params": params}, ids)
  want = np.asarray(hidden)[:, 0] @ kernel + np.asarray(params["task_specific"]["dense"]["bias"])
  np.testing.assert_allclose(np.asarray(logits), want, atol=1e-5)
  # Dropout on [CLS] only when training.
  train = model.apply(
    {"params": params}, ids, deterministic=False, rngs={"dropout": jax.random.key(1)}
  )
  assert not np.allclose(np.asarray(train), np.asarray(logits))


def test_official_head_refuses_hf_export(tiny):
  from electra_jax import convert

  model = model_lib.build_model(tiny, "sequence_classification_official", num_labels=2)
  params = model_lib.init_params(model, jax.random.key(0))
  with pytest.raises(ElectraError, match="no HF transformers equivalent.*--config.head=hf"):
    convert.params_to_hf(params, tiny, "sequence_classification_official")


def test_regression_head_has_one_output(tiny):
  model = model_lib.build_model(tiny, "sequence_classification", num_labels=1)
  params = model_lib.init_params(model, jax.random.key(0))
  out = jax_output(model, params, "sequence_classification", batch(None, tiny.vocab_size))
  assert out.shape == (3, 1)
