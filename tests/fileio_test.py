"""Tests for `fileio` and for the modes of what each output writer leaves.

Temp files and dirs are private (0600 / 0700) and a rename keeps the mode; each
writer that publishes through one must leave what a plain `open` / `mkdir`
would: 0644 / 0755 under umask 022, and less under a stricter umask.
"""

import json
import os
import stat
import tempfile

import pytest

from electra_jax import fileio

SAMPLE_DIR = os.path.join(os.path.dirname(fileio.__file__), "sample_data")


@pytest.fixture
def umask():
  """Sets the process umask for one test (`umask(0o027)`) and restores it."""
  old = os.umask(0o022)

  def set_to(mask):
    os.umask(mask)
    return mask

  set_to(0o022)
  yield set_to
  os.umask(old)


def _mode(path) -> int:
  return stat.S_IMODE(os.lstat(path).st_mode)


def _tree_modes(root) -> dict[str, int]:
  """`{relative path: mode}` of `root` itself and everything under it."""
  out = {".": _mode(root)}
  for parent, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(parent, name)
      out[os.path.relpath(path, root)] = _mode(path)
  return out


def _assert_usual_modes(root, file_mode=0o644, dir_mode=0o755):
  if os.path.isfile(root):
    assert _mode(root) == file_mode, f"{root}: {oct(_mode(root))}"
    return
  wrong = {
    rel: oct(m)
    for rel, m in _tree_modes(root).items()
    if m != (dir_mode if os.path.isdir(os.path.join(root, rel)) else file_mode)
  }
  assert not wrong, f"unexpected modes under {root}: {wrong}"


# -- the helper -------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_current_umask_reads_without_changing_it(umask, mask):
  umask(mask)
  assert fileio.current_umask() == mask
  assert fileio.file_mode() == 0o666 & ~mask and fileio.dir_mode() == 0o777 & ~mask
  assert os.umask(mask) == mask  # unchanged by the read


def test_current_umask_fallback_without_proc(umask, monkeypatch):
  def no_proc(*args, **kwargs):
    raise OSError("no /proc here")

  umask(0o027)
  monkeypatch.setattr(fileio, "open", no_proc, raising=False)
  assert fileio.current_umask() == 0o027
  assert os.umask(0o027) == 0o027


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_write_modes_follow_umask(umask, tmp_path, mask, expected):
  umask(mask)
  text = fileio.atomic_write_text(tmp_path / "a.txt", "héllo\n")
  data = fileio.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
  assert open(text, encoding="utf-8").read() == "héllo\n"
  assert open(data, "rb").read() == b"\x00\x01"
  assert _mode(text) == _mode(data) == expected
  assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.bin"]  # no temp files left


def test_atomic_writer_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
  path = tmp_path / "out.tsv"
  path.write_text("old\n")
  with pytest.raises(RuntimeError), fileio.atomic_writer(path, newline="") as f:
    f.write("half a\r\nfile")
    raise RuntimeError("killed")
  assert path.read_text() == "old\n"
  assert os.listdir(tmp_path) == ["out.tsv"]
  with fileio.atomic_writer(path, newline="") as f:
    f.write("a\r\nb\n")
  assert path.read_bytes() == b"a\r\nb\n"  # newline="" writes line ends untranslated


def test_atomic_writer_refuses_other_modes(tmp_path):
  with pytest.raises(ValueError), fileio.atomic_writer(tmp_path / "x", "a"):
    pass


def test_fix_tree_permissions_on_a_staged_dir(umask, tmp_path):
  umask(0o027)
  outside = tmp_path / "outside.txt"
  outside.write_text("x")
  os.chmod(outside, 0o600)
  staged = tempfile.mkdtemp(dir=tmp_path)
  os.makedirs(os.path.join(staged, "sub", "deeper"))
  os.chmod(os.path.join(staged, "sub"), 0o700)
  fd, _ = tempfile.mkstemp(dir=os.path.join(staged, "sub", "deeper"))
  os.close(fd)
  open(os.path.join(staged, "plain.json"), "w").close()
  os.symlink(outside, os.path.join(staged, "link"))
  fileio.fix_tree_permissions(staged)
  modes = _tree_modes(staged)
  link = modes.pop("link")
  assert set(modes.values()) == {0o750, 0o640}
  assert {k for k, m in modes.items() if m == 0o750} == {".", "sub", "sub/deeper"}
  assert _mode(outside) == 0o600 and stat.S_ISLNK(os.lstat(os.path.join(staged, "link")).st_mode)
  assert link == _mode(os.path.join(staged, "link"))


