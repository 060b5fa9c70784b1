"""Multiple choice: reading rows, [N, C, L] features, bad input, a tiny run end to end, predict."""

import csv
import json
import os

import numpy as np
import pytest

from electra_jax import cli, experiment, job_setup, run_finetuning, tokenization
from electra_jax.errors import ElectraError
from electra_jax.tasks import multiple_choice as mc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "experiments", "configs", "multiple_choice.py")
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
}
HEADER = ["sent1", "sent2", "ending0", "ending1", "ending2", "ending3", "label"]
COLOURS = ["red", "blue", "green", "black"]


@pytest.fixture(scope="module")
def tokenizer():
  return tokenization.load_tokenizer(os.path.join(job_setup.SAMPLE_DATA, "vocab.txt"))


def _rows(n, seed):
  rng = np.random.RandomState(seed)
  rows = []
  for _ in range(n):
    colour, k = COLOURS[rng.randint(4)], rng.randint(4)
    endings = [c for c in COLOURS if c != colour]
    endings.insert(k, colour)
    rows.append([f"the car is {colour}.", "it looks", *endings, k])
  return rows


def _write_csv(path, rows, header=HEADER):
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return str(path)


def _cfg(**overrides):
  values = {**TINY, **overrides}
  return experiment.load_config(
    f"{CONFIG}:size=tiny", [f"--config.{k}={v}" for k, v in values.items()]
  )


def test_features_are_context_then_prefix_and_ending(tokenizer, tmp_path):
  path = _write_csv(tmp_path / "q.csv", [["a b", "c", "d", "e", "f", "g", "2"]])
  question = mc.read_questions(path, mc.Columns())[0]
  assert question.choices == ("c d", "c e", "c f", "c g") and question.label == 2
  feats, truncated = mc.featurize([question], tokenizer, 12)
  assert feats["input_ids"].shape == (1, 4, 12) and truncated == 0
  for k, ending in enumerate("defg"):
    expected = tokenizer.encode("a b", f"c {ending}", max_length=12)
    n = len(expected.ids)
    assert feats["input_ids"][0, k, :n].tolist() == expected.ids
    assert feats["segment_ids"][0, k, :n].tolist() == expected.type_ids
    assert feats["input_mask"][0, k].tolist() == [1] * n + [0] * (12 - n)
  assert feats["labels"].tolist() == [2]
  # No prefix column: each choice is the ending alone; a JSONL file reads the same way.
  jsonl = tmp_path / "q.jsonl"
  jsonl.write_text(json.dumps({"ctx": "a", "e0": "x", "e1": "y", "answer": 1}) + "\n")
  columns = mc.Columns("ctx", "", ("e0", "e1"), "answer")
  assert mc.read_questions(str(jsonl), columns)[0].choices == ("x", "y")
  long = mc.Question("a " * 20, ("b", "c", "d", "e"), 0, 1)
  _, truncated = mc.featurize([long], tokenizer, 12)
  assert truncated == 1


@pytest.mark.parametrize(
  "rows, header, message",
  [
    (
      [["a", "b", "c", "d", "e", "f", "4"]],
      HEADER,
      "q.csv:2: label '4' is not a choice index 0..3",
    ),
    ([["a", "b", "c", "d", "e", "f", "x"]], HEADER, "q.csv:2: label 'x' is not a choice index"),
    ([["a", "b", "c", "", "e", "f", "1"]], HEADER, "q.csv:2: empty 'ending1'"),
    ([["a", "b", "c", "d", "e", "f", ""]], HEADER, "q.csv:2: empty 'label'"),
    ([["a", "b", "c", "d", "e", "f"]], HEADER[:-1], "q.csv: no column(s) ['label']"),
    (
      [["a", "b", "c", "d", "e", "f", "1"]],
      [*HEADER[:5], "x", "label"],
      "no column(s) ['ending3']",
    ),
    (
      [["a", "b", "c", "d", "e", "1"]],
      HEADER,
      "q.csv:2: expected 7 columns like the header, found 6",
    ),
  ],
)
def test_malformed_rows_are_one_line_errors(tmp_path, rows, header, message):
  path = _write_csv(tmp_path / "q.csv", rows, header)
  with pytest.raises(ElectraError) as e:
    mc.read_questions(path, mc.Columns())
  assert message in str(e.value) and "\n" not in str(e.value)


