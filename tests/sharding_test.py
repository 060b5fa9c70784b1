"""Tests of mesh construction, rule presets and placement on 8 fake CPU devices."""

import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from electra_jax import model as model_lib
from electra_jax import sharding
from electra_jax.errors import ElectraError

MESHES = {
  "dp": {"data": -1},
  "fsdp": {"data": 2, "fsdp": 4},
  "fsdp_tp": {"data": 2, "fsdp": 2, "model": 2},
}


def _need8():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8 (conftest.py)")


def _abstract(model):
  return jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32)), jax.random.key(0))[
    "params"
  ]


def test_make_mesh_shapes_and_errors():
  _need8()
  assert dict(sharding.make_mesh({"data": -1}).shape) == {"data": 8, "fsdp": 1, "model": 1}
  assert dict(sharding.make_mesh({"data": 2, "fsdp": -1}).shape) == {
    "data": 2,
    "fsdp": 4,
    "model": 1,
  }
  one = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  assert one.devices.size == 1
  for bad in ({"data": 3}, {"batch": 8}, {"data": -1, "model": -1}, {"data": 0, "model": 8}):
    with pytest.raises(ElectraError):
      sharding.make_mesh(bad)


@pytest.mark.parametrize("scan", [False, True])
def test_rules_cover_every_logical_name_of_the_model(scan, tiny_config):
  names = set()
  for head in ("pretraining", "masked_lm", "sequence_classification"):
    model = model_lib.build_model(tiny_config, head, scan_layers=scan)
    for spec in jax.tree.leaves(model_lib.logical_axes(model), is_leaf=lambda x: isinstance(x, P)):
      names.update(n for n in spec if n is not None)
  names.update(model_lib.ACTIVATION_AXES + ("activation_mlp", "batch"))
  for preset in sharding.PRESETS:
    covered = {name for name, _ in sharding.logical_axis_rules(preset)}
    assert names <= covered, (preset, names - covered)
  with pytest.raises(ElectraError):
    sharding.logical_axis_rules("tp_only")


def test_param_shardings_per_preset(tiny_config):
  _need8()
  model = model_lib.build_model(tiny_config, "pretraining")
  abstract = _abstract(model)
  expected = {
    # preset: (word_embeddings spec, intermediate kernel spec, shard shape of that kernel)
    "dp": (P(None, None), P(None, None), (32, 64)),
    "fsdp": (P(None, "fsdp"), P("fsdp", None), (8, 64)),
    "fsdp_tp": (P("model", "fsdp"), P("fsdp", "model"), (16, 32)),
  }
  for preset, (emb_spec, kernel_spec, kernel_shard) in expected.items():
    mesh = sharding.make_mesh(MESHES[preset])
    shardings = sharding.param_shardings(abstract, mesh, sharding.logical_axis_rules(preset))
    emb = shardings["electra"]["embeddings"]["word_embeddings"]["embedding"]
    kernel = shardings["electra"]["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"]
    assert emb.spec == emb_spec, preset
    assert kernel.spec == kernel_spec, preset
    assert kernel.shard_shape((32, 64)) == kernel_shard, preset
    # LayerNorm params are never split.
    ln = shardings["electra"]["embeddings"]["LayerNorm"]["scale"]
    assert ln.spec == P(None)
    # The same result from the logical PartitionSpecs (no shapes needed here).
    from_specs = sharding.param_shardings(
      model_lib.logical_axes(model), mesh, sharding.logical_axis_rules(preset)
    )
    assert jax.tree.map(lambda s: s.spec, from_specs) == jax.tree.map(lambda s: s.spec, shardings)


def test_scanned_layers_axis_is_not_sharded(tiny_config):
  _need8()
  model = model_lib.build_model(tiny_config, "pretraining", scan_layers=True)
  mesh = sharding.make_mesh(MESHES["fsdp_tp"])
  shardings = sharding.param_shardings(
    _abstract(model), mesh, sharding.logical_axis_rules("fsdp_tp")
  )
  kernel = shardings["electra"]["encoder"]["layer"]["layer"]["intermediate"]["dense"]["kernel"]
  assert kernel.spec == P(None, "fsdp", "model")


