"""Tests for electra_jax.hf_files: reading HF weight files safely, atomic output dirs."""

import os

import numpy as np
import pytest
from hf_reference import hf_model, require_hf, save_bin, state_dict_numpy

from electra_jax import hf_files
from electra_jax.errors import ElectraError


def test_bin_is_read_like_safetensors(tmp_path):
  hf = hf_model("pretraining", "factorized")
  hf.save_pretrained(tmp_path / "st")
  save_bin(hf, tmp_path / "bin")
  a = hf_files.load_hf_state_dict(tmp_path / "st")
  b = hf_files.load_hf_state_dict(tmp_path / "bin")
  b = {k: v for k, v in b.items() if k not in ("electra.embeddings.position_ids",)}
  assert set(a) <= set(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_safetensors_preferred_over_bin(tmp_path):
  torch, _ = require_hf()
  hf = hf_model("pretraining", "factorized")
  hf.save_pretrained(tmp_path)
  sd = {k: torch.zeros_like(v) for k, v in hf.state_dict().items()}
  torch.save(sd, tmp_path / "pytorch_model.bin")
  loaded = hf_files.load_hf_state_dict(tmp_path)
  assert np.abs(loaded["electra.embeddings.word_embeddings.weight"]).max() > 0


def test_sharded_safetensors_are_read(tmp_path):
  hf = hf_model("pretraining", "factorized")
  hf.save_pretrained(tmp_path, max_shard_size="20KB")
  assert (tmp_path / "model.safetensors.index.json").exists()
  loaded = hf_files.load_hf_state_dict(tmp_path)
  ref = state_dict_numpy(hf)
  assert set(loaded) == set(ref)


class _RunsCode:
  """A pickle payload that would create a directory when unpickled unsafely."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.makedirs, (self.marker,))


def test_pickle_that_runs_code_is_refused(tmp_path):
  torch, _ = require_hf()
  hf = hf_model("pretraining", "factorized")
  hf.config.save_pretrained(tmp_path)
  marker = str(tmp_path / "pwned")
  torch.save(
    {"electra.embeddings.word_embeddings.weight": _RunsCode(marker)}, tmp_path / "pytorch_model.bin"
  )
  with pytest.raises(ElectraError, match=r"weights_only=True") as e:
    hf_files.load_hf_state_dict(tmp_path)
  assert not os.path.exists(marker)
  assert "\n" not in str(e.value)


def test_corrupt_safetensors_is_a_one_line_error(tmp_path):
  (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
  with pytest.raises(ElectraError, match=r"cannot read .*model\.safetensors") as e:
    hf_files.load_hf_state_dict(tmp_path)
  assert "\n" not in str(e.value)


def test_staged_dir_leaves_nothing_on_failure(tmp_path):
  out = hf_files.prepare_output_dir(tmp_path / "out")
  with pytest.raises(RuntimeError):
    with hf_files.staged_dir(out) as tmp:
      open(os.path.join(tmp, "half.txt"), "w").close()
      raise RuntimeError("boom")
  assert os.listdir(tmp_path) == []
  with hf_files.staged_dir(out) as tmp:
    open(os.path.join(tmp, "done.txt"), "w").close()
  assert os.listdir(tmp_path) == ["out"] and os.listdir(out) == ["done.txt"]


def test_prepare_output_dir_refuses_taken_paths(tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(ElectraError, match="already exists and is not empty"):
    hf_files.prepare_output_dir(tmp_path / "file")
  with pytest.raises(ElectraError, match="parent directory"):
    hf_files.prepare_output_dir(tmp_path / "no" / "such")
  (tmp_path / "empty").mkdir()
  assert hf_files.prepare_output_dir(tmp_path / "empty") == str(tmp_path / "empty")


def test_tokenizer_files_copied(tmp_path):
  src, dst = tmp_path / "src", tmp_path / "dst"
  src.mkdir()
  dst.mkdir()
  for name in (
    "vocab.txt",
    "tokenizer_config.json",
    "spiece.model",
    "model.safetensors",
    "notes.md",
  ):
    (src / name).write_text(name)
  assert hf_files.copy_tokenizer_files(src, str(dst)) == [
    "spiece.model",
    "tokenizer_config.json",
    "vocab.txt",
  ]
  assert (dst / "vocab.txt").read_text() == "vocab.txt"
