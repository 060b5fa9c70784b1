"""SQuAD reader and the official EM / F1 (hand-worked cases and the shared v1.1 dev file)."""

import json

import numpy as np
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


# --- Features and post-processing ---------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
  from electra_jax import job_setup, tokenization

  return tokenization.load_tokenizer(job_setup.BUNDLED_VOCAB)


LONG = " ".join(f"word{i} is here." for i in range(40))  # ~200 word pieces


ANSWER = ("word17 is here", LONG.index("word17 is here"))


def _example(qid="q", context=LONG, answers=(ANSWER,)):
  return squad.SquadExample(qid, "T", "where is it?", context, tuple(answers), not answers)


def test_windows_cover_the_context_once_each(tokenizer):
  ex = _example()
  feats = squad.featurize([ex], tokenizer, max_seq_length=64, doc_stride=16, max_query_length=8)
  n_context = len(tokenizer.tokenize(LONG))
  assert feats.input_ids.shape[1] == 64 and len(feats.example_index) > 3
  covered = {}
  for f in range(len(feats.example_index)):
    spans = [o for o in feats.offsets[f] if o is not None]
    assert spans == sorted(spans) and len(spans) <= 64 - 3 - len(tokenizer.tokenize("where is it?"))
    for o, best in zip(feats.offsets[f], feats.max_context[f]):
      if o is not None:
        covered.setdefault(o, []).append(best)
  assert len(covered) == n_context  # every context token is in some window
  assert all(flags.count(True) == 1 for flags in covered.values())  # and max-context in one
  # [CLS] question [SEP] context [SEP] padding, with the segment ids of a pair.
  ids, types, mask = feats.input_ids[0], feats.token_type_ids[0], feats.attention_mask[0]
  assert ids[0] == tokenizer.cls_id and ids[mask.sum() - 1] == tokenizer.sep_id
  assert (
    types[1] == 0
    and types[mask.sum() - 1] == 1
    and ids[mask.sum() :].tolist() == [tokenizer.pad_id] * (64 - mask.sum())
  )


def test_answer_positions_and_oracle_round_trip(tokenizer):
  ex = _example()
  feats = squad.featurize([ex], tokenizer, max_seq_length=64, doc_stride=16, max_query_length=8)
  with_answer = [f for f in range(len(feats.example_index)) if feats.start_positions[f] > 0]
  assert with_answer  # some window holds the answer, the others point at [CLS]
  for f in with_answer:
    s, e = feats.start_positions[f], feats.end_positions[f]
    assert LONG[feats.offsets[f][s][0] : feats.offsets[f][e][1]] == "word17 is here"
  start = np.full(feats.input_ids.shape, -5.0)
  end = np.full(feats.input_ids.shape, -5.0)
  rows = np.arange(len(start))
  start[rows, feats.start_positions] = 5.0
  end[rows, feats.end_positions] = 5.0
  assert squad.postprocess([ex], feats, start, end) == {"q": "word17 is here"}
  # A span longer than max_answer_length is not allowed: the answer has 6+ pieces.
  assert squad.postprocess([ex], feats, start, end, max_answer_length=2)["q"] != "word17 is here"


def test_no_answer_examples_and_the_null_threshold(tokenizer):
  ex = _example(answers=())
  feats = squad.featurize([ex], tokenizer, max_seq_length=64, doc_stride=16, max_query_length=8)
  assert not feats.start_positions.any() and not feats.end_positions.any()
  start = np.zeros(feats.input_ids.shape)
  end = np.zeros(feats.input_ids.shape)
  start[:, 0] = end[:, 0] = 3.0  # [CLS] scores 6 in every window
  start[0, 20] = end[0, 21] = 2.0  # best span scores 4
  assert squad.postprocess([ex], feats, start, end, null_threshold=0.0) == {"q": ""}
  assert squad.postprocess([ex], feats, start, end, null_threshold=5.0)["q"] != ""
  assert squad.postprocess([ex], feats, start, end)["q"] != ""  # v1.1: always a span


def test_feature_errors(tokenizer):
  ex = _example()
  with pytest.raises(ElectraError, match="leaves no room for context"):
    squad.featurize([ex], tokenizer, max_seq_length=10, max_query_length=8)
  feats = squad.featurize([ex], tokenizer, max_seq_length=64, doc_stride=16, max_query_length=8)
  with pytest.raises(ElectraError, match="do not match the features"):
    squad.postprocess([ex], feats, np.zeros((1, 64)), np.zeros((1, 64)))


def test_oracle_logits_recover_the_shared_dev_answers(shared_data, vocab_file):
  from electra_jax import tokenization

  path = shared_data / "squad" / "dev-v1.1.json"
  if not path.exists():
    pytest.skip(f"{path} not found")
  examples = squad.read_squad(path)[:500]
  tok = tokenization.load_tokenizer(str(vocab_file))

  def oracle(max_seq_length, doc_stride):
    feats = squad.featurize(examples, tok, max_seq_length, doc_stride, max_query_length=32)
    start = np.full(feats.input_ids.shape, -10.0)
    end = np.full(feats.input_ids.shape, -10.0)
    rows = np.arange(len(start))
    start[rows, feats.start_positions] = 10.0
    end[rows, feats.end_positions] = 10.0
    return len(feats.example_index), squad.postprocess(examples, feats, start, end)

  n_windows, windowed = oracle(128, 48)
  n_whole, whole = oracle(512, 128)
  assert n_windows > len(examples) and n_whole == len(examples)  # only the short length splits
  assert windowed == whole  # splitting into windows loses no answer
  scores = squad.squad_metrics(windowed, examples)
  # Not 100: 11 of these answers end inside a word piece ("gold" in "golden"), which
  # no token span can cut out, as in the official BERT/ELECTRA code.
  print("oracle over 500 dev questions:", scores)
  assert scores["exact_match"] >= 97.5 and scores["f1"] >= 97.5


@pytest.mark.slow
def test_shared_v11_dev_featurize_time_and_gold_spans_round_trip(shared_data, vocab_file):
  """Issue 12: all 10,570 dev questions at length 384 in <= 60 s; >= 99.5 % of gold spans recovered.

  Measured on the shared 2-core VM at load ~12: 16 s, 10,833 windows, 10,538 / 10,570 (99.70 %)
  recovered exactly; the 32 misses are answers that end or start inside a word piece ("gold" in
  "golden", "8" in "18", "20,980" after "£"), which no token span can cut out.
  """
  import time

  from electra_jax import tokenization

  path = shared_data / "squad" / "dev-v1.1.json"
  if not path.exists():
    pytest.skip(f"{path} not found")
  examples = squad.read_squad(path)
  tok = tokenization.load_tokenizer(str(vocab_file))
  started = time.perf_counter()
  feats = squad.featurize(examples, tok, 384, doc_stride=128, max_query_length=64)
  elapsed = time.perf_counter() - started
  assert elapsed <= 60, f"featurize took {elapsed:.1f} s"
  recovered = {}
  for f, index in enumerate(feats.example_index):
    s, e = feats.start_positions[f], feats.end_positions[f]
    if s:
      ex = examples[index]
      recovered.setdefault(ex.qas_id, ex.context[feats.offsets[f][s][0] : feats.offsets[f][e][1]])
  hits = sum(recovered.get(ex.qas_id) == ex.answers[0][0] for ex in examples)
  print(f"featurize {elapsed:.1f} s; gold spans recovered {hits} / {len(examples)}")
  assert len(recovered) == len(examples)  # every answer lies whole in some window
  assert hits / len(examples) >= 0.995
