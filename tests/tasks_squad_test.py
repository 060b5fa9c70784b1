"""SQuAD reader and the official EM / F1 (hand-worked cases and the shared v1.1 dev file)."""

import json

import pytest

from electra_jax.errors import ElectraError
from electra_jax.tasks import squad

CONTEXT = "The Broncos beat the Panthers 24-10 in Santa Clara."


def _write(tmp_path, qas, context=CONTEXT, name="squad.json"):
  blob = {
    "version": "x",
    "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}],
  }
  path = tmp_path / name
  path.write_text(json.dumps(blob))
  return path


def _qa(qid, answers, **extra):
  return {
    "id": qid,
    "question": "Who?",
    "answers": [{"text": t, "answer_start": s} for t, s in answers],
    **extra,
  }


def test_normalize_answer_follows_the_official_script():
  assert squad.normalize_answer("The  Quick, brown fox!") == "quick brown fox"
  assert squad.normalize_answer("an apple a day") == "apple day"
  assert squad.normalize_answer("theater") == "theater"  # articles only as whole words
  assert squad.normalize_answer(" ... ") == ""


def test_exact_match_and_f1_hand_worked():
  assert squad.exact_match("Denver Broncos", "denver broncos.") == 1.0
  assert squad.exact_match("Broncos", "Denver Broncos") == 0.0
  # pred {cat, sat}, gold {cat, sat, down}: P = 1, R = 2/3, F1 = 0.8
  assert squad.f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
  # repeated tokens count with multiplicity: common {x: 1, y: 1}; P = R = 2/3
  assert squad.f1("x x y", "x y y") == pytest.approx(2 / 3)
  assert squad.f1("nothing shared", "Broncos") == 0.0
  assert squad.f1("", "") == 1.0 and squad.f1("the", "Broncos") == 0.0


def test_reader_and_metrics_take_the_best_gold_answer(tmp_path):
  path = _write(
    tmp_path,
    [
      _qa("q1", [("Broncos", 4), ("The Broncos", 0)]),
      _qa("q2", [("24-10", 30)]),
    ],
  )
  examples = squad.read_squad(path)
  assert [e.qas_id for e in examples] == ["q1", "q2"]
  assert examples[0].answers == (("Broncos", 4), ("The Broncos", 0))
  assert examples[0].title == "T" and not examples[0].is_impossible
  scores = squad.squad_metrics({"q1": "the broncos", "q2": "24-10 in Santa Clara"}, examples)
  # q1: exact after normalisation; q2: F1 of {24-10} vs {24-10, in, santa, clara} = 2*1*0.25/1.25 = 0.4
  assert scores == {"exact_match": 50.0, "f1": pytest.approx(70.0), "total": 2.0}


def test_squad2_no_answer_questions(tmp_path):
  path = _write(
    tmp_path,
    [_qa("q1", [("Panthers", 21)]), _qa("q2", [], is_impossible=True)],
  )
  examples = squad.read_squad(path)
  assert examples[1].is_impossible and examples[1].answers == ()
  scores = squad.squad_metrics({"q1": "Panthers", "q2": ""}, examples)
  assert scores["exact_match"] == 100.0 and scores["no_answer_exact_match"] == 100.0
  assert scores["has_answer_total"] == 1.0 and scores["no_answer_total"] == 1.0
  wrong = squad.squad_metrics({"q1": "Panthers", "q2": "Santa Clara"}, examples)
  assert wrong["exact_match"] == 50.0 and wrong["no_answer_f1"] == 0.0


def test_missing_predictions(tmp_path):
  examples = squad.read_squad(
    _write(tmp_path, [_qa("q1", [("Broncos", 4)]), _qa("q2", [("Panthers", 21)])])
  )
  with pytest.raises(ElectraError, match="1 of 2 questions have no prediction"):
    squad.squad_metrics({"q1": "Broncos"}, examples)
  assert squad.squad_metrics({"q1": "Broncos"}, examples, allow_missing=True)["exact_match"] == 50.0
  with pytest.raises(ElectraError, match="must be a string"):
    squad.squad_metrics({"q1": 3, "q2": "x"}, examples)


@pytest.mark.parametrize(
  "qas, message",
  [
    ([_qa("q1", [("Broncos", 5)])], "does not point at 'Broncos'"),
    ([_qa("q1", [("Broncos", 4)]), _qa("q1", [("Panthers", 21)])], "appears twice"),
    ([_qa("q1", [])], "no answers but not marked is_impossible"),
    ([{"id": "q1", "answers": []}], "missing 'question'"),
  ],
)
def test_malformed_files_are_refused(tmp_path, qas, message):
  with pytest.raises(ElectraError, match=message):
    squad.read_squad(_write(tmp_path, qas))


def test_not_json_or_not_squad(tmp_path):
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(ElectraError, match="not valid JSON"):
    squad.read_squad(bad)
  other = tmp_path / "other.json"
  other.write_text(json.dumps({"rows": []}))
  with pytest.raises(ElectraError, match="missing 'data'"):
    squad.read_squad(other)
  with pytest.raises(ElectraError, match="does not exist"):
    squad.read_squad(tmp_path / "nope.json")


def test_shared_v11_dev(shared_data):
  path = shared_data / "squad" / "dev-v1.1.json"
  if not path.exists():
    pytest.skip(f"{path} not found")
  examples = squad.read_squad(path)
  # ../shared/data/README.md: 48 articles, 10,570 questions.
  assert len(examples) == 10_570
  assert len({e.title for e in examples}) == 48
  assert sum(len(e.answers) for e in examples) == 34_726
  assert not any(e.is_impossible for e in examples)
  oracle = squad.squad_metrics({e.qas_id: e.answers[0][0] for e in examples}, examples)
  assert oracle == {"exact_match": 100.0, "f1": 100.0, "total": 10_570.0}
  empty = squad.squad_metrics({e.qas_id: "" for e in examples}, examples)
  assert empty["exact_match"] == 0.0 and empty["f1"] == 0.0
