"""PretrainingDataset: determinism, exact resume, host sharding, compatibility checks."""

import collections
import json
import os
import time

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader

from electra_jax import tokenization
from electra_jax.errors import ElectraError
from electra_jax.input_pipeline import prepare
from electra_jax.input_pipeline import pretraining_data as pd
from electra_jax.input_pipeline.loader import PretrainingDataset

SAMPLE = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  "electra_jax",
  "sample_data",
  "wikitext2_sample.txt",
)
MAX_LEN = 64


@pytest.fixture(scope="module")
def tokenizer(vocab_file):
  return tokenization.load_tokenizer(vocab_file)


@pytest.fixture(scope="module")
def data_dir(tokenizer, tmp_path_factory):
  out = tmp_path_factory.mktemp("loader") / "data"
  prepare.prepare_pretraining_data(
    [SAMPLE], tokenizer, MAX_LEN, out, num_shards=3, num_workers=1, progress=False
  )
  return out


@pytest.fixture(scope="module")
def all_examples(data_dir):
  """Every example, read straight from the shards (in source order)."""
  manifest = prepare.load_manifest(data_dir)
  records = []
  for shard in manifest["shards"]:
    reader = ArrayRecordReader(str(data_dir / shard["file"]))
    records += reader.read_all()
    reader.close()
  return pd.decode_batch(records, MAX_LEN, np.dtype(manifest["token_dtype"]))


def _rows(batches):
  """Multiset of examples (input_ids + segment_ids) in some batches."""
  rows = collections.Counter()
  for b in batches:
    for ids, seg in zip(b["input_ids"], b["segment_ids"]):
      rows[ids.tobytes() + seg.tobytes()] += 1
  return rows


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    for key in ("input_ids", "input_mask", "segment_ids"):
      np.testing.assert_array_equal(a[key], b[key])


def test_batches_have_fixed_shape_and_official_names(data_dir):
  ds = PretrainingDataset(data_dir, 16, seed=0, process_index=0, process_count=1)
  batch = next(iter(ds))
  assert set(batch) == {"input_ids", "input_mask", "segment_ids"}
  for value in batch.values():
    assert value.shape == (16, MAX_LEN) and value.dtype == np.int32
  assert ds.steps_per_epoch == ds.manifest["num_examples"] // 16


def test_same_seed_same_batches(data_dir):
  make = lambda seed: PretrainingDataset(data_dir, 8, seed, process_index=0, process_count=1)  # noqa: E731
  first = _take(iter(make(1)), 5)
  _assert_same(first, _take(iter(make(1)), 5))
  other = _take(iter(make(2)), 5)
  assert not all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, other))


def test_unshuffled_order_is_stored_order(data_dir, all_examples):
  ds = PretrainingDataset(data_dir, 4, shuffle=False, process_index=0, process_count=1)
  batch = next(iter(ds))
  for key in batch:
    np.testing.assert_array_equal(batch[key], all_examples[key][:4])


def test_one_epoch_is_a_permutation_then_reshuffled(data_dir, all_examples):
  n = len(all_examples["input_ids"])
  ds = PretrainingDataset(
    data_dir, 10, seed=5, process_index=0, process_count=1, num_epochs=2, drop_remainder=False
  )
  batches = list(ds)
  assert sum(len(b["input_ids"]) for b in batches) == 2 * n
  flat = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  epoch1 = [{k: v[:n] for k, v in flat.items()}]
  epoch2 = [{k: v[n:] for k, v in flat.items()}]
  assert _rows(epoch1) == _rows([all_examples]) == _rows(epoch2)
  assert not np.array_equal(epoch1[0]["input_ids"], epoch2[0]["input_ids"])


@pytest.mark.parametrize("consumed", [0, 3, 57])  # 57 crosses the first epoch boundary
def test_exact_resume(data_dir, consumed):
  ds = PretrainingDataset(data_dir, 16, seed=9, process_index=0, process_count=1)
  it = iter(ds)
  _take(it, consumed)
  state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
  expected = _take(it, 4)
  resumed = PretrainingDataset(data_dir, 16, seed=9, process_index=0, process_count=1)
  _assert_same(_take(resumed.iterator(state), 4), expected)
  it2 = iter(resumed)
  it2.set_state(state)
  _assert_same(_take(it2, 4), expected)
  assert consumed < 57 or ds.steps_per_epoch < 57


