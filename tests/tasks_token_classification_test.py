"""Token classification: features on first pieces, windows, label checks, a tiny run end to end, predict."""

import json
import os

import numpy as np
import pytest

from electra_jax import cli, experiment, job_setup, run_finetuning, tokenization
from electra_jax.errors import ElectraError
from electra_jax.tasks import conll
from electra_jax.tasks import token_classification as tc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "experiments", "configs", "token_classification.py")
TINY = {
  "model.embedding_size": 16,
  "model.hidden_size": 32,
  "model.num_hidden_layers": 2,
  "model.num_attention_heads": 2,
  "model.intermediate_size": 64,
  "max_seq_length": 16,
  "batch_size": 8,
  "eval_batch_size": 32,
  "log_every": 5,
  "epochs": 1,
  "learning_rate": 3e-3,
}
ENTITIES = {"john": "PER", "mary": "PER", "paris": "LOC", "london": "LOC"}
FILLERS = ["the", "went", "to", "saw", "and"]


@pytest.fixture(scope="module")
def tokenizer():
  return tokenization.load_tokenizer(os.path.join(job_setup.SAMPLE_DATA, "vocab.txt"))


def _sentences(n, seed, long_every=0):
  """Random sentences: names tagged B-PER / B-LOC, "new york" B-LOC I-LOC, the rest O."""
  rng = np.random.RandomState(seed)
  out = []
  for i in range(n):
    words, tags = [], []
    for _ in range(20 if long_every and i % long_every == 0 else rng.randint(3, 8)):
      if rng.rand() < 0.3:
        if rng.rand() < 0.3:
          words += ["new", "york"]
          tags += ["B-LOC", "I-LOC"]
        else:
          word = list(ENTITIES)[rng.randint(4)]
          words.append(word)
          tags.append("B-" + ENTITIES[word])
      else:
        words.append(FILLERS[rng.randint(5)])
        tags.append("O")
    out.append((words, tags))
  return out


def _write(path, sentences):
  with open(path, "w") as f:
    f.write("-DOCSTART- -X- O\n\n")
    for words, tags in sentences:
      f.writelines(f"{w} NN {t}\n" for w, t in zip(words, tags))
      f.write("\n")
  return str(path)


def _cfg(**overrides):
  values = {**TINY, **overrides}
  return experiment.load_config(
    f"{CONFIG}:size=tiny", [f"--config.{k}={v}" for k, v in values.items()]
  )


def test_labels_sit_on_first_pieces(tokenizer):
  words = ("john", "unaffable", "paris")
  pieces = tokenizer.encode_ids_batch(list(words))
  assert len(pieces[1]) > 1  # the test needs a word of several pieces
  sentence = conll.Sentence(words, ("B-PER", "O", "B-LOC"), 1)
  label_map = {"B-LOC": 0, "B-PER": 1, "O": 2}
  feats, stats = tc.featurize([sentence], tokenizer, 16, label_map)
  expected_ids = [tokenizer.cls_id, *[p for w in pieces for p in w], tokenizer.sep_id]
  n = len(expected_ids)
  assert feats["input_ids"][0, :n].tolist() == expected_ids
  assert feats["input_mask"][0].tolist() == [1] * n + [0] * (16 - n)
  firsts = [1, 1 + len(pieces[0]), 1 + len(pieces[0]) + len(pieces[1])]
  labels = np.full(16, -1)
  labels[firsts] = [1, 2, 0]
  assert feats["labels"][0].tolist() == labels.tolist()
  word_ids = np.full(16, -1)
  word_ids[firsts] = [0, 1, 2]
  assert feats["word_ids"][0].tolist() == word_ids.tolist()
  assert stats.windows == 0 and stats.truncated_words == 0


