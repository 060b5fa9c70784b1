"""Tests for electra_jax.pretrained: from_pretrained / save_pretrained and bad input."""

import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_reference import batch, hf_model, hf_output, jax_output, require_hf, save_bin

import electra_jax
from electra_jax import model as model_lib
from electra_jax import pretrained, trees
from electra_jax.errors import ElectraError

PARITY_ATOL = 1e-5


@pytest.fixture(scope="module")
def hf_cls_dir(tmp_path_factory):
  """A HF sequence-classification directory with 3 named labels and a vocab.txt."""
  hf = hf_model(
    "sequence_classification",
    "factorized",
    seed=5,
    id2label={0: "neg", 1: "neutral", 2: "pos"},
    label2id={"neg": 0, "neutral": 1, "pos": 2},
  )
  path = tmp_path_factory.mktemp("hf") / "cls"
  hf.save_pretrained(path)
  (path / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
  return hf, path


def _tree_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_from_pretrained_hf_dir_matches_transformers(hf_cls_dir):
  hf, path = hf_cls_dir
  model, params = electra_jax.from_pretrained(path)
  assert isinstance(model, electra_jax.ElectraForSequenceClassification)
  assert model.num_labels == 3
  inputs = batch("sequence_classification", 99)
  diff = np.max(
    np.abs(
      jax_output(model, params, "sequence_classification", inputs)
      - hf_output(hf, "sequence_classification", inputs)
    )
  )
  print(f"from_pretrained(HF dir) max abs diff {diff:.3g}")
  assert diff <= PARITY_ATOL
  assert all(
    isinstance(leaf, jax.Array) and leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params)
  )


def test_from_pretrained_reads_pytorch_bin(tmp_path):
  hf = hf_model("question_answering", "square", seed=6)
  save_bin(hf, tmp_path)
  assert not (tmp_path / "model.safetensors").exists()
  model, params = electra_jax.from_pretrained(tmp_path)
  inputs = batch("question_answering", 101, type_vocab_size=3)
  diff = np.max(
    np.abs(
      jax_output(model, params, "question_answering", inputs)
      - hf_output(hf, "question_answering", inputs)
    )
  )
  assert diff <= PARITY_ATOL


def test_save_then_load_electra_jax_checkpoint(hf_cls_dir, tmp_path):
  hf, path = hf_cls_dir
  model, params = electra_jax.from_pretrained(path)
  ckpt = pretrained.load_hf(path)
  out = electra_jax.save_pretrained(
    tmp_path / "ej",
    model.config,
    params,
    head="sequence_classification",
    head_kwargs={"num_labels": 3},
    tokenizer_dir=path,
    extra=ckpt.extra,
  )
  assert sorted(os.listdir(out)) == ["electra_jax.json", "params", "vocab.txt"]
  meta = json.loads((tmp_path / "ej" / "electra_jax.json").read_text())
  assert meta["format"] == "electra-jax" and meta["version"] == 1
  assert meta["head"] == "sequence_classification"
  assert meta["head_kwargs"] == {"num_labels": 3}
  assert meta["extra"]["id2label"] == {"0": "neg", "1": "neutral", "2": "pos"}
  assert meta["config"] == model.config.to_dict()
  model2, params2 = electra_jax.from_pretrained(out)
  assert model2 == model
  _tree_equal(params2, params)


