"""The official SQuAD evaluation (`squad_eval`) and `electra-jax squad-eval`: hand-worked scores."""

import json

import pytest

from electra_jax import cli
from electra_jax.errors import ElectraError
from electra_jax.tasks import squad, squad_eval

CONTEXT = "The Denver Broncos beat the Carolina Panthers in Santa Clara."


def _qa(qid, answers=(), impossible=None):
  qa = {
    "id": qid,
    "question": "?",
    "answers": [{"text": t, "answer_start": CONTEXT.index(t)} for t in answers],
  }
  if impossible is not None:
    qa["is_impossible"] = impossible
  return qa


def _data(tmp_path, qas, name="data.json"):
  path = tmp_path / name
  blob = {
    "version": "x",
    "data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": qas}]}],
  }
  path.write_text(json.dumps(blob))
  return path


def _v2(tmp_path):
  return _data(
    tmp_path,
    [
      _qa("q1", ["Denver Broncos"], False),
      _qa("q2", ["Santa Clara"], False),
      _qa("q3", impossible=True),
      _qa("q4", impossible=True),
    ],
  )


def test_v1_hand_worked(tmp_path):
  path = _data(
    tmp_path,
    [
      _qa("q1", ["Denver Broncos", "The Denver Broncos"]),
      _qa("q2", ["Santa Clara"]),
      _qa("q3", ["Panthers"]),
    ],
  )
  examples = squad.read_squad(path)
  # q1: "the denver broncos" normalises to the first gold: EM 1, F1 1.
  # q2: {santa} against {santa, clara}: P 1, R 1/2, F1 2/3, EM 0. q3: missing, 0.
  result = squad_eval.evaluate_v1(examples, {"q1": "the Denver Broncos!", "q2": "Santa"})
  assert result.missing == ["q3"]
  assert result.metrics == pytest.approx({"exact_match": 100 / 3, "f1": 100 * (1 + 2 / 3) / 3})
  gold = {ex.qas_id: ex.answers[-1][0] for ex in examples}
  assert squad_eval.evaluate_v1(examples, gold).metrics == {"exact_match": 100.0, "f1": 100.0}