def test_long_sentences_split_into_windows_and_join_back(tokenizer):
  words = tuple(f"w{i}" for i in range(11))  # "w0" ... : two pieces each in the BERT vocab
  sentence = conll.Sentence(words, None, 1)
  short = conll.Sentence(("john",), None, 20)
  lengths = [len(p) for p in tokenizer.encode_ids_batch(list(words))]
  feats, stats = tc.featurize([short, sentence], tokenizer, 10, None)
  # Windows of whole words, each at most 8 pieces: every word lands in exactly one.
  assert stats.split_sentences == 1 and stats.windows == len(feats["input_ids"]) - 1
  rows = feats["example_index"] == 1
  seen = sorted(feats["word_ids"][rows][feats["word_ids"][rows] >= 0].tolist())
  assert seen == list(range(11))
  for row in np.flatnonzero(rows):
    in_window = feats["word_ids"][row][feats["word_ids"][row] >= 0]
    assert sum(lengths[w] for w in in_window) + 2 <= 10
  # Predictions read back per word, in order, whichever window holds the word.
  fake = np.where(feats["word_ids"] >= 0, feats["word_ids"] * 10, -7)
  joined = tc.sentence_predictions(fake, feats, [short, sentence])
  assert joined[0].tolist() == [0] and joined[1].tolist() == [10 * i for i in range(11)]
  # A word longer than a window keeps its first pieces (and its label).
  long_word = conll.Sentence(("unaffable" * 4,), None, 1)
  feats, stats = tc.featurize([long_word], tokenizer, 4, None)
  assert stats.truncated_words == 1 and feats["input_mask"][0].tolist() == [1, 1, 1, 1]


def test_unseen_dev_tag_is_an_error_or_kept_and_counted(tmp_path, tokenizer):
  train = _write(tmp_path / "train.txt", [(["john", "went"], ["B-PER", "O"])])
  dev = _write(tmp_path / "dev.txt", [(["paris", "john", "paris"], ["B-LOC", "B-PER", "B-LOC"])])
  cfg = _cfg(train_file=train, dev_file=dev)
  with pytest.raises(ElectraError, match=r"dev.txt:3: dev tag 'B-LOC' never occurs"):
    tc.token_classification_adapter(cfg, {"loss_reduction": "sum"})
  # Kept: in the label map, counted; a test file's unknown tags are only written back.
  test = _write(tmp_path / "test.txt", [(["rome"], ["B-GPE"])])
  cfg = _cfg(train_file=train, dev_file=dev, test_file=test, unseen_tags="keep")
  adapter = tc.token_classification_adapter(cfg, {"loss_reduction": "sum"})
  assert adapter.label_list == ["B-LOC", "B-PER", "O"] and adapter.unseen == {"B-LOC": 2}
  feats = adapter.featurize(tokenizer, 16)
  assert feats["dev"]["labels"][0, 1:4].tolist() == [0, 1, 0]
  assert (feats["test"]["labels"] == -1).all()
  assert "B-LOC (2 words)" in adapter.describe()


