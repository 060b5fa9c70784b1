"""Tests of masking, sampling, RTD losses and the ablation objectives.

References: hand-worked cases, numpy re-computations of every loss from the
forward pass's intermediates, binomial/chi-square bounds for the random parts,
and the released Google generator configs for `generator_config`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from electra_jax import config as config_lib
from electra_jax import model as model_lib
from electra_jax import objectives
from electra_jax import pretraining as pt
from electra_jax.config import ElectraConfig
from electra_jax.errors import ElectraError

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIAL = (CLS, SEP, PAD)
CFG = ElectraConfig(
  vocab_size=40,
  embedding_size=16,
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=2,
  intermediate_size=64,
  max_position_embeddings=32,
)
LENGTH = 16
P = pt.max_predictions_per_seq(0.15, LENGTH)  # int(0.155 * 16) = 2


def _sequences(lengths, length=LENGTH, seed=0, vocab=40):
  """[CLS] tokens [SEP] padded; real tokens drawn from ids >= 4 (not special)."""
  rs = np.random.RandomState(seed)
  ids = np.zeros((len(lengths), length), np.int32)
  for i, n in enumerate(lengths):
    ids[i, 0] = CLS
    ids[i, 1 : n - 1] = rs.randint(4, vocab, size=n - 2)
    ids[i, n - 1] = SEP
  mask = (ids != PAD).astype(np.int32)
  return ids, mask


_mask_jit = jax.jit(
  pt.mask_inputs,
  static_argnames=(
    "mask_prob",
    "max_predictions",
    "mask_id",
    "special_ids",
    "replace_with_mask_prob",
    "random_token_prob",
    "vocab_size",
  ),
)


def _mask(rng, ids, mask, **kw):
  kw = {"mask_prob": 0.15, "max_predictions": P, "mask_id": MASK, "special_ids": SPECIAL, **kw}
  return _mask_jit(rng, jnp.asarray(ids), jnp.asarray(mask), **kw)


def test_max_predictions_and_generator_config_match_official_and_released():
  assert pt.max_predictions_per_seq(0.15, 128) == 19
  assert pt.max_predictions_per_seq(0.15, 512) == 79
  assert pt.max_predictions_per_seq(0.25, 512) == 130
  # The released generators are get_generator_config of their discriminators.
  for size, fraction in (("small", 1.0), ("base", 1 / 3), ("large", 0.25)):
    disc = config_lib.preset(f"{size}-discriminator")
    assert pt.generator_config(disc, fraction) == config_lib.preset(f"{size}-generator"), size
  small = pt.generator_config(config_lib.preset("small-discriminator"), 0.25)
  assert (small.hidden_size, small.num_attention_heads, small.intermediate_size) == (64, 1, 256)
  assert small.embedding_size == 128 and small.num_hidden_layers == 12
  with pytest.raises(ElectraError):
    pt.generator_config(CFG, 0.0)


def test_mask_counts_exclusions_and_consistency():
  # Real lengths (incl. CLS/SEP): round-half-even of 0.15 n, at least 1, at most P=2,
  # and never more than the candidates (n - 2).
  lengths = [16, 10, 9, 7, 3, 2, 13, 4]
  ids, mask = _sequences(lengths)
  expected = [min(P, max(1, int(np.round(0.15 * n))), n - 2) for n in lengths]
  assert expected == [2, 2, 1, 1, 1, 0, 2, 1]  # hand-worked: 0.15*9=1.35 -> 1, 0.15*10=1.5 -> 2
  ids[6, 5] = MASK  # an existing [MASK] is never chosen either
  for seed in range(20):
    out = jax.device_get(_mask(jax.random.key(seed), ids, mask))
    np.testing.assert_array_equal(out.masked_weights.sum(1), expected)
    for i in range(len(lengths)):
      used = out.masked_weights[i] > 0
      np.testing.assert_array_equal(used, np.arange(P) < expected[i])  # used slots first
      pos = out.masked_positions[i][used]
      assert len(set(pos.tolist())) == len(pos)  # distinct
      assert np.all(mask[i, pos] == 1) and not np.isin(ids[i, pos], [CLS, SEP, PAD, MASK]).any()
      np.testing.assert_array_equal(out.masked_ids[i][used], ids[i, pos])
      assert np.all(out.masked_positions[i][~used] == 0) and np.all(out.masked_ids[i][~used] == 0)
      # Only used positions change, and only to [MASK].
      changed = np.flatnonzero(out.masked_input_ids[i] != ids[i])
      assert set(changed.tolist()) <= set(pos.tolist())
      assert np.all(out.masked_input_ids[i, changed] == MASK)
    assert out.masked_positions.dtype == np.int32 and out.masked_weights.dtype == np.float32


def test_mask_85_15_split_and_uniform_positions():
  n_seq = 4000
  ids, mask = _sequences([LENGTH] * n_seq, seed=1)
  out = jax.device_get(_mask(jax.random.key(7), ids, mask))
  rows = np.repeat(np.arange(n_seq)[:, None], P, 1)
  replaced = out.masked_input_ids[rows, out.masked_positions] == MASK
  total = int(out.masked_weights.sum())
  assert total == n_seq * P
  frac = replaced.sum() / total
  sigma = np.sqrt(0.85 * 0.15 / total)
  assert abs(frac - 0.85) < 5 * sigma, frac
  # Kept positions really keep the original token.
  kept = ~replaced
  np.testing.assert_array_equal(
    out.masked_input_ids[rows, out.masked_positions][kept], ids[rows, out.masked_positions][kept]
  )
  # Every candidate position (1..14) is equally likely: chi-square test.
  counts = np.bincount(out.masked_positions.ravel(), minlength=LENGTH)
  assert counts[0] == 0 and counts[LENGTH - 1] == 0
  assert stats.chisquare(counts[1 : LENGTH - 1]).pvalue > 1e-4


def test_random_token_switch_gives_bert_80_10_10():
  n_seq = 4000
  ids, mask = _sequences([LENGTH] * n_seq, seed=2)
  out = jax.device_get(
    _mask(
      jax.random.key(3),
      ids,
      mask,
      replace_with_mask_prob=0.8,
      random_token_prob=0.1,
      vocab_size=1000,
    )
  )
  rows = np.repeat(np.arange(n_seq)[:, None], P, 1)
  new = out.masked_input_ids[rows, out.masked_positions]
  old = ids[rows, out.masked_positions]
  total = new.size
  for observed, p in (
    ((new == MASK).mean(), 0.8),
    # A random token equal to the original (prob. 1/1000) counts as kept.
    (((new != MASK) & (new != old)).mean(), 0.1 * 0.999),
    ((new == old).mean(), 0.1 + 0.1 / 1000),
  ):
    assert abs(observed - p) < 5 * np.sqrt(p * (1 - p) / total), (observed, p)
  with pytest.raises(ElectraError):
    pt.mask_inputs(
      jax.random.key(0),
      jnp.asarray(ids[:2]),
      jnp.asarray(mask[:2]),
      mask_prob=0.15,
      max_predictions=P,
      mask_id=MASK,
      special_ids=SPECIAL,
      random_token_prob=0.1,
    )


def test_gumbel_sample_follows_softmax():
  logits = jnp.log(jnp.asarray([0.5, 0.3, 0.15, 0.05]))
  draws = pt.gumbel_sample(jax.random.key(0), jnp.broadcast_to(logits, (20000, 4)))
  counts = np.bincount(np.asarray(draws), minlength=4)
  assert stats.chisquare(counts, 20000 * np.array([0.5, 0.3, 0.15, 0.05])).pvalue > 1e-4
  # Temperature -> 0 is the argmax.
  cold = pt.gumbel_sample(jax.random.key(1), jnp.broadcast_to(logits, (100, 4)), temperature=1e-4)
  assert np.all(np.asarray(cold) == 0)


def test_replace_with_samples_labels_hand_worked():
  ids = jnp.asarray([[CLS, 10, 11, 12, SEP, PAD], [CLS, 20, 21, SEP, PAD, PAD]], jnp.int32)
  positions = jnp.asarray([[2, 3], [1, 0]], jnp.int32)
  weights = jnp.asarray([[1.0, 1.0], [1.0, 0.0]])
  # Row 0: slot at 2 samples the original (11) -> label 0; slot at 3 samples 30 -> label 1.
  # Row 1: slot at 1 samples 25 -> label 1; unused slot (pos 0, sample 9) must not write.
  sampled = jnp.asarray([[11, 30], [25, 9]], jnp.int32)
  fake, labels = pt.replace_with_samples(ids, positions, weights, sampled)
  np.testing.assert_array_equal(fake, [[CLS, 10, 11, 30, SEP, PAD], [CLS, 25, 21, SEP, PAD, PAD]])
  np.testing.assert_array_equal(labels, [[0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0]])


def _model_and_params(objective, seed=0, **kw):
  model = pt.build_rtd_model(CFG, objective, generator_hidden_size=0.5, **kw)
  params = model.init(jax.random.key(seed), *pt.init_inputs(1, LENGTH, P))["params"]
  return model, nn.meta.unbox(params)


def _batch(seed=0):
  ids, mask = _sequences([16, 12, 9, 16], seed=seed)
  return {"input_ids": ids, "input_mask": mask, "segment_ids": np.zeros_like(ids)}


def _objective(name, **kw):
  return pt.ObjectiveConfig(name=name, max_predictions=P, mask_id=MASK, special_ids=SPECIAL, **kw)


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _sigmoid_ce(logits, labels):
  logits = np.asarray(logits, np.float64)
  return np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))


@pytest.mark.parametrize("objective", ["electra", "electra_15"])
def test_rtd_losses_and_metrics_match_numpy(objective):
  model, params = _model_and_params(objective)
  batch = _batch()
  obj = _objective(objective)
  rng = jax.random.key(5)
  fwd = jax.device_get(pt.rtd_forward(params, batch, rng, True, model=model, objective=obj))
  loss, metrics = jax.jit(pt.make_loss_fn(model, obj), static_argnums=3)(params, batch, rng, True)
  m = fwd["masked"]
  w = m.masked_weights
  gen_ce = -np.take_along_axis(_log_softmax(fwd["generator_logits"]), m.masked_ids[..., None], -1)[
    ..., 0
  ]
  gen_loss = (gen_ce * w).sum() / (w.sum() + 1e-6)
  gen_acc = ((fwd["generator_logits"].argmax(-1) == m.masked_ids) * w).sum() / w.sum()
  # Labels from scratch: original ids with samples at used slots, replaced where different.
  ids = batch["input_ids"]
  fake = ids.copy()
  for i, j in zip(*np.nonzero(w)):
    fake[i, m.masked_positions[i, j]] = fwd["sampled_ids"][i, j]
  np.testing.assert_array_equal(fwd["fake_ids"], fake)
  labels = (fake != ids).astype(np.int32)
  np.testing.assert_array_equal(fwd["labels"], labels)
  logits = fwd["main_outputs"]
  real = batch["input_mask"].astype(np.float64)
  if objective == "electra":
    dw = real
  else:
    dw = np.zeros_like(real)
    for i, j in zip(*np.nonzero(w)):
      dw[i, m.masked_positions[i, j]] = 1
  disc_loss = (_sigmoid_ce(logits, labels) * dw).sum() / (dw.sum() + 1e-6)
  preds = (logits > 0).astype(np.int32)
  tp = (preds * labels * real).sum()
  expected = {
    "generator_loss": gen_loss,
    "generator_accuracy": gen_acc,
    "discriminator_loss": disc_loss,
    "discriminator_accuracy": ((preds == labels) * real).sum() / real.sum(),
    "replaced_precision": tp / (preds * real).sum() if (preds * real).sum() else 0.0,
    "replaced_recall": tp / (labels * real).sum() if (labels * real).sum() else 0.0,
    "replaced_fraction": (labels * real).sum() / real.sum(),
    "sampled_replaced_fraction": ((fwd["sampled_ids"] != m.masked_ids) * w).sum() / w.sum(),
    "num_masked": w.sum(),
    "loss": gen_loss + 50.0 * disc_loss,
  }
  assert set(metrics) == set(expected)
  for key, value in expected.items():
    np.testing.assert_allclose(float(metrics[key]), value, rtol=1e-5, atol=1e-6, err_msg=key)
  assert float(loss) == pytest.approx(float(metrics["loss"]))


def test_labels_when_generator_reproduces_the_original():
  """A generator whose logits single out the true token: every sample equals the
  original, so nothing is labelled replaced and the fraction of replaced samples is 0."""
  model, params = _model_and_params("electra")
  batch = _batch(seed=3)
  # Zero every generator weight except the output bias; then the logits at every
  # masked position are the bias itself. Put +inf-like mass on one token id and
  # make the batch consist of that token.
  params = jax.tree.map(lambda x: x, params)
  gen = params["generator"]
  params["generator"] = jax.tree.map(jnp.zeros_like, gen)
  params["generator"]["generator_lm_head"]["bias"] = (
    jnp.full((CFG.vocab_size,), -1e4).at[7].set(1e4)
  )
  # LayerNorm scale 0 -> hidden 0 -> logits = bias only.
  batch["input_ids"] = np.where(batch["input_mask"] == 1, 7, 0).astype(np.int32)
  batch["input_ids"][:, 0] = CLS
  fwd = jax.device_get(
    pt.rtd_forward(
      params, batch, jax.random.key(1), True, model=model, objective=_objective("electra")
    )
  )
  assert fwd["masked"].masked_weights.sum() > 0
  assert np.all(fwd["sampled_ids"] == 7)
  assert fwd["labels"].sum() == 0
  np.testing.assert_array_equal(fwd["fake_ids"], batch["input_ids"])
  _, metrics = pt.rtd_loss_fn(
    params, batch, jax.random.key(1), True, model=model, objective=_objective("electra")
  )
  assert float(metrics["sampled_replaced_fraction"]) == 0.0
  assert float(metrics["generator_accuracy"]) == 1.0


def test_no_gradient_through_samples():
  model, params = _model_and_params("electra")
  batch = _batch()
  # Generator weight 0: the total is the discriminator loss alone, which depends
  # on the generator only through the (non-differentiable) samples.
  grad_fn = jax.jit(
    jax.grad(
      lambda p, o: pt.rtd_loss_fn(p, batch, jax.random.key(2), False, model=model, objective=o)[0]
    ),
    static_argnums=1,
  )
  grads = grad_fn(params, _objective("electra", gen_weight=0.0))
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["generator"]))
  assert (
    float(jnp.abs(grads["discriminator"]["discriminator_predictions"]["dense"]["kernel"]).max()) > 0
  )
  assert float(jnp.abs(grads["embeddings"]["word_embeddings"]["embedding"]).max()) > 0
  # And the reverse: disc weight 0 leaves the discriminator untouched.
  grads = grad_fn(params, _objective("electra", disc_weight=0.0))
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["discriminator"]))
  assert float(jnp.abs(grads["generator"]["generator_lm_head"]["bias"]).max()) > 0


def test_mlm_objective_is_the_full_size_generator_only():
  model, params = _model_and_params("mlm")
  assert set(params) == {"embeddings", "generator"}
  assert model.gen_config == CFG
  batch = _batch()
  obj = _objective("mlm")
  fwd = jax.device_get(
    pt.rtd_forward(params, batch, jax.random.key(4), True, model=model, objective=obj)
  )
  _, metrics = pt.rtd_loss_fn(params, batch, jax.random.key(4), True, model=model, objective=obj)
  m = fwd["masked"]
  ce = -np.take_along_axis(_log_softmax(fwd["generator_logits"]), m.masked_ids[..., None], -1)[
    ..., 0
  ]
  expected = (ce * m.masked_weights).sum() / (m.masked_weights.sum() + 1e-6)
  assert set(metrics) == {"loss", "generator_loss", "generator_accuracy", "num_masked"}
  np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)
  # The generator saw [MASK] at (about 85 % of) the masked positions.
  assert (fwd["masked"].masked_input_ids == MASK).sum() > 0


def test_replace_mlm_predicts_originals_from_sampled_input():
  model, params = _model_and_params("replace_mlm")
  assert "generator_lm_head" in params["discriminator"]
  batch = _batch()
  obj = _objective("replace_mlm")
  fwd = jax.device_get(
    pt.rtd_forward(params, batch, jax.random.key(6), True, model=model, objective=obj)
  )
  _, metrics = pt.rtd_loss_fn(params, batch, jax.random.key(6), True, model=model, objective=obj)
  m = fwd["masked"]
  # The main model's input has the generator's samples (not [MASK]) at the masked positions.
  rows = np.arange(4)[:, None]
  used = m.masked_weights > 0
  np.testing.assert_array_equal(
    fwd["fake_ids"][rows, m.masked_positions][used], fwd["sampled_ids"][used]
  )
  assert fwd["main_outputs"].shape == (4, P, CFG.vocab_size)
  ce = -np.take_along_axis(_log_softmax(fwd["main_outputs"]), m.masked_ids[..., None], -1)[..., 0]
  main = (ce * m.masked_weights).sum() / (m.masked_weights.sum() + 1e-6)
  np.testing.assert_allclose(float(metrics["discriminator_loss"]), main, rtol=1e-5)
  np.testing.assert_allclose(
    float(metrics["loss"]), float(metrics["generator_loss"]) + main, rtol=1e-5
  )


def test_all_tokens_mlm_copy_mechanism_matches_numpy():
  model, params = _model_and_params("all_tokens_mlm")
  batch = _batch()
  obj = _objective("all_tokens_mlm")
  fwd = jax.device_get(
    pt.rtd_forward(params, batch, jax.random.key(8), True, model=model, objective=obj)
  )
  _, metrics = pt.rtd_loss_fn(params, batch, jax.random.key(8), True, model=model, objective=obj)
  token_logits, copy_logits = fwd["main_outputs"]
  assert token_logits.shape == (4, LENGTH, CFG.vocab_size) and copy_logits.shape == (4, LENGTH)
  ids, real = batch["input_ids"], batch["input_mask"].astype(np.float64)
  d = 1 / (1 + np.exp(-np.asarray(copy_logits, np.float64)))
  soft = np.exp(_log_softmax(token_logits))
  p_label = np.take_along_axis(soft, ids[..., None], -1)[..., 0]
  p = d * (ids == fwd["fake_ids"]) + (1 - d) * p_label
  expected = (-np.log(p) * real).sum() / (real.sum() + 1e-6)
  np.testing.assert_allclose(float(metrics["discriminator_loss"]), expected, rtol=1e-5)
  # Where a token was replaced, only the softmax term remains.
  assert (ids != fwd["fake_ids"]).any()


def test_param_split_and_combine_round_trip_and_standalone_models():
  model, params = _model_and_params("electra", seed=3)
  disc = pt.discriminator_params(params)
  gen = pt.generator_params(params)
  assert set(disc) == {"electra", "discriminator_predictions"}
  assert set(disc["electra"]) == {"embeddings", "embeddings_project", "encoder"}
  assert set(gen) == {"electra", "generator_predictions", "generator_lm_head"}
  # Same tree as the standalone HF-layout models.
  standalone = model_lib.init_params(model_lib.ElectraForPreTraining(CFG), jax.random.key(0))
  assert jax.tree.structure(standalone) == jax.tree.structure(disc)
  # Standalone discriminator gives the same logits as the RTD model's.
  batch = _batch()
  ids, mask = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["input_mask"])
  rtd = model.apply(
    {"params": params}, ids, mask, jnp.zeros_like(ids), method=pt.ElectraRTD.discriminate
  )
  alone = model_lib.ElectraForPreTraining(CFG).apply({"params": disc}, ids, mask)
  np.testing.assert_allclose(np.asarray(rtd), np.asarray(alone), atol=1e-6)
  gen_model = model_lib.ElectraForMaskedLM(model.gen_config)
  positions = jnp.asarray([[1, 2]] * 4, jnp.int32)
  rtd_g = model.apply(
    {"params": params}, ids, mask, jnp.zeros_like(ids), positions, method=pt.ElectraRTD.generate
  )
  alone_g = gen_model.apply({"params": gen}, ids, mask, masked_positions=positions)
  np.testing.assert_allclose(np.asarray(rtd_g), np.asarray(alone_g), atol=1e-5)
  back = pt.combine_params(disc, gen)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ElectraError):
    pt.combine_params(disc, None)
  with pytest.raises(ElectraError):
    pt.combine_params({"discriminator_predictions": {}}, gen)


def test_scanned_layers_give_the_same_loss():
  model, params = _model_and_params("electra")
  scanned_model = pt.build_rtd_model(CFG, "electra", generator_hidden_size=0.5, scan_layers=True)
  scanned = {
    "embeddings": params["embeddings"],
    "generator": model_lib.layers_to_scan(params["generator"], CFG.num_hidden_layers),
    "discriminator": model_lib.layers_to_scan(params["discriminator"], CFG.num_hidden_layers),
  }
  obj = _objective("electra")
  a = pt.rtd_loss_fn(params, _batch(), jax.random.key(1), True, model=model, objective=obj)[0]
  b = pt.rtd_loss_fn(
    scanned, _batch(), jax.random.key(1), True, model=scanned_model, objective=obj
  )[0]
  np.testing.assert_allclose(float(a), float(b), rtol=1e-5)


def test_bad_objective_settings_raise():
  with pytest.raises(ElectraError):
    _objective("electra_50")
  with pytest.raises(ElectraError):
    _objective("electra", replace_with_mask_prob=0.95, random_token_prob=0.1)
  with pytest.raises(ElectraError):
    _objective("electra", mask_prob=0.0)
  with pytest.raises(ElectraError):
    pt.build_rtd_model(CFG, "bert")
  model, params = _model_and_params("electra")
  with pytest.raises(ElectraError):
    pt.rtd_loss_fn(
      params, _batch(), jax.random.key(0), True, model=model, objective=_objective("mlm")
    )


@pytest.mark.parametrize("name", objectives.NAMES)
def test_every_registered_objective_builds_and_trains(name):
  """A registry entry is all an objective needs: model, loss and gradients follow from it."""
  spec = objectives.get(name)
  assert (spec.main_model is None) == (spec.main_loss is None)
  model, params = _model_and_params(name)
  assert ("discriminator" in params) == spec.has_discriminator
  loss_fn = jax.value_and_grad(pt.make_loss_fn(model, _objective(name)), has_aux=True)
  (loss, metrics), grads = jax.jit(loss_fn, static_argnums=3)(
    params, _batch(), jax.random.key(3), True
  )
  assert np.isfinite(float(loss))
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  if spec.has_discriminator:
    assert {"discriminator_loss", "discriminator_accuracy"} <= set(metrics)


def test_sharded_loss_and_grads_equal_single_device():
  """The whole objective (masking, sampling, both models) under fsdp+tp on 8 devices."""
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8 (conftest.py)")
  from electra_jax import sharding

  model, params = _model_and_params("electra", seed=2)
  obj = _objective("electra")
  batch = _batch(seed=4)
  rng = jax.random.key(9)
  fn = jax.jit(jax.value_and_grad(pt.make_loss_fn(model, obj), has_aux=True), static_argnums=3)
  (loss, metrics), grads = fn(params, batch, rng, True)

  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "model": 2})
  rules = sharding.logical_axis_rules("fsdp_tp")
  abstract = jax.eval_shape(
    lambda r: model.init(r, *pt.init_inputs(1, LENGTH, P)), jax.random.key(0)
  )
  shardings = sharding.param_shardings(abstract["params"], mesh, rules)
  with sharding.mesh_context(mesh), nn.logical_axis_rules(rules):
    placed = jax.device_put(params, shardings)
    sharded_batch = sharding.shard_batch(batch, sharding.batch_sharding(mesh, rules))
    (s_loss, s_metrics), s_grads = fn(placed, sharded_batch, rng, True)
  assert float(s_metrics["num_masked"]) == float(metrics["num_masked"])
  np.testing.assert_allclose(float(s_loss), float(loss), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(s_grads)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_masked_lm_accuracy_is_the_argmax_accuracy_but_on_ties():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 11)).astype(np.float32)
  labels = rng.integers(0, 11, size=(3, 5))
  labels[0, :3] = logits[0, :3].argmax(-1)  # some right
  weights = (rng.random((3, 5)) > 0.3).astype(np.float32)
  _, acc = pt.masked_lm_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
  expected = ((logits.argmax(-1) == labels) * weights).sum() / weights.sum()
  assert float(acc) == pytest.approx(expected)
  # A tie for the maximum: the argmax would take index 2; the label 6 counts as right too.
  tie = np.zeros((1, 1, 11), np.float32)
  tie[0, 0, [2, 6]] = 3.0
  _, acc = pt.masked_lm_loss(jnp.asarray(tie), jnp.asarray([[6]]), jnp.ones((1, 1)))
  assert float(acc) == 1.0