def test_resume_with_other_settings_is_refused(data_dir):
  it = iter(PretrainingDataset(data_dir, 16, seed=9, process_index=0, process_count=1))
  next(it)
  state = it.get_state()
  other = PretrainingDataset(data_dir, 32, seed=9, process_index=0, process_count=1)
  with pytest.raises(
    ElectraError, match="checkpoint has batch_size=16 but this run has batch_size=32"
  ):
    other.iterator(state)


@pytest.mark.parametrize("process_count", [2, 3])
def test_host_sharding_covers_every_example_once(data_dir, all_examples, process_count):
  n = len(all_examples["input_ids"])
  per_host = []
  for p in range(process_count):
    ds = PretrainingDataset(
      data_dir,
      7,
      seed=4,
      process_index=p,
      process_count=process_count,
      num_epochs=1,
      drop_remainder=False,
      even_hosts=False,
    )
    per_host.append(_rows(list(ds)))
  union = sum(per_host, collections.Counter())
  assert union == _rows([all_examples])
  assert sum(sum(c.values()) for c in per_host) == n
  # Even hosts (the default): the same count everywhere, disjoint, at most P - 1 left out.
  even = [
    list(
      PretrainingDataset(
        data_dir, 5, seed=4, process_index=p, process_count=process_count, num_epochs=1
      )
    )
    for p in range(process_count)
  ]
  assert len({len(batches) for batches in even}) == 1
  rows = [_rows(b) for b in even]
  assert sum(rows, collections.Counter()) <= _rows([all_examples])
  assert (n // process_count) // 5 == len(even[0])


def test_check_compatible(data_dir, tokenizer, tmp_path):
  ds = PretrainingDataset(data_dir, 8, process_index=0, process_count=1)
  ds.check_compatible(
    tokenizer=tokenizer, max_seq_length=MAX_LEN, max_position_embeddings=512, vocab_size=30522
  )
  (tmp_path / "vocab.txt").write_text(
    "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the"]) + "\n", encoding="utf-8"
  )
  other = tokenization.load_tokenizer(tmp_path / "vocab.txt")
  with pytest.raises(ElectraError, match="was prepared with tokenizer wordpiece-"):
    ds.check_compatible(tokenizer=other)
  with pytest.raises(ElectraError, match="max_seq_length=128 is configured"):
    ds.check_compatible(max_seq_length=128)
  with pytest.raises(ElectraError, match="more than the model's max_position_embeddings=32"):
    ds.check_compatible(max_position_embeddings=32)
  with pytest.raises(ElectraError, match="set vocab_size=30522"):
    ds.check_compatible(vocab_size=1000)


def test_bad_arguments(data_dir, tmp_path):
  with pytest.raises(ElectraError, match="no manifest.json"):
    PretrainingDataset(tmp_path, 8, process_index=0, process_count=1)
  with pytest.raises(ElectraError, match="process_index=2 is not in"):
    PretrainingDataset(data_dir, 8, process_index=2, process_count=2)
  with pytest.raises(ElectraError, match="fewer than batch_size"):
    PretrainingDataset(data_dir, 10**6, process_index=0, process_count=1)


def test_default_host_is_jax_process(data_dir):
  ds = PretrainingDataset(data_dir, 8)
  assert (ds.process_index, ds.process_count) == (0, 1)


def test_throughput(data_dir):
  """Issue target: >= 50,000 tokens/s of batches on 2 cores (we see far more)."""
  ds = PretrainingDataset(data_dir, 64, seed=0, process_index=0, process_count=1)
  it = iter(ds)
  next(it)  # thread start-up
  start = time.perf_counter()
  tokens = sum(next(it)["input_ids"].size for _ in range(50))
  rate = tokens / (time.perf_counter() - start)
  assert rate >= 50_000, rate