def test_save_pretrained_gathers_sharded_params(tmp_path):
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices (conftest.py sets XLA_FLAGS)")
  import flax.linen as nn
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P

  config = electra_jax.ElectraConfig.from_hf(hf_model("pretraining", "square").config.to_dict())
  model = model_lib.build_model(config, "pretraining")
  params = model_lib.init_params(model, jax.random.key(0))
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
  word = params["electra"]["embeddings"]["word_embeddings"]["embedding"]
  sharded = dict(params)
  sharded["electra"] = dict(params["electra"])
  sharded["electra"]["embeddings"] = {
    **params["electra"]["embeddings"],
    "word_embeddings": {
      "embedding": jax.device_put(word[:96], NamedSharding(mesh, P("data", "model")))
    },
  }
  with pytest.raises(ElectraError, match=r"shape mismatch.*word_embeddings"):
    electra_jax.save_pretrained(tmp_path / "bad", config, sharded, head="pretraining")
  assert not (tmp_path / "bad").exists()  # nothing half-written
  # Tensor-parallel layout: hidden dims split over `model`, as in training.
  rules = (("embed", "model"), ("mlp", "model"), ("joined_kv", "model"))
  shardings = nn.logical_to_mesh_sharding(model_lib.logical_axes(model), mesh, rules)
  sharded = jax.device_put(params, shardings)
  kernel = sharded["electra"]["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"]
  assert kernel.sharding.shard_shape(kernel.shape) != kernel.shape
  electra_jax.save_pretrained(tmp_path / "ok", config, sharded, head="pretraining")
  _, restored = electra_jax.from_pretrained(tmp_path / "ok")
  assert all(len(leaf.sharding.device_set) == 1 for leaf in jax.tree.leaves(restored))
  _tree_equal(restored, params)


def test_scan_layers_from_pretrained(hf_cls_dir):
  _, path = hf_cls_dir
  model, params = electra_jax.from_pretrained(path)
  smodel, sparams = electra_jax.from_pretrained(path, scan_layers=True)
  assert trees.is_scanned(sparams)
  inputs = batch("sequence_classification", 99)
  np.testing.assert_allclose(
    jax_output(smodel, sparams, "sequence_classification", inputs),
    jax_output(model, params, "sequence_classification", inputs),
    atol=1e-6,
    rtol=0,
  )


def test_save_pretrained_accepts_scanned_params(hf_cls_dir, tmp_path):
  _, path = hf_cls_dir
  model, params = electra_jax.from_pretrained(path)
  _, sparams = electra_jax.from_pretrained(path, scan_layers=True)
  electra_jax.save_pretrained(
    tmp_path / "ej",
    model.config,
    sparams,
    head="sequence_classification",
    head_kwargs={"num_labels": 3},
  )
  _, loaded = electra_jax.from_pretrained(tmp_path / "ej")
  _tree_equal(loaded, params)


def test_dtypes(hf_cls_dir):
  _, path = hf_cls_dir
  model, params = electra_jax.from_pretrained(path, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  assert model.dtype == jnp.bfloat16
  assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(params))


def test_head_mismatch_initialises_missing_head_params(tmp_path, caplog):
  hf = hf_model("pretraining", "factorized", seed=7)
  hf.save_pretrained(tmp_path)
  _, disc = electra_jax.from_pretrained(tmp_path)
  with caplog.at_level(logging.INFO, logger="electra_jax.pretrained"):
    model, params = electra_jax.from_pretrained(
      tmp_path, head="sequence_classification", num_labels=4
    )
  assert "initialised them afresh" in caplog.text and "classifier/out_proj/kernel" in caplog.text
  # Dropping the discriminator head is what asking for a new head means: not a warning.
  (dropped,) = [r for r in caplog.records if "dropped 4 weights" in r.getMessage()]
  assert dropped.levelno == logging.INFO
  assert params["classifier"]["out_proj"]["kernel"].shape == (32, 4)
  _tree_equal(params["electra"], disc["electra"])
  out = jax_output(model, params, "sequence_classification", batch(None, 99))
  assert out.shape == (3, 4) and np.all(np.isfinite(out))
  with pytest.raises(ElectraError, match="does not match head 'sequence_classification'"):
    electra_jax.from_pretrained(tmp_path, head="sequence_classification", strict=True)


def test_unused_weights_of_the_checkpoints_own_head_are_a_warning(tmp_path, caplog):
  # config.json names a classifier but the weights are a discriminator's: a real mismatch.
  hf_model("pretraining", "factorized", seed=7).save_pretrained(tmp_path)
  config = json.loads((tmp_path / "config.json").read_text())
  config["architectures"] = ["ElectraForSequenceClassification"]
  (tmp_path / "config.json").write_text(json.dumps(config))
  for head in ("auto", "sequence_classification"):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="electra_jax.pretrained"):
      electra_jax.from_pretrained(tmp_path, head=head)
    (dropped,) = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped.levelno == logging.WARNING, head


