"""Tests of the optimizer chain against hand computations and optax references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from electra_jax import model as model_lib
from electra_jax import optim
from electra_jax.errors import ElectraError


@pytest.fixture(scope="module")
def config3(tiny_config):
  """Three layers: enough depth to tell the layer-wise LR scales apart."""
  return tiny_config.replace(num_hidden_layers=3)


def _classifier_params(config, scan=False):
  model = model_lib.ElectraForSequenceClassification(config, num_labels=2, scan_layers=scan)
  return model, model_lib.init_params(model, jax.random.key(0))


def _flat(tree):
  return {
    jax.tree_util.keystr(path, simple=True, separator="/"): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def test_schedule_values():
  s = optim.make_schedule(1.0, warmup_steps=10, total_steps=110)
  for step, value in ((0, 0.0), (5, 0.5), (10, 1.0), (60, 0.5), (110, 0.0), (200, 0.0)):
    assert float(s(step)) == pytest.approx(value, abs=1e-6), step
  # The official product form: (1 - step/total) * min(1, step/warmup).
  o = optim.make_schedule(2.0, warmup_steps=10, total_steps=100, official=True)
  for step in (0, 5, 10, 50, 100, 150):
    expected = 2.0 * (1 - min(step, 100) / 100) * min(1.0, step / 10)
    assert float(o(step)) == pytest.approx(expected, abs=1e-6), step
  assert float(optim.make_schedule(1.0, 0, 4)(1)) == pytest.approx(0.75)
  for bad in ((1.0, 20, 10), (1.0, -1, 10), (1.0, 0, 0)):
    with pytest.raises(ElectraError):
      optim.make_schedule(*bad)


def test_weight_decay_mask_matches_official_exclusions(config3):
  model = model_lib.ElectraForPreTraining(config3)
  params = model_lib.init_params(model, jax.random.key(0))
  mask = _flat(optim.weight_decay_mask(params))
  decayed = {k for k, v in mask.items() if v}
  # Reference: the official regexes on the TF-style names (LayerNorm/gamma,beta; dense/bias).
  expected = {
    k for k in mask if k.rsplit("/", 1)[-1] in ("kernel", "embedding") and "LayerNorm" not in k
  }
  assert decayed == expected
  assert "electra/embeddings/word_embeddings/embedding" in decayed
  assert "electra/embeddings/LayerNorm/scale" not in decayed
  assert "electra/encoder/layer_0/attention/self/query/bias" not in decayed
  mlm = model_lib.init_params(model_lib.ElectraForMaskedLM(config3), jax.random.key(0))
  mlm_mask = optim.weight_decay_mask(mlm)
  assert mlm_mask["generator_lm_head"]["bias"] is False
  assert mlm_mask["generator_predictions"]["LayerNorm"]["scale"] is False


def _expected_scales(decay, official):
  shift = 1 if official else 0
  n = 3
  return {
    "classifier": 1.0,
    "layer_2": decay ** (1 + shift),
    "layer_1": decay ** (2 + shift),
    "layer_0": decay ** (3 + shift),
    "embeddings": decay ** (n + 1 + shift),
  }


@pytest.mark.parametrize("official", [False, True])
def test_layerwise_lr_scales_for_three_layers(official, config3):
  _, params = _classifier_params(config3)
  scales = _flat(optim.per_param_lr_scale(params, 0.8, official_off_by_one=official))
  expected = _expected_scales(0.8, official)
  # Hand-worked numbers for decay 0.8, 3 layers.
  if official:
    assert expected == pytest.approx(
      {"classifier": 1, "layer_2": 0.64, "layer_1": 0.512, "layer_0": 0.4096, "embeddings": 0.32768}
    )
  else:
    assert expected == pytest.approx(
      {"classifier": 1, "layer_2": 0.8, "layer_1": 0.64, "layer_0": 0.512, "embeddings": 0.4096}
    )
  for name, value in scales.items():
    if name.startswith("classifier/"):
      key = "classifier"
    elif name.startswith("electra/encoder/"):
      key = name.split("/")[2]
    else:
      assert name.startswith(("electra/embeddings/", "electra/embeddings_project/")), name
      key = "embeddings"
    assert value == pytest.approx(expected[key]), name
  # The same multipliers, per slice, in the scanned layout.
  _, scanned = _classifier_params(config3, scan=True)
  sc = optim.per_param_lr_scale(scanned, 0.8, official_off_by_one=official)
  kernel = sc["electra"]["encoder"]["layer"]["layer"]["intermediate"]["dense"]["kernel"]
  assert kernel.shape == (3, 1, 1)
  np.testing.assert_allclose(kernel.ravel(), [expected[f"layer_{i}"] for i in range(3)], rtol=1e-6)


@pytest.mark.parametrize("official", [False, True])
def test_effective_learning_rate_per_param(official, config3):
  """One Adam step moves each param by ~lr × scale (|g| >> eps), in both layouts."""
  lr = 1e-2
  expected = _expected_scales(0.5, official)
  for scan in (False, True):
    _, params = _classifier_params(config3, scan)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
    opt = optim.make_optimizer(
      lr,
      total_steps=1000,
      warmup_steps=0,
      weight_decay=0.0,
      clip_norm=None,
      layerwise_lr_decay=0.5,
      llrd_official_off_by_one=official,
    )
    updates, _ = opt.update(grads, opt.init(params), params)
    if scan:
      updates = model_lib.scan_to_layers(updates, 3)
    for name, u in _flat(updates).items():
      if name.startswith("classifier/"):
        key = "classifier"
      elif name.startswith("electra/encoder/"):
        key = name.split("/")[2]
      else:
        key = "embeddings"
      np.testing.assert_allclose(np.abs(np.asarray(u)), lr * expected[key], rtol=1e-4, err_msg=name)


def _numpy_official(params, grads_seq, lr_fn, wd, b1=0.9, b2=0.999, eps=1e-6, clip=1.0):
  """The official AdamWeightDecayOptimizer + clip_by_global_norm, in numpy."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  for step, grads in enumerate(grads_seq):
    norm = np.sqrt(sum(np.sum(np.square(g)) for g in grads.values()))
    factor = clip / max(norm, clip)
    lr = lr_fn(step)
    for k in p:
      g = grads[k] * factor
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * g * g
      update = m[k] / (np.sqrt(v[k]) + eps)
      if "bias" not in k and "LayerNorm" not in k:
        update = update + wd * p[k]
      p[k] = p[k] - lr * update
  return p


