"""prepare_pretraining_data: shards + manifest, determinism, errors, CLI, tfds input."""

import collections
import json
import math
import os
import time

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader

from electra_jax import cli, tokenization
from electra_jax.errors import ElectraError
from electra_jax.input_pipeline import prepare
from electra_jax.input_pipeline import pretraining_data as pd

SAMPLE = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  "electra_jax",
  "sample_data",
  "wikitext2_sample.txt",
)


@pytest.fixture(scope="module")
def tokenizer(vocab_file):
  return tokenization.load_tokenizer(vocab_file)


def _read_all(out_dir, manifest):
  records = []
  for shard in manifest["shards"]:
    reader = ArrayRecordReader(os.path.join(out_dir, shard["file"]))
    records += reader.read_all()
    reader.close()
  return records


@pytest.fixture(scope="module")
def prepared(tokenizer, tmp_path_factory):
  out = tmp_path_factory.mktemp("prep") / "data"
  manifest = prepare.prepare_pretraining_data(
    [SAMPLE], tokenizer, 64, out, seed=3, num_shards=3, num_workers=1, progress=False
  )
  return out, manifest


def test_manifest_and_examples(prepared, tokenizer):
  out, manifest = prepared
  assert json.loads((out / "manifest.json").read_text()) == manifest
  assert manifest["tokenizer"] == {
    "kind": "wordpiece",
    "fingerprint": tokenizer.fingerprint,
    "vocab_size": 30522,
    "special_ids": {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103},
  }
  assert manifest["max_seq_length"] == 64 and manifest["seed"] == 3
  counts = [s["num_examples"] for s in manifest["shards"]]
  assert sum(counts) == manifest["num_examples"] > 500
  assert max(counts) - min(counts) <= 1  # round-robin
  records = _read_all(out, manifest)
  assert len(records) == manifest["num_examples"]
  batch = pd.decode_batch(records, 64, np.dtype(manifest["token_dtype"]))
  ids, mask, seg = batch["input_ids"], batch["input_mask"], batch["segment_ids"]
  lengths = mask.sum(1)
  assert (ids[:, 0] == 101).all()
  assert (ids[np.arange(len(ids)), lengths - 1] == 102).all()
  assert ((ids == 102).sum(1) == 1 + (seg.sum(1) > 0)).all()
  assert (ids[mask == 0] == 0).all() and (seg[mask == 0] == 0).all()
  assert lengths.sum() == manifest["num_tokens"]
  # Official proportions: ~10% single-segment (more here: a document's short
  # tail is often a single sentence), ~5% short targets (< max length - a
  # sentence); check loosely so the test cannot flake.
  single = (seg.sum(1) == 0).mean()
  assert 0.07 < single < 0.3 and manifest["num_single_segment"] == (seg.sum(1) == 0).sum()
  assert (lengths == 64).mean() > 0.6
  # Every example's text comes from the corpus, in order within each segment.
  text = tokenizer.decode(ids[5][seg[5] == 0].tolist())
  assert text.split()[0] in open(SAMPLE, encoding="utf-8").read().lower()


def test_same_seed_same_bytes_any_worker_count(prepared, tokenizer, tmp_path):
  out, manifest = prepared
  again = prepare.prepare_pretraining_data(
    [SAMPLE], tokenizer, 64, tmp_path / "two", seed=3, num_shards=3, num_workers=2, progress=False
  )
  assert again["num_workers"] == 2
  assert _read_all(tmp_path / "two", again) == _read_all(out, manifest)
  other = prepare.prepare_pretraining_data(
    [SAMPLE], tokenizer, 64, tmp_path / "other", seed=4, num_shards=3, num_workers=1, progress=False
  )
  assert _read_all(tmp_path / "other", other) != _read_all(out, manifest)