def test_bare_encoder_from_a_head_checkpoint(hf_cls_dir):
  _, path = hf_cls_dir
  _, params = electra_jax.from_pretrained(path)
  model, enc = electra_jax.from_pretrained(path, head=None)
  assert isinstance(model, electra_jax.ElectraModel)
  _tree_equal(enc, params["electra"])


def test_electra_jax_checkpoint_head_change_and_num_labels(hf_cls_dir, tmp_path, caplog):
  _, path = hf_cls_dir
  model, params = electra_jax.from_pretrained(path)
  out = electra_jax.save_pretrained(
    tmp_path / "ej",
    model.config,
    params,
    head="sequence_classification",
    head_kwargs={"num_labels": 3},
  )
  with caplog.at_level(logging.INFO, logger="electra_jax.pretrained"):
    m2, p2 = electra_jax.from_pretrained(out, num_labels=5)
  assert m2.num_labels == 5 and p2["classifier"]["out_proj"]["kernel"].shape == (32, 5)
  # The same-shaped classifier.dense is kept; only out_proj is re-initialised.
  np.testing.assert_array_equal(
    p2["classifier"]["dense"]["kernel"], params["classifier"]["dense"]["kernel"]
  )
  assert "out_proj" in caplog.text
  # Asked for (num_labels=5): the normal new-head message, not a warning.
  assert all(r.levelno == logging.INFO for r in caplog.records if "afresh" in r.getMessage())
  m3, p3 = electra_jax.from_pretrained(out, head="token_classification", num_labels=2)
  assert isinstance(m3, electra_jax.ElectraForTokenClassification)
  _tree_equal(p3["electra"], params["electra"])


def test_save_pretrained_refuses_non_empty_dir(hf_cls_dir, tmp_path):
  _, path = hf_cls_dir
  model, params = electra_jax.from_pretrained(path)
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "x").write_text("x")
  with pytest.raises(ElectraError, match="already exists and is not empty"):
    electra_jax.save_pretrained(
      tmp_path / "taken",
      model.config,
      params,
      head="sequence_classification",
      head_kwargs={"num_labels": 3},
    )


# -- bad input: one-line errors that say what to do -------------------------------


def _one_line(excinfo):
  msg = str(excinfo.value)
  assert "\n" not in msg and len(msg) < 600
  return msg


def test_missing_path(tmp_path):
  with pytest.raises(ElectraError, match="does not exist") as e:
    electra_jax.from_pretrained(tmp_path / "nope")
  assert "HF model directory or an electra-jax checkpoint" in _one_line(e)


def test_directory_without_config(tmp_path):
  (tmp_path / "model.safetensors").write_bytes(b"")
  with pytest.raises(ElectraError, match="no config.json or electra_jax.json") as e:
    electra_jax.from_pretrained(tmp_path)
  _one_line(e)


def test_config_without_weights(hf_cls_dir, tmp_path):
  _, path = hf_cls_dir
  (tmp_path / "config.json").write_text((path / "config.json").read_text())
  with pytest.raises(ElectraError, match="no model.safetensors or pytorch_model.bin") as e:
    electra_jax.from_pretrained(tmp_path)
  _one_line(e)


def test_unknown_activation(hf_cls_dir, tmp_path):
  _, path = hf_cls_dir
  cfg = json.loads((path / "config.json").read_text())
  cfg["hidden_act"] = "swiglu_magic"
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  os.symlink(path / "model.safetensors", tmp_path / "model.safetensors")
  with pytest.raises(
    ElectraError, match="unsupported hidden_act 'swiglu_magic': use one of gelu"
  ) as e:
    electra_jax.from_pretrained(tmp_path)
  _one_line(e)