# -- each output kind -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_config):
  """A tiny classifier written by `save_pretrained` under umask 022."""
  from tiny_classifier import LABELS, MAX_LEN, save_tiny

  old = os.umask(0o022)
  try:
    path = tmp_path_factory.mktemp("ckpt") / "ckpt"
    extra = {"label_map": LABELS, "task": "custom", "max_seq_length": MAX_LEN}
    return save_tiny(path, tiny_config, len(LABELS), {**extra, "text_columns": ["review"]})
  finally:
    os.umask(old)


def test_save_pretrained_modes(tiny_checkpoint):
  # What fine-tuning's seed_*/best and last/ and pretraining's final/ are.
  _assert_usual_modes(tiny_checkpoint)


def test_save_pretrained_follows_a_stricter_umask(umask, tmp_path, tiny_config):
  from tiny_classifier import save_tiny

  umask(0o077)
  _assert_usual_modes(save_tiny(tmp_path / "private", tiny_config, 2, {}), 0o600, 0o700)


def test_convert_to_hf_modes(umask, tiny_checkpoint, tmp_path):
  # Pretraining's export/ directory.
  from electra_jax import pretrained

  _assert_usual_modes(pretrained.convert_to_hf(tiny_checkpoint, tmp_path / "hf"))


def test_export_modes(umask, tiny_checkpoint, tmp_path):
  from electra_jax import export

  _assert_usual_modes(export.export_model(tiny_checkpoint, tmp_path / "served"))


def test_predict_file_modes(umask, tiny_checkpoint, tmp_path):
  from electra_jax import predict

  inputs = tmp_path / "in.jsonl"
  inputs.write_text(json.dumps({"review": "a fine film"}) + "\n")
  out = tmp_path / "predictions.jsonl"
  predict.predict_file(tiny_checkpoint, inputs, out, progress=False, log=open(os.devnull, "w"))
  _assert_usual_modes(out)


def test_train_sentencepiece_modes(umask, tmp_path):
  from electra_jax import tokenization

  out = tmp_path / "spm"
  tokenization.train_sentencepiece(
    [os.path.join(SAMPLE_DIR, "wikitext2_sample.txt")], 200, out, num_threads=1
  )
  assert "spiece.model" in os.listdir(out)
  _assert_usual_modes(out)


def test_wordpiece_save_and_prepared_data_modes(umask, tmp_path):
  from electra_jax import tokenization
  from electra_jax.input_pipeline import prepare

  tok = tokenization.load_tokenizer(os.path.join(SAMPLE_DIR, "vocab.txt"))
  tok.save(tmp_path / "tok")
  _assert_usual_modes(tmp_path / "tok")
  text = tmp_path / "corpus.txt"
  text.write_text("A first sentence here .\nAnd a second one .\n\nAnother document .\n")
  out = tmp_path / "data"
  prepare.prepare_pretraining_data(
    [str(text)], tok, 32, out, num_shards=1, num_workers=1, progress=False
  )
  _assert_usual_modes(out)


def test_label_map_modes(umask, tmp_path):
  from electra_jax.tasks import custom

  path = custom.LabelMap(labels=("neg", "pos")).save(tmp_path / "model" / "label_map.json")
  _assert_usual_modes(path)
  _assert_usual_modes(tmp_path / "model")


def test_glue_submission_modes(umask, tmp_path):
  from electra_jax.tasks import metrics

  _assert_usual_modes(metrics.write_glue_submission("sst2", [0, 1, 1], tmp_path / "glue"))
