"""Tests for `electra-jax convert` (electra_jax.cli + electra_jax.convert end to end)."""

import os

import numpy as np
import pytest
from hf_reference import batch, hf_model, hf_output, jax_output, require_hf

import electra_jax
from electra_jax import cli


def test_help_lists_convert(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["--help"])
  assert e.value.code == 0
  assert "convert" in capsys.readouterr().out


def test_convert_help_documents_flags(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["convert", "--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  for flag in ("--from-hf", "--to-hf", "--out", "--head", "masked_lm", "weights_only=True"):
    assert flag in out


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory):
  """A HF generator (ElectraForMaskedLM) directory with a vocab.txt."""
  hf = hf_model("masked_lm", "factorized", seed=11, hidden_size=16, intermediate_size=24)
  path = tmp_path_factory.mktemp("cli") / "generator"
  hf.save_pretrained(path)
  (path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
  return hf, path


def test_from_hf_then_to_hf_round_trip(generator_dir, tmp_path, capsys):
  torch, transformers = require_hf()
  hf, src = generator_dir
  ej, back = tmp_path / "ej", tmp_path / "back"
  assert cli.main(["convert", "--from-hf", str(src), "--out", str(ej)]) == 0
  assert f"wrote {ej}" in capsys.readouterr().out
  assert sorted(os.listdir(ej)) == ["electra_jax.json", "params", "vocab.txt"]

  # The converted checkpoint is the generator (masked-LM head) with HF's logits.
  model, params = electra_jax.from_pretrained(ej)
  assert isinstance(model, electra_jax.ElectraForMaskedLM)
  inputs = batch("masked_lm", 99)
  ref = hf_output(hf, "masked_lm", inputs)
  assert np.max(np.abs(jax_output(model, params, "masked_lm", inputs) - ref)) <= 1e-5

  assert cli.main(["convert", "--to-hf", str(ej), "--out", str(back)]) == 0
  assert sorted(os.listdir(back)) == ["config.json", "model.safetensors", "vocab.txt"]
  reloaded, info = transformers.ElectraForMaskedLM.from_pretrained(back, output_loading_info=True)
  assert not any(info.values()), info
  for k, v in hf.state_dict().items():
    assert torch.equal(v, reloaded.state_dict()[k]), k
  np.testing.assert_array_equal(hf_output(reloaded.eval(), "masked_lm", inputs), ref)


def test_explicit_head(generator_dir, tmp_path):
  _, src = generator_dir
  assert (
    cli.main(["convert", "--from-hf", str(src), "--head", "none", "--out", str(tmp_path / "enc")])
    == 0
  )
  model, _ = electra_jax.from_pretrained(tmp_path / "enc")
  assert isinstance(model, electra_jax.ElectraModel)


def test_wrong_head_is_a_one_line_error(generator_dir, tmp_path, capsys):
  _, src = generator_dir
  out = tmp_path / "x"
  rc = cli.main(["convert", "--from-hf", str(src), "--head", "pretraining", "--out", str(out)])
  err = capsys.readouterr().err
  assert rc == 2
  assert err.startswith("electra-jax: error: checkpoint does not match head 'pretraining'")
  assert "generator_predictions.dense.weight" in err and err.count("\n") == 1
  assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".x")]


def test_missing_source_is_a_one_line_error(tmp_path, capsys):
  rc = cli.main(["convert", "--from-hf", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
  err = capsys.readouterr().err
  assert rc == 2 and err.count("\n") == 1 and "does not exist" in err


def test_non_empty_out_is_refused(generator_dir, tmp_path, capsys):
  _, src = generator_dir
  (tmp_path / "o").mkdir()
  (tmp_path / "o" / "keep.txt").write_text("mine")
  rc = cli.main(["convert", "--from-hf", str(src), "--out", str(tmp_path / "o")])
  assert rc == 2 and "already exists and is not empty" in capsys.readouterr().err
  assert os.listdir(tmp_path / "o") == ["keep.txt"]


def test_head_with_to_hf_is_refused(tmp_path, capsys):
  rc = cli.main(
    ["convert", "--to-hf", str(tmp_path), "--head", "masked_lm", "--out", str(tmp_path / "o")]
  )
  assert rc == 2 and "--head applies to --from-hf only" in capsys.readouterr().err


def test_label_names_survive_the_round_trip(tmp_path):
  _, transformers = require_hf()
  labels = {0: "entailment", 1: "neutral", 2: "contradiction"}
  hf = hf_model(
    "sequence_classification", "square", id2label=labels, label2id={v: k for k, v in labels.items()}
  )
  hf.save_pretrained(tmp_path / "hf")
  assert (
    cli.main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "ej")]) == 0
  )
  assert (
    cli.main(["convert", "--to-hf", str(tmp_path / "ej"), "--out", str(tmp_path / "back")]) == 0
  )
  config = transformers.AutoConfig.from_pretrained(tmp_path / "back")
  assert config.id2label == labels and config.num_labels == 3
  assert config.architectures == ["ElectraForSequenceClassification"]