def test_v2_hand_worked_threshold_and_best_thresholds(tmp_path):
  examples = squad.read_squad(_v2(tmp_path))
  preds = {"q1": "Broncos", "q2": "Santa Clara", "q3": "x", "q4": "y"}
  na = {"q1": -1.0, "q2": -3.0, "q3": 2.0, "q4": -2.0}
  m = squad_eval.evaluate_v2(examples, preds, na, na_prob_thresh=0.0).metrics
  # At 0 only q3 (na 2) is answered "": right. q1: F1 2/3 (broncos vs denver broncos),
  # q2 exact, q4 wrong ("y" for no answer).
  assert m["exact"] == pytest.approx(50.0) and m["f1"] == pytest.approx(100 * (2 / 3 + 2) / 4)
  assert m["HasAns_exact"] == pytest.approx(50.0)
  assert m["HasAns_f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
  assert m["NoAns_exact"] == m["NoAns_f1"] == pytest.approx(50.0)
  assert (m["total"], m["HasAns_total"], m["NoAns_total"]) == (4, 2, 2)
  # Sweep by na (q2 -3, q4 -2, q1 -1, q3 2), starting from "all null" = 2 right:
  # q2 +1 -> 3 (best, threshold -3); q4 -1; q1 +0 (EM) / +2/3 (F1); q3 -1.
  assert m["best_exact"] == pytest.approx(75.0) and m["best_exact_thresh"] == -3.0
  assert m["best_f1"] == pytest.approx(75.0) and m["best_f1_thresh"] == -3.0
  # Without no-answer scores: raw scores, no best thresholds.
  raw = squad_eval.evaluate_v2(examples, preds).metrics
  assert raw["exact"] == pytest.approx(25.0) and "best_f1" not in raw


def test_gold_answers_score_100_in_both_versions(tmp_path):
  examples = squad.read_squad(_v2(tmp_path))
  gold = {ex.qas_id: (ex.answers[0][0] if ex.answers else "") for ex in examples}
  m = squad_eval.evaluate_v2(examples, gold).metrics
  assert m["exact"] == m["f1"] == m["HasAns_f1"] == m["NoAns_exact"] == 100.0
  # The ELECTRA format: best spans plus null odds that put the unanswerable above the threshold.
  spans = {**gold, "q3": "Panthers", "q4": "Denver"}
  na = {"q1": -5.0, "q2": -4.0, "q3": 3.0, "q4": 1.0}
  m = squad_eval.evaluate_v2(examples, spans, na, na_prob_thresh=0.0).metrics
  assert m["exact"] == m["f1"] == m["best_exact"] == m["best_f1"] == 100.0


def test_bad_predictions(tmp_path):
  examples = squad.read_squad(_v2(tmp_path))
  with pytest.raises(ElectraError, match="not a string"):
    squad_eval.evaluate_v2(examples, {"q1": 3})
  with pytest.raises(ElectraError, match="no prediction id matches"):
    squad_eval.evaluate_v2(examples, {"other": "x"})
  with pytest.raises(ElectraError, match="no no-answer score"):
    squad_eval.evaluate_v2(examples, {"q1": "x"}, {"q1": 0.0})
  with pytest.raises(ElectraError, match="version 2.0"):
    squad_eval.evaluate_v1(examples, {"q1": "x"})


def test_cli(tmp_path, capsys):
  data = _v2(tmp_path)
  preds = tmp_path / "p.json"
  preds.write_text(json.dumps({"q1": "Broncos", "q2": "Santa Clara", "q3": "x"}))
  na = tmp_path / "na.json"
  na.write_text(json.dumps({"q1": -1.0, "q2": -3.0, "q3": 2.0, "q4": -2.0}))
  assert (
    cli.main(
      ["squad-eval", str(data), str(preds), "--na-prob-file", str(na), "--na-prob-thresh", "0"]
    )
    == 0
  )
  out, err = capsys.readouterr()
  m = json.loads(out)
  # q4 has no prediction: 0 (its null odds -2 keep it answered).
  assert m["exact"] == pytest.approx(50.0) and "best_exact_thresh" in m
  assert "1 question(s) have no prediction" in err
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  assert cli.main(["squad-eval", str(data), str(bad)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "is not valid JSON" in err
  assert cli.main(["squad-eval", str(data), str(preds), "--version", "1.1"]) == 2
  assert "version 2.0" in capsys.readouterr().err


def test_shared_v11_dev_gold_scores_100(shared_data, tmp_path, capsys):
  path = shared_data / "squad" / "dev-v1.1.json"
  if not path.exists():
    pytest.skip(f"{path} not found")
  examples = squad.read_squad(path)
  preds = tmp_path / "gold.json"
  preds.write_text(json.dumps({ex.qas_id: ex.answers[0][0] for ex in examples}))
  assert cli.main(["squad-eval", str(path), str(preds)]) == 0
  assert json.loads(capsys.readouterr().out) == {"exact_match": 100.0, "f1": 100.0}


def test_shared_dev_as_a_squad2_file_gold_scores_100(shared_data, tmp_path):
  """dev-v1.1 with every third question made unanswerable: gold answers ("" for those) score 100."""
  path = shared_data / "squad" / "dev-v1.1.json"
  if not path.exists():
    pytest.skip(f"{path} not found")
  blob = json.load(open(path))
  n = 0
  for article in blob["data"]:
    for paragraph in article["paragraphs"]:
      for qa in paragraph["qas"]:
        qa["is_impossible"] = n % 3 == 0
        if qa["is_impossible"]:
          qa["answers"] = []
        n += 1
  v2 = tmp_path / "dev-v2-style.json"
  v2.write_text(json.dumps(blob))
  examples = squad.read_squad(v2)
  gold = {ex.qas_id: ex.answers[0][0] if ex.answers else "" for ex in examples}
  m = squad_eval.evaluate_v2(examples, gold).metrics
  assert m["NoAns_total"] == len(examples[::3]) and m["HasAns_total"] == len(examples) - len(
    examples[::3]
  )
  assert m["exact"] == m["f1"] == m["HasAns_exact"] == m["NoAns_f1"] == 100.0
  # As ELECTRA writes them: a span for every question, "no answer" carried by the null odds.
  spans = {q: a or "some span" for q, a in gold.items()}
  odds = {q: (5.0 if not a else -5.0) for q, a in gold.items()}
  m = squad_eval.evaluate_v2(examples, spans, odds, na_prob_thresh=0.0).metrics
  assert m["exact"] == m["f1"] == m["best_exact"] == m["best_f1"] == 100.0
  assert squad_eval.evaluate_v2(examples, spans).metrics["NoAns_exact"] == 0.0
