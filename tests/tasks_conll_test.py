"""CoNLL reading/writing and the conlleval entity scores, against hand-worked cases."""

import pytest

from electra_jax.errors import ElectraError
from electra_jax.tasks import conll


def _write(tmp_path, text, name="data.txt"):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_read_conll_sentences_docstart_and_tag_column(tmp_path):
  path = _write(
    tmp_path,
    "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\n"
    "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n",
  )
  sentences = conll.read_conll(path)
  assert [s.words for s in sentences] == [("EU", "rejects"), ("Peter", "Blackburn")]
  assert [s.tags for s in sentences] == [("B-ORG", "O"), ("B-PER", "I-PER")]
  assert [s.line for s in sentences] == [3, 7]
  chunks = conll.read_conll(path, tag_column=2)
  assert chunks[1].tags == ("B-NP", "I-NP")


@pytest.mark.parametrize(
  "text, kwargs, message",
  [
    ("a B-X\nb\n", {}, "data.txt:2: 1 column(s) where the file's first token line has 2"),
    ("a\nb\n", {}, "data.txt:1: one column"),
    ("a B-X\n", {"tag_column": 0}, "tag_column=0 does not name a tag column"),
    ("a B-X\n", {"tag_column": 3}, "tag_column=3 does not name a tag column"),
    ("\n-DOCSTART- O\n\n", {}, "has no sentences"),
  ],
)
def test_malformed_conll_is_one_line_error(tmp_path, text, kwargs, message):
  with pytest.raises(ElectraError) as e:
    conll.read_conll(_write(tmp_path, text), **kwargs)
  assert message in str(e.value) and "\n" not in str(e.value)


def test_unlabelled_conll_and_text(tmp_path):
  sentences = conll.read_conll(_write(tmp_path, "a\nb\n\nc\n"), require_tags=False)
  assert [(s.words, s.tags) for s in sentences] == [(("a", "b"), None), (("c",), None)]
  text = conll.read_text(_write(tmp_path, "John lives  here\n\nok\n", "t.txt"))
  assert [(s.words, s.line) for s in text] == [(("John", "lives", "here"), 1), (("ok",), 3)]
  with pytest.raises(ElectraError, match="not found"):
    conll.read_conll(str(tmp_path / "missing.txt"))


def test_write_conll_round_trip(tmp_path):
  sentences = [conll.Sentence(("a", "b"), ("B-X", "O"), 1), conll.Sentence(("c",), ("O",), 4)]
  path = conll.write_conll(tmp_path / "out.conll", sentences, [["B-X", "B-X"], ["O"]])
  assert open(path).read() == "a B-X B-X\nb O B-X\n\nc O O\n\n"
  again = conll.read_conll(path, tag_column=1)
  assert [s.tags for s in again] == [("B-X", "O"), ("O",)]
  predicted = conll.read_conll(path)
  assert [s.tags for s in predicted] == [("B-X", "B-X"), ("O",)]


# (gold, predicted, correct chunks, predicted chunks, gold chunks), worked out by
# hand with conlleval's rules.
CASES = [
  # IOB2: one entity right (PER), one of the wrong type (LOC vs ORG).
  (["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "B-ORG"], 1, 2, 2),
  # IOB1: I- after O opens a chunk, so I-PER I-PER == B-PER I-PER.
  (["I-PER", "I-PER", "O", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC"], 2, 2, 2),
  # IOB1: B- splits two adjacent chunks of one type; predicting one long chunk gets neither.
  (["I-PER", "B-PER"], ["I-PER", "I-PER"], 0, 1, 2),
  # A type change inside I- tags starts a new chunk: B-PER I-LOC is PER + LOC.
  (["B-PER", "O"], ["B-PER", "I-LOC"], 1, 2, 1),
  # A chunk with a wrong boundary is wrong as a whole.
  (["B-ORG", "I-ORG", "I-ORG"], ["B-ORG", "I-ORG", "O"], 0, 1, 1),
  # IOBES: S- and B- ... E- chunks; E- closes a chunk.
  (["S-PER", "B-LOC", "E-LOC", "O"], ["S-PER", "B-LOC", "E-LOC", "S-LOC"], 2, 3, 2),
]


@pytest.mark.parametrize("gold, pred, correct, n_pred, n_gold", CASES)
def test_entity_scores_match_hand_counts(gold, pred, correct, n_pred, n_gold):
  scores = conll.entity_scores([gold], [pred])
  p, r = correct / n_pred, correct / n_gold
  assert scores["precision"] == pytest.approx(p)
  assert scores["recall"] == pytest.approx(r)
  assert scores["f1"] == pytest.approx(2 * p * r / (p + r) if correct else 0.0)
  assert scores["accuracy"] == pytest.approx(sum(g == q for g, q in zip(gold, pred)) / len(gold))


def test_entity_scores_pool_chunks_over_sentences():
  # Micro average over all sentences: 3 correct of 4 predicted, 5 gold.
  gold = [["B-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "B-PER", "B-LOC"]]
  pred = [["B-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O", "B-PER"]]
  scores = conll.entity_scores(gold, pred)
  assert scores["precision"] == pytest.approx(3 / 4)
  assert scores["recall"] == pytest.approx(3 / 5)
  assert scores["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
  assert scores["accuracy"] == pytest.approx(5 / 7)
  no_chunks = conll.entity_scores([["O", "O"]], [["O", "O"]])
  assert no_chunks["f1"] == 0.0 and no_chunks["accuracy"] == 1.0
  with pytest.raises(ElectraError, match="2 gold tags but 1 predicted"):
    conll.entity_scores([["O", "O"]], [["O"]])