def _tree(d):
  return {
    "dense": {"kernel": d["dense/kernel"], "bias": d["dense/bias"]},
    "LayerNorm": {"scale": d["LayerNorm/scale"]},
  }


def test_official_adam_matches_hand_computation():
  rs = np.random.RandomState(0)
  params = {
    "dense/kernel": rs.randn(3, 4).astype(np.float32),
    "dense/bias": rs.randn(4).astype(np.float32),
    "LayerNorm/scale": rs.randn(4).astype(np.float32),
  }
  grads_seq = [
    {k: rs.randn(*v.shape).astype(np.float32) * 2 for k, v in params.items()} for _ in range(4)
  ]
  opt = optim.make_optimizer(
    0.1,
    total_steps=10,
    warmup_steps=2,
    weight_decay=0.01,
    official_adam=True,
    official_schedule=True,
  )
  state = opt.init(_tree(params))
  p = jax.tree.map(jnp.asarray, _tree(params))
  for grads in grads_seq:
    updates, state = opt.update(jax.tree.map(jnp.asarray, _tree(grads)), state, p)
    p = optax.apply_updates(p, updates)
  expected = _numpy_official(
    params, grads_seq, lambda s: 0.1 * (1 - s / 10) * min(1.0, s / 2), wd=0.01
  )
  for k, v in expected.items():
    a, b = k.split("/")
    np.testing.assert_allclose(np.asarray(p[a][b]), v, rtol=1e-5, atol=1e-6, err_msg=k)
  # Without bias correction the first step is not lr-sized: |u| = lr·0.1·|g|/(sqrt(0.001)|g|).
  # (Sanity of the reference itself: it differs from bias-corrected Adam.)
  corrected = optim.make_optimizer(0.1, 10, 2, official_adam=False, official_schedule=True)
  st = corrected.init(_tree(params))
  q = jax.tree.map(jnp.asarray, _tree(params))
  for grads in grads_seq:
    u, st = corrected.update(jax.tree.map(jnp.asarray, _tree(grads)), st, q)
    q = optax.apply_updates(q, u)
  assert not np.allclose(np.asarray(q["dense"]["kernel"]), expected["dense/kernel"], rtol=1e-3)


def test_default_chain_equals_optax_adamw_reference(config3):
  _, params = _classifier_params(config3)
  rs = np.random.RandomState(1)
  grads_seq = [
    jax.tree.map(lambda p: jnp.asarray(rs.randn(*p.shape), p.dtype), params) for _ in range(3)
  ]
  schedule = optim.make_schedule(1e-3, 2, 10)
  reference = optax.chain(
    optax.clip_by_global_norm(1.0),
    optax.adamw(
      schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, mask=optim.weight_decay_mask
    ),
  )
  ours = optim.make_optimizer(1e-3, total_steps=10, warmup_steps=2)
  results = []
  for opt in (reference, ours):
    p, st = params, opt.init(params)
    for g in grads_seq:
      u, st = opt.update(g, st, p)
      p = optax.apply_updates(p, u)
    results.append(p)
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)


def test_gradient_accumulation_averages_micro_batches():
  params = {"w": jnp.asarray([1.0, -2.0, 3.0])}
  g1, g2 = {"w": jnp.asarray([0.5, 0.1, -0.3])}, {"w": jnp.asarray([0.1, 0.3, 0.7])}
  accum = optim.make_optimizer(0.1, 10, 0, grad_accum_steps=2)
  single = optim.make_optimizer(0.1, 10, 0)
  st = accum.init(params)
  u1, st = accum.update(g1, st, params)
  assert float(jnp.abs(u1["w"]).max()) == 0.0  # nothing applied mid-accumulation
  u2, st = accum.update(g2, st, params)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
  ref, _ = single.update(mean, single.init(params), params)
  np.testing.assert_allclose(np.asarray(u2["w"]), np.asarray(ref["w"]), rtol=1e-6)


