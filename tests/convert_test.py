"""Tests for electra_jax.convert: parity with HF PyTorch, round trips, strictness."""

import logging
import os

import numpy as np
import pytest
from hf_reference import (
  HEADS,
  HF_CLASS,
  batch,
  hf_model,
  hf_output,
  jax_output,
  require_hf,
  state_dict_numpy,
)

from electra_jax import convert, pretrained, trees
from electra_jax import model as model_lib
from electra_jax.config import ElectraConfig
from electra_jax.errors import ElectraError

torch, transformers = require_hf()

PARITY_ATOL = 1e-5  # float32, as the issue asks


def _ours(hf, head, state_dict=None, strict=True):
  """Our (model, params) from a HF model object, via the rule table."""
  hf_config = hf.config.to_dict()
  config = ElectraConfig.from_hf(hf_config)
  kwargs = convert.head_kwargs_from_hf(hf_config, head)
  sd = state_dict_numpy(hf) if state_dict is None else state_dict
  params, report = convert.hf_to_params(sd, config, head, strict=strict, head_kwargs=kwargs)
  return model_lib.build_model(config, head, **kwargs), params, config, report


@pytest.mark.parametrize("config_name", ["factorized", "square"])
@pytest.mark.parametrize("head", HEADS, ids=str)
def test_parity_with_hf(head, config_name):
  hf = hf_model(head, config_name, seed=1)
  model, params, config, _ = _ours(hf, head)
  inputs = batch(head, config.vocab_size, type_vocab_size=config.type_vocab_size, seed=2)
  ref = hf_output(hf, head, inputs)
  got = jax_output(model, params, head, inputs)
  assert got.shape == ref.shape
  diff = float(np.max(np.abs(got - ref)))
  print(f"{head} {config_name}: max abs diff vs HF = {diff:.3g} (scale {np.max(np.abs(ref)):.3g})")
  assert diff <= PARITY_ATOL


@pytest.mark.parametrize("head", HEADS, ids=str)
def test_round_trip_hf_to_jax_to_hf_is_identical(head):
  hf = hf_model(head, "factorized")
  sd = state_dict_numpy(hf)
  _, params, config, report = _ours(hf, head)
  back = convert.params_to_hf(params, config, head)
  # Everything but the tied decoder weight comes back, bit for bit.
  dropped = {k for k in sd if k.endswith("generator_lm_head.weight")}
  assert set(back) == set(sd) - dropped - set(report.skipped)
  for k, v in back.items():
    assert v.dtype == sd[k].dtype, k
    np.testing.assert_array_equal(v, sd[k], err_msg=k)


@pytest.mark.parametrize("head", HEADS, ids=str)
def test_save_hf_loads_in_transformers_without_missing_keys(head, tmp_path):
  hf = hf_model(head, "square")
  model, params, config, _ = _ours(hf, head)
  kwargs = convert.head_kwargs_from_hf(hf.config.to_dict(), head)
  out = pretrained.save_hf(tmp_path / "hf", config, params, head, head_kwargs=kwargs)
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
  reloaded, info = getattr(transformers, HF_CLASS[head]).from_pretrained(
    out, output_loading_info=True
  )
  assert not any(info.values()), info
  ref, got = hf.state_dict(), reloaded.state_dict()
  assert set(ref) == set(got)
  for k in ref:
    assert torch.equal(ref[k], got[k]), k


def test_scanned_params_export_like_unrolled(tmp_path):
  hf = hf_model("pretraining", "factorized")
  _, params, config, _ = _ours(hf, "pretraining")
  scanned = model_lib.layers_to_scan(params, config.num_hidden_layers)
  assert trees.is_scanned(scanned) and not trees.is_scanned(params)
  a = convert.params_to_hf(params, config, "pretraining")
  b = convert.params_to_hf(scanned, config, "pretraining")
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  out = pretrained.save_hf(tmp_path / "hf", config, scanned, "pretraining")
  reloaded = transformers.ElectraForPreTraining.from_pretrained(out)
  for k, v in hf.state_dict().items():
    assert torch.equal(v, reloaded.state_dict()[k]), k


def test_bare_encoder_checkpoint_loads_into_a_head():
  # A bare ElectraModel has no `electra.` prefix; its weights are the encoder of any head.
  hf = hf_model(None, "factorized")
  sd = state_dict_numpy(hf)
  config = ElectraConfig.from_hf(hf.config.to_dict())
  params, report = convert.hf_to_params(sd, config, "pretraining", strict=False)
  assert report.missing == sorted(
    [
      "discriminator_predictions/dense/bias",
      "discriminator_predictions/dense/kernel",
      "discriminator_predictions/dense_prediction/bias",
      "discriminator_predictions/dense_prediction/kernel",
    ]
  )
  np.testing.assert_array_equal(
    params["electra"]["embeddings"]["word_embeddings"]["embedding"],
    sd["embeddings.word_embeddings.weight"],
  )