def test_non_divisible_dimension_is_replicated_with_a_warning(caplog, tiny_config):
  _need8()
  odd = tiny_config.replace(vocab_size=63)
  model = model_lib.build_model(odd, "masked_lm")
  mesh = sharding.make_mesh(MESHES["fsdp_tp"])
  with caplog.at_level(logging.WARNING, logger="electra_jax.sharding"):
    shardings = sharding.param_shardings(
      _abstract(model), mesh, sharding.logical_axis_rules("fsdp_tp")
    )
  assert shardings["electra"]["embeddings"]["word_embeddings"]["embedding"].spec == P(None, "fsdp")
  assert shardings["generator_lm_head"]["bias"].spec == P(None)
  assert "word_embeddings" in caplog.text and "(63, 16)" in caplog.text
  # Placement then works (it would raise with the vocab split 2 ways).
  params = model_lib.init_params(model, jax.random.key(0))
  jax.device_put(params, shardings)


@pytest.mark.parametrize("preset", sharding.PRESETS)
def test_sharded_forward_equals_single_device(preset, tiny_config):
  _need8()
  model = model_lib.build_model(tiny_config, "pretraining")
  params = model_lib.init_params(model, jax.random.key(1))
  rs = np.random.RandomState(0)
  batch = {
    "input_ids": rs.randint(0, tiny_config.vocab_size, size=(8, 8)).astype(np.int32),
    "attention_mask": (np.arange(8)[None, :] < rs.randint(3, 9, size=(8, 1))).astype(np.int32),
  }

  def forward(p, b):
    return model.apply({"params": p}, b["input_ids"], attention_mask=b["attention_mask"])

  single = np.asarray(jax.jit(forward)(params, batch))

  mesh = sharding.make_mesh(MESHES[preset])
  rules = sharding.logical_axis_rules(preset)
  shardings = sharding.param_shardings(_abstract(model), mesh, rules)
  with sharding.mesh_context(mesh), nn.logical_axis_rules(rules):
    placed = jax.device_put(params, shardings)
    arrays = sharding.shard_batch(batch, sharding.batch_sharding(mesh, rules))
    # Batch split over every data-parallel device: 8 ways, or 4 when `model` takes 2.
    per_device = 2 if preset == "fsdp_tp" else 1
    assert arrays["input_ids"].sharding.shard_shape((8, 8)) == (per_device, 8)
    out = jax.jit(forward)(placed, arrays)
  np.testing.assert_allclose(np.asarray(out), single, atol=1e-5, rtol=1e-5)


def test_shard_batch_errors_and_shapes():
  _need8()
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2})
  rules = sharding.logical_axis_rules("fsdp")
  bs = sharding.batch_sharding(mesh, rules)
  assert bs.spec == P(("data", "fsdp"))
  out = sharding.shard_batch({"x": np.arange(16 * 3).reshape(16, 3)}, bs)
  assert out["x"].shape == (16, 3) and out["x"].sharding.shard_shape((16, 3)) == (2, 3)
  np.testing.assert_array_equal(np.asarray(out["x"]), np.arange(48).reshape(16, 3))
  with pytest.raises(ElectraError, match="not divisible"):
    sharding.shard_batch({"x": np.zeros((12, 3))}, bs)
  with pytest.raises(ElectraError, match="scalar"):
    sharding.shard_batch({"x": np.zeros(())}, bs)


def test_maybe_initialize_distributed(monkeypatch):
  assert sharding.maybe_initialize_distributed(None) is False
  assert sharding.maybe_initialize_distributed({"distributed": False}) is False
  calls = []

  def failing(**kwargs):
    calls.append(kwargs)
    raise RuntimeError("connection refused\nlong details")

  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", failing)
  cfg = {
    "distributed": True,
    "coordinator_address": "10.0.0.1:1234",
    "num_processes": 2,
    "process_id": 1,
  }
  with pytest.raises(ElectraError, match="connection refused") as info:
    sharding.maybe_initialize_distributed(cfg)
  assert "\n" not in str(info.value)
  assert calls == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}]
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  assert sharding.maybe_initialize_distributed({"distributed": True}) is True
  assert calls[-1] == {}
  # The pretraining config's defaults mean "detect": nothing is passed on.
  defaults = {"distributed": True, "coordinator_address": "", "num_processes": 0, "process_id": -1}
  assert sharding.maybe_initialize_distributed(defaults) is True
  assert calls[-1] == {}
  assert sharding.maybe_initialize_distributed({**defaults, "process_id": 0}) is True
  assert calls[-1] == {"process_id": 0}