def test_tiny_run_end_to_end_and_predict_round_trip(tmp_path, capsys):
  train = _write_csv(tmp_path / "train.csv", _rows(32, 0))
  dev = _write_csv(tmp_path / "dev.csv", _rows(12, 1))
  test = _write_csv(tmp_path / "test.csv", [r[:-1] for r in _rows(5, 2)], HEADER[:-1])
  work = tmp_path / "w"
  summary = run_finetuning.run(
    _cfg(train_file=train, dev_file=dev, test_file=test), str(work), progress=False
  )
  assert summary["task"] == "multiple_choice" and summary["primary_metric"] == "accuracy"
  assert summary["recipe"]["recipe"] == "standard" and summary["recipe"]["head"] == "hf"
  accuracy = summary["seeds"][0]["last"]["accuracy"]
  lines = [json.loads(x) for x in open(work / "test_predictions" / "test.jsonl")]
  assert [x["index"] for x in lines] == list(range(5))
  assert all(0 <= x["label"] < 4 for x in lines)
  meta = json.load(open(work / "seed_0" / "last" / "electra_jax.json"))
  assert meta["head"] == "multiple_choice" and meta["extra"]["num_choices"] == 4

  out = tmp_path / "out.jsonl"
  argv = ["predict", "--model", str(work), "--input", dev, "--output", str(out), "--quiet"]
  assert cli.main([*argv, "--eval"]) == 0
  assert f"eval: accuracy={accuracy:.4f}" in capsys.readouterr().err
  predicted = [json.loads(x) for x in open(out)]
  gold = [r[-1] for r in _rows(12, 1)]
  assert np.mean([p["label"] == g for p, g in zip(predicted, gold)]) == pytest.approx(accuracy)
  for p in predicted:
    assert p["label"] == int(np.argmax(p["probabilities"]))
    assert sum(p["probabilities"]) == pytest.approx(1.0, abs=1e-4)
  # The jax.export artifact gives the same choices and probabilities.
  exported = tmp_path / "exported"
  assert cli.main(["export", "--model", str(work), "--out", str(exported)]) == 0
  assert json.load(open(exported / "serving_config.json"))["num_choices"] == 4
  out_ex = tmp_path / "out_exported.jsonl"
  argv = ["predict", "--model", str(exported), "--input", dev, "--output", str(out_ex), "--quiet"]
  assert cli.main(argv) == 0
  from_export = [json.loads(x) for x in open(out_ex)]
  assert [p["label"] for p in from_export] == [p["label"] for p in predicted]
  np.testing.assert_allclose(
    [p["probabilities"] for p in from_export], [p["probabilities"] for p in predicted], atol=1e-5
  )


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_is_cross_entropy_over_choices(tiny_config, reduction):
  import jax

  from electra_jax import model as model_lib

  model = model_lib.build_model(tiny_config, "multiple_choice")
  params = model_lib.init_params(model, jax.random.key(0))
  rng = np.random.RandomState(0)
  ids = rng.randint(5, tiny_config.vocab_size, (3, 4, 8)).astype(np.int32)
  batch = {
    "input_ids": ids,
    "input_mask": np.ones_like(ids),
    "segment_ids": np.zeros_like(ids),
    "labels": np.array([0, 3, 1], np.int32),
  }
  adapter = mc.MultipleChoiceAdapter(mc.Columns(), {}, (), (), {"loss_reduction": reduction}, "")
  loss, _ = adapter.loss_fn(model, None)(params, batch, jax.random.key(1), True)
  logits = np.asarray(model.apply({"params": params}, ids), np.float64)
  per_question = np.log(np.exp(logits).sum(-1)) - logits[np.arange(3), batch["labels"]]
  expected = per_question.sum() if reduction == "sum" else per_question.mean()
  assert float(loss) == pytest.approx(expected, rel=1e-5)