def test_shape_mismatch_between_config_and_weights(hf_cls_dir, tmp_path):
  _, path = hf_cls_dir
  cfg = json.loads((path / "config.json").read_text())
  cfg["intermediate_size"] = 40
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  os.symlink(path / "model.safetensors", tmp_path / "model.safetensors")
  with pytest.raises(
    ElectraError, match=r"shape mismatch between config and weights.*intermediate\.dense"
  ) as e:
    electra_jax.from_pretrained(tmp_path)
  assert "config.json belongs to these weights" in _one_line(e)


def test_unsupported_position_embedding(hf_cls_dir, tmp_path):
  _, path = hf_cls_dir
  cfg = json.loads((path / "config.json").read_text())
  cfg["position_embedding_type"] = "relative_key"
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  os.symlink(path / "model.safetensors", tmp_path / "model.safetensors")
  with pytest.raises(
    ElectraError, match="position_embedding_type='relative_key' is not supported"
  ) as e:
    electra_jax.from_pretrained(tmp_path)
  _one_line(e)


def test_bad_checkpoint_version(hf_cls_dir, tmp_path):
  _, path = hf_cls_dir
  model, params = electra_jax.from_pretrained(path)
  out = electra_jax.save_pretrained(
    tmp_path / "ej",
    model.config,
    params,
    head="sequence_classification",
    head_kwargs={"num_labels": 3},
  )
  meta_file = os.path.join(out, "electra_jax.json")
  meta = json.loads(open(meta_file).read())
  meta["version"] = 99
  with open(meta_file, "w") as f:
    json.dump(meta, f)
  with pytest.raises(
    ElectraError, match="format version 99; this electra-jax reads version 1"
  ) as e:
    electra_jax.from_pretrained(out)
  _one_line(e)


def test_unknown_head(hf_cls_dir):
  _, path = hf_cls_dir
  with pytest.raises(ElectraError, match="unknown head 'summarization'"):
    electra_jax.from_pretrained(path, head="summarization")


def test_import_is_lazy():
  code = "import sys, electra_jax; print('jax' in sys.modules, callable(electra_jax.ElectraConfig))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_bf16_hf_checkpoint(fmt, tmp_path):
  torch, _ = require_hf()
  hf = hf_model("pretraining", "factorized", seed=9).to(torch.bfloat16)
  if fmt == "bin":
    save_bin(hf, tmp_path)
  else:
    hf.save_pretrained(tmp_path)
  want = hf.state_dict()["electra.encoder.layer.0.output.dense.weight"].float().numpy().T
  _, params = electra_jax.from_pretrained(tmp_path)
  got = params["electra"]["encoder"]["layer_0"]["output"]["dense"]["kernel"]
  assert got.dtype == jnp.float32
  np.testing.assert_array_equal(got, want)
  model, params = electra_jax.from_pretrained(tmp_path, param_dtype=jnp.bfloat16)
  electra_jax.save_pretrained(tmp_path / "ej", model.config, params, head="pretraining")
  _, restored = electra_jax.from_pretrained(tmp_path / "ej", param_dtype=jnp.bfloat16)
  _tree_equal(restored, params)


def test_head_argument_the_head_does_not_take(hf_cls_dir):
  _, path = hf_cls_dir
  with pytest.raises(
    ElectraError, match="head 'question_answering' does not take arguments num_labels"
  ):
    electra_jax.from_pretrained(path, head="question_answering", num_labels=3)


def test_damaged_params_dir_is_a_one_line_error(hf_cls_dir, tmp_path):
  _, path = hf_cls_dir
  model, params = electra_jax.from_pretrained(path)
  out = electra_jax.save_pretrained(
    tmp_path / "ej",
    model.config,
    params,
    head="sequence_classification",
    head_kwargs={"num_labels": 3},
  )
  params_dir = os.path.join(out, "params")
  for name in os.listdir(params_dir):
    full = os.path.join(params_dir, name)
    if os.path.isdir(full):
      shutil.rmtree(full)
    else:
      os.remove(full)
  with pytest.raises(ElectraError, match="cannot restore") as e:
    electra_jax.from_pretrained(out)
  _one_line(e)
