"""Tests for electra_jax/tf_checkpoint.py: the TensorFlow V2 checkpoint reader and writer.

The reader is checked against a checkpoint TensorFlow itself wrote
(tests/data/tf_electra_tiny, made by tests/data/make_tf_checkpoint.py, which
also checks that TensorFlow reads what `write_checkpoint` writes); TensorFlow
is not needed here.
"""

import os
import shutil

import numpy as np
import pytest

from electra_jax import tf_checkpoint
from electra_jax.errors import ElectraError

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "tf_electra_tiny")
PREFIX = os.path.join(FIXTURE, "model.ckpt-7")


@pytest.fixture(scope="module")
def fixture_arrays():
  with np.load(os.path.join(FIXTURE, "arrays.npz")) as f:
    return {k: f[k] for k in f.files}


def test_crc32c_known_values_and_the_vectorised_path():
  assert tf_checkpoint.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
  assert tf_checkpoint.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
  assert tf_checkpoint.crc32c(b"") == 0
  rng = np.random.default_rng(0)
  for n in (64 * tf_checkpoint._LANES, 64 * tf_checkpoint._LANES + 13, 300_001):
    data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    slow = tf_checkpoint._crc_bytes(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    assert tf_checkpoint.crc32c(data) == slow


def test_reads_every_variable_tensorflow_wrote(fixture_arrays):
  ckpt = tf_checkpoint.TFCheckpoint(PREFIX)
  shapes = ckpt.shapes()
  # The model variables, an adam_m and adam_v slot for each, and global_step.
  assert len(shapes) == 3 * len(fixture_arrays) + 1
  for name, value in fixture_arrays.items():
    got = ckpt.read(name)
    assert got.dtype == np.float32 and got.shape == value.shape, name
    np.testing.assert_array_equal(got, value, err_msg=name)
    for slot in ("adam_m", "adam_v"):
      assert shapes[f"{name}/{slot}"] == value.shape
  step = ckpt.read("global_step")
  assert step.dtype == np.int64 and step.shape == () and int(step) == 7
  assert ckpt.entries["global_step"].dtype_name == "int64"


@pytest.mark.parametrize(
  "given", ["model.ckpt-7", "model.ckpt-7.index", "", "dir-without-state-file"]
)
def test_resolve_prefix_forms(given, tmp_path):
  if given == "dir-without-state-file":
    d = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, d)
    os.remove(d / "checkpoint")  # the only *.index is the one
    assert tf_checkpoint.resolve_prefix(d) == str(d / "model.ckpt-7")
  else:
    assert tf_checkpoint.resolve_prefix(os.path.join(FIXTURE, given)) == PREFIX


def test_resolve_prefix_errors(tmp_path):
  with pytest.raises(ElectraError, match="no TensorFlow checkpoint at"):
    tf_checkpoint.resolve_prefix(tmp_path / "nothing")
  with pytest.raises(ElectraError, match=r"holds no TensorFlow checkpoint \(no \*.index file\)"):
    tf_checkpoint.resolve_prefix(tmp_path)
  two = {"w": np.zeros(2, np.float32)}
  tf_checkpoint.write_checkpoint(tmp_path / "model.ckpt-1", two)
  tf_checkpoint.write_checkpoint(tmp_path / "model.ckpt-2", two)
  with pytest.raises(ElectraError, match="holds 2 checkpoints .* pass one prefix"):
    tf_checkpoint.resolve_prefix(tmp_path)
  (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-3"\n')
  with pytest.raises(ElectraError, match="names model.ckpt-3, but .* does not exist"):
    tf_checkpoint.resolve_prefix(tmp_path)
  (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-2"\n')
  assert tf_checkpoint.resolve_prefix(tmp_path) == str(tmp_path / "model.ckpt-2")


def test_write_then_read_round_trip(tmp_path):
  import ml_dtypes

  rng = np.random.default_rng(1)
  arrays = {
    "big/kernel": rng.standard_normal((600, 300)).astype(np.float32),  # the vectorised CRC
    "bf16": rng.standard_normal((3, 4)).astype(ml_dtypes.bfloat16),
    "f16": rng.standard_normal(5).astype(np.float16),
    "f64": rng.standard_normal((2, 2)),
    "i32": np.arange(7, dtype=np.int32),
    "step": np.int64(123),
    "flags": np.array([True, False]),
    "empty": np.zeros((0, 4), np.float32),
    "name/with/ünïcode": np.ones(1, np.float32),
  }
  prefix = tf_checkpoint.write_checkpoint(tmp_path / "rt", arrays)
  ckpt = tf_checkpoint.TFCheckpoint(prefix)
  assert ckpt.shapes() == {k: np.shape(v) for k, v in sorted(arrays.items())}
  for name, value in arrays.items():
    got = ckpt.read(name)
    assert got.dtype == np.asarray(value).dtype, name
    np.testing.assert_array_equal(got, value, err_msg=name)


def test_corrupt_tensor_bytes_fail_their_checksum(tmp_path):
  prefix = tf_checkpoint.write_checkpoint(
    tmp_path / "c", {"a": np.arange(4, dtype=np.float32), "b": np.ones(3, np.float32)}
  )
  data = tf_checkpoint.data_filename(prefix, 0, 1)
  raw = bytearray(open(data, "rb").read())
  raw[20] ^= 0x01  # inside "b" (a's 16 bytes come first)
  open(data, "wb").write(bytes(raw))
  ckpt = tf_checkpoint.TFCheckpoint(prefix)
  np.testing.assert_array_equal(ckpt.read("a"), np.arange(4, dtype=np.float32))
  with pytest.raises(ElectraError, match="b: checksum mismatch"):
    ckpt.read("b")
  open(data, "wb").write(bytes(raw[:18]))
  with pytest.raises(ElectraError, match="ends inside b: truncated"):
    ckpt.read("b")


def test_corrupt_or_foreign_index_is_refused(tmp_path):
  prefix = str(tmp_path / "x")
  shutil.copyfile(PREFIX + ".index", prefix + ".index")
  raw = bytearray(open(prefix + ".index", "rb").read())
  raw[100] ^= 0xFF
  open(prefix + ".index", "wb").write(bytes(raw))
  with pytest.raises(ElectraError, match="not a readable TensorFlow checkpoint index.*checksum"):
    tf_checkpoint.TFCheckpoint(prefix)
  open(prefix + ".index", "wb").write(b"not a table" * 10)
  with pytest.raises(ElectraError, match="no SSTable magic number"):
    tf_checkpoint.TFCheckpoint(prefix)


def test_unsupported_entries_are_named(tmp_path):
  ckpt = tf_checkpoint.TFCheckpoint(PREFIX)
  name = "electra/embeddings/word_embeddings"
  ckpt.entries[name] = ckpt.entries[name]._replace(dtype=7)  # DT_STRING
  with pytest.raises(ElectraError, match=f"{name} holds string values"):
    ckpt.read(name)
  ckpt.entries[name] = ckpt.entries[name]._replace(dtype=1, sliced=True)
  with pytest.raises(ElectraError, match=f"{name} is a partitioned"):
    ckpt.read(name)
  with pytest.raises(ElectraError, match="has no variable 'nope'"):
    ckpt.read("nope")