def test_bad_inputs_leave_nothing(tokenizer, tmp_path):
  blank = tmp_path / "blank.txt"
  blank.write_text("\n\n   \n", encoding="utf-8")
  with pytest.raises(ElectraError, match="the corpus is empty"):
    prepare.prepare_pretraining_data([str(blank)], tokenizer, 64, tmp_path / "o", progress=False)
  with pytest.raises(ElectraError, match="exceeds the model's max_position_embeddings=512"):
    prepare.prepare_pretraining_data(
      [SAMPLE], tokenizer, 1024, tmp_path / "o", max_position_embeddings=512, progress=False
    )
  bad = tmp_path / "bad.txt"
  bad.write_bytes(b"fine\n\xff\xfe oops\n")
  with pytest.raises(
    ElectraError, match=r"bad\.txt is not UTF-8: invalid byte 0xff at byte offset 5"
  ):
    prepare.prepare_pretraining_data([str(bad)], tokenizer, 64, tmp_path / "o", progress=False)
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "x").write_text("x")
  with pytest.raises(ElectraError, match="already exists and is not empty"):
    prepare.prepare_pretraining_data([SAMPLE], tokenizer, 64, tmp_path / "full", progress=False)
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("[PAD]\n[UNK]\nthe\n", encoding="utf-8")
  with pytest.raises(ElectraError, match="lacks the special token"):
    prepare.prepare_pretraining_data([SAMPLE], str(vocab), 64, tmp_path / "o", progress=False)
  assert sorted(os.listdir(tmp_path)) == ["bad.txt", "blank.txt", "full", "vocab.txt"]


class _InterruptedSource:
  """A source that stops like a Ctrl-C halfway through the corpus."""

  def __init__(self, n_docs):
    self.n_docs = n_docs

  def describe(self):
    return {"type": "test"}

  def __iter__(self):
    for i in range(self.n_docs):
      yield [f"Sentence number {i} of a document that is long enough to count."] * 40
    raise KeyboardInterrupt


@pytest.mark.parametrize("num_workers", [1, 2])
def test_interrupt_leaves_no_finished_looking_dataset(tokenizer, tmp_path, num_workers):
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare_pretraining_data(
      [_InterruptedSource(200)],
      tokenizer,
      64,
      tmp_path / "out",
      num_workers=num_workers,
      progress=False,
    )
  assert os.listdir(tmp_path) == []


def test_overwrite_replaces_only_when_done(prepared, tokenizer, tmp_path):
  out = tmp_path / "data"
  prepare.prepare_pretraining_data(
    [SAMPLE], tokenizer, 32, out, num_shards=1, num_workers=1, progress=False
  )
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare_pretraining_data(
      [_InterruptedSource(5)], tokenizer, 64, out, overwrite=True, progress=False
    )
  assert prepare.load_manifest(out)["max_seq_length"] == 32  # old data intact
  manifest = prepare.prepare_pretraining_data(
    [SAMPLE], tokenizer, 48, out, overwrite=True, num_workers=1, progress=False
  )
  assert prepare.load_manifest(out) == manifest and os.listdir(tmp_path) == ["data"]