def test_position_ids_buffer_is_skipped():
  hf = hf_model("pretraining", "factorized")
  sd = state_dict_numpy(hf)
  sd["electra.embeddings.position_ids"] = np.arange(40)[None]
  _, _, _, report = _ours(hf, "pretraining", state_dict=sd)
  assert report.skipped == ["electra.embeddings.position_ids"]


def test_unmapped_key_aborts_with_its_name():
  hf = hf_model("pretraining", "factorized")
  sd = state_dict_numpy(hf)
  sd["electra.encoder.layer.0.attention.self.rotary.weight"] = np.zeros(3, np.float32)
  with pytest.raises(ElectraError, match=r"match no conversion rule.*rotary\.weight"):
    _ours(hf, "pretraining", state_dict=sd)


def test_missing_key_aborts_with_its_name():
  hf = hf_model("sequence_classification", "factorized")
  sd = state_dict_numpy(hf)
  del sd["electra.encoder.layer.1.output.dense.bias"]
  with pytest.raises(ElectraError, match=r"encoder/layer_1/output/dense/bias"):
    _ours(hf, "sequence_classification", state_dict=sd)
  sd = state_dict_numpy(hf)
  del sd["classifier.out_proj.weight"]
  with pytest.raises(ElectraError, match=r"missing params: classifier/out_proj/kernel"):
    _ours(hf, "sequence_classification", state_dict=sd)


def test_misshaped_key_aborts_with_shapes():
  hf = hf_model("pretraining", "factorized")
  sd = state_dict_numpy(hf)
  sd["electra.encoder.layer.0.intermediate.dense.weight"] = np.zeros((36, 32), np.float32)
  with pytest.raises(
    ElectraError, match=r"shape mismatch.*intermediate\.dense\.weight \(36, 32\).*\(37, 32\)"
  ):
    _ours(hf, "pretraining", state_dict=sd)


def test_extra_layer_aborts():
  hf = hf_model("pretraining", "factorized", num_hidden_layers=3)
  sd = state_dict_numpy(hf)
  config = ElectraConfig.from_hf(hf.config.to_dict()).replace(num_hidden_layers=2)
  with pytest.raises(ElectraError, match=r"encoder weights the config does not describe.*layer\.2"):
    convert.hf_to_params(sd, config, "pretraining")


def test_other_heads_keys_abort_when_strict():
  hf = hf_model("pretraining", "factorized")
  sd = state_dict_numpy(hf)
  config = ElectraConfig.from_hf(hf.config.to_dict())
  with pytest.raises(ElectraError, match=r"does not match head 'sequence_classification'"):
    convert.hf_to_params(sd, config, "sequence_classification")
  params, report = convert.hf_to_params(sd, config, "sequence_classification", strict=False)
  assert all(k.startswith("discriminator_predictions.") for k in report.unexpected)
  assert len(report.unexpected) == 4
  assert all(p.startswith("classifier/") for p in report.missing)


def test_tied_decoder_weight_is_checked_and_dropped(caplog):
  hf = hf_model("masked_lm", "factorized")
  sd = state_dict_numpy(hf)
  # Older checkpoints store the tied decoder weight explicitly.
  sd["generator_lm_head.weight"] = sd["electra.embeddings.word_embeddings.weight"].copy()
  _, _, _, report = _ours(hf, "masked_lm", state_dict=sd)
  assert "generator_lm_head.weight" in report.skipped
  assert "differs from the word embeddings" not in caplog.text
  sd["generator_lm_head.weight"] = sd["generator_lm_head.weight"] + 1.0
  with caplog.at_level(logging.WARNING, logger="electra_jax.convert"):
    _ours(hf, "masked_lm", state_dict=sd)
  assert "differs from the word embeddings" in caplog.text
  sd["generator_lm_head.weight"] = np.zeros((5, 16), np.float32)
  with pytest.raises(ElectraError, match=r"generator_lm_head\.weight has shape"):
    _ours(hf, "masked_lm", state_dict=sd)


@pytest.mark.parametrize("head", HEADS, ids=str)
def test_detect_head_from_architectures_and_keys(head):
  hf = hf_model(head, "factorized")
  keys = hf.state_dict().keys()
  assert convert.detect_head({"architectures": [HF_CLASS[head]]}) == head
  assert convert.detect_head({}, keys) == head


def test_detect_head_refuses_unknown_architecture():
  with pytest.raises(ElectraError, match="unsupported architecture 'ElectraForCausalLM'"):
    convert.detect_head({"architectures": ["ElectraForCausalLM"]})


def test_generator_checkpoint_converts_to_masked_lm(tmp_path):
  hf = hf_model("masked_lm", "factorized", hidden_size=16, intermediate_size=20)
  hf.save_pretrained(tmp_path / "gen")
  ckpt = pretrained.load_hf(tmp_path / "gen")
  assert ckpt.head == "masked_lm"
  assert "generator_lm_head" in ckpt.params
