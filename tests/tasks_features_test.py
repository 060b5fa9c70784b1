"""Tests for electra_jax.tasks.features: featurize vs the official algorithm and HF."""

import numpy as np
import pytest

from electra_jax.errors import ElectraError
from electra_jax.tasks import glue
from electra_jax.tasks.features import featurize
from electra_jax.tasks.glue import Example


@pytest.fixture(scope="module")
def tokenizer(vocab_file):
  from electra_jax.tokenization import load_tokenizer

  return load_tokenizer(vocab_file)


@pytest.fixture(scope="module")
def glue_dir(shared_data):
  path = shared_data / "glue_data"
  if not path.is_dir():
    pytest.skip(f"{path} not found")
  return path


def _official_features(example, tokenizer, max_seq_length):
  """The official ELECTRA featurization (classification_tasks.py), re-stated."""
  tokens_a = tokenizer.tokenize(example.text_a)
  tokens_b = tokenizer.tokenize(example.text_b) if example.text_b is not None else None
  if tokens_b is not None:
    while len(tokens_a) + len(tokens_b) > max_seq_length - 3:
      (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()
  else:
    tokens_a = tokens_a[: max_seq_length - 2]
  tokens = ["[CLS]", *tokens_a, "[SEP]"]
  segments = [0] * len(tokens)
  if tokens_b is not None:
    tokens += [*tokens_b, "[SEP]"]
    segments += [1] * (len(tokens_b) + 1)
  ids = tokenizer.convert_tokens_to_ids(tokens)
  pad = max_seq_length - len(ids)
  return ids + [0] * pad, [1] * len(ids) + [0] * pad, segments + [0] * pad


def test_pairs_match_official_algorithm_with_truncation(tokenizer, glue_dir):
  examples = glue.read_split("mrpc", glue_dir, "dev", limit=64)
  task = glue.get_task("mrpc")
  f = featurize(examples, tokenizer, 32, task.label_map)
  assert all(f[k].dtype == np.int32 and f[k].shape == (64, 32) for k in
             ("input_ids", "input_mask", "segment_ids"))  # fmt: skip
  assert f["input_mask"].all(axis=1).sum() > 50  # most rows were truncated
  for i, e in enumerate(examples):
    ids, mask, segments = _official_features(e, tokenizer, 32)
    assert f["input_ids"][i].tolist() == ids
    assert f["input_mask"][i].tolist() == mask
    assert f["segment_ids"][i].tolist() == segments
  assert f["labels"].dtype == np.int32
  assert f["labels"].tolist() == [task.label_map[e.label] for e in examples]
  assert f["example_index"].tolist() == list(range(64))


@pytest.mark.parametrize("task,split,length", [("sst2", "dev", 16), ("rte", "dev", 48)])
def test_match_hf_python_tokenizer(tokenizer, vocab_file, glue_dir, task, split, length):
  transformers = pytest.importorskip("transformers")
  # transformers 5: BertTokenizerLegacy is the pure-Python tokenizer, whose
  # pair truncation has the official tie rule; v4 calls it BertTokenizer.
  hf_cls = getattr(transformers, "BertTokenizerLegacy", None) or transformers.BertTokenizer
  hf = hf_cls(str(vocab_file), do_lower_case=True)
  examples = glue.read_split(task, glue_dir, split, limit=48)
  f = featurize(examples, tokenizer, length, glue.get_task(task).label_map)
  pairs = [e.text_b for e in examples] if examples[0].text_b is not None else None
  ref = hf(
    [e.text_a for e in examples],
    pairs,
    max_length=length,
    truncation="longest_first",
    padding="max_length",
    return_token_type_ids=True,
  )
  np.testing.assert_array_equal(f["input_ids"], ref["input_ids"])
  np.testing.assert_array_equal(f["input_mask"], ref["attention_mask"])
  np.testing.assert_array_equal(f["segment_ids"], ref["token_type_ids"])


def test_labels_mixed_pairs_and_order(tokenizer):
  examples = [
    Example("a", "one two", None, "entailment"),
    Example("b", "three", "four five", None),
    Example("c", "six", None, "not_entailment"),
    Example("d", "seven", "eight", "entailment"),
  ]
  f = featurize(examples, tokenizer, 8, glue.get_task("rte").label_map)
  assert f["labels"].tolist() == [0, -1, 1, 0]
  for i, e in enumerate(examples):
    ids, mask, segments = _official_features(e, tokenizer, 8)
    assert f["input_ids"][i].tolist() == ids and f["segment_ids"][i].tolist() == segments
  reg = featurize(
    [Example("x", "a", "b", 4.5), Example("y", "c", "d", None)], tokenizer, 8, label_map=None
  )
  assert reg["labels"].dtype == np.float32
  assert reg["labels"][0] == 4.5 and np.isnan(reg["labels"][1])
  empty = featurize([], tokenizer, 8, {"0": 0})
  assert empty["input_ids"].shape == (0, 8) and empty["labels"].shape == (0,)


def test_featurize_errors(tokenizer):
  with pytest.raises(ElectraError, match=r"example a: label 'maybe' is not in the label map"):
    featurize([Example("a", "x", None, "maybe")], tokenizer, 8, {"0": 0, "1": 1})
  with pytest.raises(ElectraError, match="no label_map was given"):
    featurize([Example("a", "x", None, "1")], tokenizer, 8)
  with pytest.raises(ElectraError, match="max_length=2"):
    featurize([Example("a", "x", "y", "1")], tokenizer, 2, {"1": 0})