def test_load_manifest_errors(tmp_path):
  with pytest.raises(ElectraError, match="no manifest.json"):
    prepare.load_manifest(tmp_path)
  (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
  with pytest.raises(ElectraError, match="is not an electra-jax-pretraining v1 manifest"):
    prepare.load_manifest(tmp_path)


def test_cli_prepare_with_sentencepiece(tmp_path, capsys):
  tok_dir = tmp_path / "spm"
  tokenization.train_sentencepiece([SAMPLE], 600, tok_dir, num_threads=2)
  out = tmp_path / "data"
  code = cli.main(
    ["prepare-pretraining", "--input", SAMPLE, "--tokenizer", str(tok_dir), "--max-seq-length",
     "128", "--out", str(out), "--num-workers", "1", "--num-shards", "2", "--seed", "5"]
  )  # fmt: skip
  assert code == 0
  assert "examples/s" in capsys.readouterr().out
  manifest = prepare.load_manifest(out)
  assert manifest["tokenizer"]["special_ids"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
  assert manifest["tokenizer"]["kind"] == "sentencepiece" and manifest["seed"] == 5
  records = _read_all(out, manifest)
  batch = pd.decode_batch(records, 128, np.dtype(manifest["token_dtype"]))
  assert (batch["input_ids"][:, 0] == 2).all()
  code = cli.main(
    ["prepare-pretraining", "--input", SAMPLE, "--tokenizer", str(tok_dir), "--out", str(out)]
  )
  assert code == 2 and "already exists" in capsys.readouterr().err
  code = cli.main(
    ["prepare-pretraining", "--input", SAMPLE, "--tokenizer", str(tok_dir), "--out",
     str(tmp_path / "long"), "--max-seq-length", "1024"]
  )  # fmt: skip
  err = capsys.readouterr().err
  assert code == 2 and "max_position_embeddings=512" in err and len(err.strip().splitlines()) == 1
  assert not (tmp_path / "long").exists()


def test_prepare_from_tfds(tokenizer, tmp_path):
  from input_pipeline_sources_test import TFDS_DOCS, _prepare_tiny_tfds

  name = _prepare_tiny_tfds(tmp_path / "tfds")
  manifest = prepare.prepare_pretraining_data(
    [f"tfds:{name}:train"],
    tokenizer,
    16,
    tmp_path / "out",
    tfds_data_dir=str(tmp_path / "tfds"),
    num_workers=1,
    progress=False,
  )
  assert manifest["num_documents"] == sum(1 for d in TFDS_DOCS if d.strip())
  assert manifest["sources"][0]["type"] == "tfds"
  records = _read_all(tmp_path / "out", manifest)
  batch = pd.decode_batch(records, 16, np.dtype(manifest["token_dtype"]))
  texts = collections.Counter()
  for row, mask in zip(batch["input_ids"], batch["input_mask"]):
    texts[tokenizer.decode(row[mask == 1].tolist())] += 1
  assert "second tfds document." in texts


@pytest.mark.slow
def test_wikitext2_valid_test_speed(shared_data, tokenizer, tmp_path):
  """Issue target: wiki.valid.raw + wiki.test.raw (2.4 MB) in <= 15 s on 2 cores."""
  wiki = shared_data / "text" / "wikitext-2-raw"
  start = time.perf_counter()
  manifest = prepare.prepare_pretraining_data(
    [str(wiki / "wiki.valid.raw"), str(wiki / "wiki.test.raw")],
    tokenizer,
    128,
    tmp_path / "out",
    num_workers=2,
    progress=False,
  )
  elapsed = time.perf_counter() - start
  assert manifest["num_documents"] == 60 + 62
  assert elapsed <= 15, elapsed
  assert math.isclose(sum(s["num_examples"] for s in manifest["shards"]), manifest["num_examples"])


def test_prepare_if_needed_reuses_or_refuses(tokenizer, tmp_path, monkeypatch):
  out = tmp_path / "data"
  first = prepare.prepare_if_needed([SAMPLE], tokenizer, 32, out, num_workers=1, progress=False)
  # Same request from another working directory: reused, not rebuilt.
  monkeypatch.chdir(tmp_path)
  again = prepare.prepare_if_needed(
    [os.path.relpath(SAMPLE)], tokenizer, 32, out, num_workers=1, progress=False
  )
  assert again == first
  with pytest.raises(ElectraError, match="different max_seq_length"):
    prepare.prepare_if_needed([SAMPLE], tokenizer, 64, out, progress=False)
  with pytest.raises(ElectraError, match="different seed"):
    prepare.prepare_if_needed([SAMPLE], tokenizer, 32, out, seed=1, progress=False)
  rebuilt = prepare.prepare_if_needed(
    [SAMPLE], tokenizer, 32, out, seed=1, overwrite=True, num_workers=1, progress=False
  )
  assert rebuilt["seed"] == 1


def test_prepared_data_carries_its_tokenizer(tmp_path, vocab_file):
  from electra_jax import tokenization
  from electra_jax.input_pipeline import prepare

  corpus = tmp_path / "c.txt"
  corpus.write_text(
    "The first sentence is here. And a second one.\n\nAnother document follows.\n" * 20
  )
  out = tmp_path / "prepared"
  manifest = prepare.prepare_pretraining_data(
    [str(corpus)], str(vocab_file), 32, str(out), progress=False
  )
  tok = tokenization.load_tokenizer(str(out / "tokenizer"))
  assert tok.fingerprint == manifest["tokenizer"]["fingerprint"]