def test_bad_settings_raise(config3):
  _, params = _classifier_params(config3)
  with pytest.raises(ElectraError):
    optim.per_param_lr_scale(params, 1.5)
  with pytest.raises(ElectraError):
    optim.per_param_lr_scale(params, 0.8, num_layers=2)  # has layer_2
  with pytest.raises(ElectraError):
    optim.per_param_lr_scale({"dense": {"kernel": jnp.zeros(2)}}, 0.8)
  with pytest.raises(ElectraError):
    optim.make_optimizer(1e-3, 10, 0, grad_accum_steps=0)
  opt = optim.make_optimizer(1e-3, 10, 0, layerwise_lr_decay=0.8, num_layers=2)
  with pytest.raises(ElectraError):
    opt.init(params)


# -- the official fine-tuning optimizer, ported from google-research/electra --------


def _official_layer_lrs(names, learning_rate, layer_decay, n_layers):
  """`model/optimization.py::_get_layer_lrs`: a rate per key, matched by substring of the name."""
  key_to_depths = {"/embeddings/": 0, "/embeddings_project/": 0, "task_specific/": n_layers + 2}
  for layer in range(n_layers):
    key_to_depths[f"encoder/layer_{layer}/"] = layer + 1
  rates = {}
  for name in names:
    tf_name = name if name.startswith("electra/") else "task_specific/" + name  # the head's scope
    hits = [k for k in key_to_depths if k in tf_name]
    assert len(hits) == 1, (name, hits)  # official: ValueError when no key matches
    rates[name] = learning_rate * layer_decay ** (n_layers + 2 - key_to_depths[hits[0]])
  return rates


def _official_updates(params, grads_per_step, *, lr, total, warmup, decay, n_layers, wd):
  """A numpy port of `create_optimizer` + `AdamWeightDecayOptimizer` (float64)."""
  import re

  params = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in params.items()}
  v = {k: np.zeros_like(p) for k, p in params.items()}
  for global_step, grads in enumerate(grads_per_step):
    # tf.clip_by_global_norm(grads, 1.0)
    norm = np.sqrt(sum(np.sum(np.square(g)) for g in grads.values()))
    grads = {k: g * 1.0 / max(norm, 1.0) for k, g in grads.items()}
    # polynomial_decay(power=1, end 0) * min(1, step / warmup), warmup a float
    rate = lr * (1 - min(global_step, total) / total) * min(1.0, global_step / warmup)
    layer_rates = _official_layer_lrs(params, rate, decay, n_layers)
    for k in params:
      m[k] = 0.9 * m[k] + 0.1 * grads[k]
      v[k] = 0.999 * v[k] + 0.001 * np.square(grads[k])
      update = m[k] / (np.sqrt(v[k]) + 1e-6)
      if not any(re.search(p, k) for p in ("LayerNorm", "layer_norm", "bias")):
        update = update + wd * params[k]
      params[k] = params[k] - layer_rates[k] * update
  return params


def test_official_recipe_optimizer_matches_a_port_of_the_official_code(tiny_config):
  """Clip 1.0 → Adam without bias correction → decoupled decay → official layer rates → product schedule."""
  n = tiny_config.num_hidden_layers
  _, params = _classifier_params(tiny_config)
  total, warmup_fraction, lr, decay, wd = 10, 0.25, 3e-3, 0.8, 0.01
  warmup = total * warmup_fraction  # a float (2.5) in the official code
  optimizer = optim.make_optimizer(
    learning_rate=lr,
    total_steps=total,
    warmup_steps=warmup,
    weight_decay=wd,
    official_adam=True,
    official_schedule=True,
    layerwise_lr_decay=decay,
    num_layers=n,
    llrd_official_off_by_one=True,
  )
  rng = np.random.default_rng(0)
  steps = [
    jax.tree.map(lambda p: rng.normal(0, 0.3, np.shape(p)).astype(np.float32), params)
    for _ in range(4)
  ]
  state, ours = optimizer.init(params), params
  for grads in steps:
    updates, state = optimizer.update(grads, state, ours)
    ours = optax.apply_updates(ours, updates)
  expected = _official_updates(
    _flat(params),
    [_flat(g) for g in steps],
    lr=lr,
    total=total,
    warmup=warmup,
    decay=decay,
    n_layers=n,
    wd=wd,
  )
  got = _flat(ours)
  assert set(got) == set(expected)
  moved = 0
  for name, value in expected.items():
    np.testing.assert_allclose(np.asarray(got[name]), value, rtol=0, atol=1e-6, err_msg=name)
    moved += not np.allclose(value, _flat(params)[name])
  assert moved == len(expected)  # every param was updated (step 0 has rate 0, the others not)