def test_tiny_run_end_to_end_and_predict_round_trip(tmp_path, capsys):
  train = _write(tmp_path / "train.txt", _sentences(48, 0))
  dev = _write(tmp_path / "dev.txt", _sentences(12, 1, long_every=4))
  cfg = _cfg(train_file=train, dev_file=dev, test_file=dev)
  work = tmp_path / "w"
  summary = run_finetuning.run(cfg, str(work), progress=False)
  assert summary["task"] == "token_classification" and summary["primary_metric"] == "f1"
  assert summary["recipe"]["head"] == "hf" and summary["recipe"]["loss_reduction"] == "sum"
  last = summary["seeds"][0]["last"]
  assert set(last) == {"precision", "recall", "f1", "accuracy"}
  # The dev predictions file holds the final model's tags; scoring it gives the reported metrics.
  written = conll.read_conll(work / "seed_0" / "dev_predictions.conll")
  gold = conll.read_conll(work / "seed_0" / "dev_predictions.conll", tag_column=1)
  assert [s.words for s in written] == [s.words for s in conll.read_conll(dev)]
  scores = conll.entity_scores([s.tags for s in gold], [s.tags for s in written])
  assert scores == pytest.approx(last)
  assert os.path.isfile(work / "test_predictions" / "test.conll")
  meta = json.load(open(work / "seed_0" / "last" / "electra_jax.json"))
  assert meta["head"] == "token_classification" and meta["extra"]["label_map"] == [
    "B-LOC",
    "B-PER",
    "I-LOC",
    "O",
  ]

  # predict on the dev file (CoNLL, --eval) reproduces the run's dev scores ...
  out = tmp_path / "dev_out.conll"
  argv = ["predict", "--model", str(work), "--input", dev, "--output", str(out), "--quiet"]
  assert cli.main([*argv, "--format", "conll", "--eval"]) == 0
  assert "eval: precision=" in capsys.readouterr().err
  assert [s.tags for s in conll.read_conll(out)] == [s.tags for s in written]
  # Plain text (one sentence per line) is tagged the same way by the HF export,
  # which names the tags (given the length trained with: a HF config does not
  # record it, and windows change the context) ...
  text = tmp_path / "in.txt"
  text.write_text("\n".join(" ".join(s.words) for s in written[:3]) + "\n")
  expected = [s.tags for s in written[:3]]
  hf = tmp_path / "hf"
  assert cli.main(["convert", "--to-hf", str(work / "seed_0" / "last"), "--out", str(hf)]) == 0
  hf_config = json.load(open(hf / "config.json"))
  assert hf_config["architectures"] == ["ElectraForTokenClassification"]
  assert hf_config["id2label"] == {"0": "B-LOC", "1": "B-PER", "2": "I-LOC", "3": "O"}
  out_hf = tmp_path / "hf_out.conll"
  argv = ["predict", "--model", str(hf), "--input", str(text), "--output", str(out_hf)]
  assert cli.main([*argv, "--max-seq-length", "16"]) == 0
  assert [s.tags for s in conll.read_conll(out_hf)] == expected
  # ... and by the jax.export artifact, which keeps the length.
  exported = tmp_path / "exported"
  assert cli.main(["export", "--model", str(work), "--out", str(exported)]) == 0
  out_ex = tmp_path / "exported_out.conll"
  argv = ["predict", "--model", str(exported), "--input", str(text), "--output", str(out_ex)]
  assert cli.main(argv) == 0
  assert [s.tags for s in conll.read_conll(out_ex)] == expected
  assert [s.words for s in conll.read_conll(out_ex)] == [s.words for s in written[:3]]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_is_cross_entropy_of_first_pieces(tiny_config, reduction):
  import jax

  from electra_jax import model as model_lib

  model = model_lib.build_model(tiny_config, "token_classification", num_labels=3)
  params = model_lib.init_params(model, jax.random.key(0))
  rng = np.random.RandomState(0)
  ids = rng.randint(5, tiny_config.vocab_size, (4, 8)).astype(np.int32)
  labels = np.where(rng.rand(4, 8) < 0.5, rng.randint(0, 3, (4, 8)), -1).astype(np.int32)
  batch = {
    "input_ids": ids,
    "input_mask": np.ones_like(ids),
    "segment_ids": np.zeros_like(ids),
    "labels": labels,
  }
  adapter = tc.TokenClassificationAdapter(
    ["a", "b", "c"], {}, (), (), {"loss_reduction": reduction}, ""
  )
  loss, metrics = adapter.loss_fn(model, None)(params, batch, jax.random.key(1), True)
  logits = np.asarray(model.apply({"params": params}, ids), np.float64)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  rows, cols = np.nonzero(labels >= 0)
  per_word = -log_probs[rows, cols, labels[rows, cols]]
  expected = per_word.sum() if reduction == "sum" else per_word.mean()
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  correct = logits[rows, cols].argmax(-1) == labels[rows, cols]
  assert float(metrics["accuracy"]) == pytest.approx(correct.mean())
