"""SQuAD 1.1 / 2.0: reading the official JSON files and the official EM / F1.

The reader turns `{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}`
into one `SquadExample` per question. Every gold answer's `answer_start` is
checked against the context (`context[start:start + len(text)] == text`); the
official v1.1 dev file passes this check for all 34,726 answers.

The metrics are those of the official evaluation scripts (`evaluate-v1.1.py`,
`evaluate-v2.0.py`): answers are normalised (lower case, punctuation and the
articles a/an/the removed, whitespace collapsed), exact match and token-level
F1 are taken against every gold answer and the best is kept, and the scores
are averaged over questions, as percentages. In SQuAD 2.0 a question without
an answer has the single gold answer "" and is answered by predicting "".
Empty answers are scored as `evaluate-v2.0.py` does (F1 1 when both are
empty); v1.1's script differs only there, and v1.1 gold answers are never
empty after normalisation.

Not here yet: tokenised features with a document stride, span post-processing
(n-best, max answer length, the no-answer threshold) and the fine-tuning job.
"""

from __future__ import annotations

import collections
import json
import os
import re
import string
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from electra_jax.errors import ElectraError


class SquadExample(NamedTuple):
  """One question. `answers` are (text, character start in `context`) pairs."""

  qas_id: str
  title: str
  question: str
  context: str
  answers: tuple[tuple[str, int], ...]
  is_impossible: bool


def _require(mapping, key: str, where: str, kind=None):
  if not isinstance(mapping, dict) or key not in mapping:
    raise ElectraError(f"{where}: missing {key!r}; is this a SQuAD JSON file?")
  value = mapping[key]
  if kind is not None and not isinstance(value, kind):
    raise ElectraError(f"{where}: {key!r} must be a {kind.__name__}, got {type(value).__name__}")
  return value


def read_squad(path: str | os.PathLike) -> list[SquadExample]:
  """Reads a SQuAD 1.1 or 2.0 JSON file (train or dev) into examples, in file order.

  Raises:
    ElectraError: the file is missing or not JSON, a required key is missing,
      a question id repeats, or an answer's `answer_start` does not point at
      its text in the context.
  """
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      blob = json.load(f)
  except FileNotFoundError:
    raise ElectraError(f"{path} does not exist") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ElectraError(f"{path} is not valid JSON: {e}") from None
  articles = _require(blob, "data", path, list)
  examples: list[SquadExample] = []
  seen: set[str] = set()
  for a, article in enumerate(articles):
    title = str(article.get("title", "")) if isinstance(article, dict) else ""
    paragraphs = _require(article, "paragraphs", f"{path}: data[{a}]", list)
    for p, paragraph in enumerate(paragraphs):
      where = f"{path}: data[{a}].paragraphs[{p}]"
      context = _require(paragraph, "context", where, str)
      for q, qa in enumerate(_require(paragraph, "qas", where, list)):
        qwhere = f"{where}.qas[{q}]"
        qas_id = str(_require(qa, "id", qwhere))
        if qas_id in seen:
          raise ElectraError(f"{qwhere}: question id {qas_id!r} appears twice")
        seen.add(qas_id)
        question = _require(qa, "question", qwhere, str)
        is_impossible = bool(qa.get("is_impossible", False))
        answers = []
        for n, ans in enumerate(_require(qa, "answers", qwhere, list)):
          text = _require(ans, "text", f"{qwhere}.answers[{n}]", str)
          start = _require(ans, "answer_start", f"{qwhere}.answers[{n}]", int)
          if context[start : start + len(text)] != text:
            raise ElectraError(
              f"{qwhere}.answers[{n}]: answer_start {start} does not point at {text!r} in the context"
            )
          answers.append((text, start))
        if not answers and not is_impossible:
          raise ElectraError(f"{qwhere}: no answers but not marked is_impossible")
        examples.append(
          SquadExample(qas_id, title, question, context, tuple(answers), is_impossible)
        )
  return examples


# --- Official metrics -------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """The official normalisation: lower, drop punctuation, drop a/an/the, collapse spaces."""
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
  """Token-overlap F1 of the normalised answers (both empty: 1; one empty: 0)."""
  pred_tokens = normalize_answer(prediction).split()
  gold_tokens = normalize_answer(gold).split()
  if not pred_tokens or not gold_tokens:
    return float(pred_tokens == gold_tokens)
  common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
  overlap = sum(common.values())
  if overlap == 0:
    return 0.0
  precision = overlap / len(pred_tokens)
  recall = overlap / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def _gold_texts(example: SquadExample) -> list[str]:
  # evaluate-v2.0.py: a question with no (normalisable) answer has the gold answer "".
  texts = [text for text, _ in example.answers if normalize_answer(text)]
  return texts or [""]


def squad_metrics(
  predictions: Mapping[str, str], examples: Sequence[SquadExample], *, allow_missing: bool = False
) -> dict[str, float]:
  """Official SQuAD scores (percentages) of `predictions` (question id -> answer text).

  Returns `exact_match`, `f1` and `total`; when some questions are
  unanswerable (SQuAD 2.0) also `has_answer_*` and `no_answer_*` splits.

  Args:
    allow_missing: score a missing prediction as wrong (the official scripts
      print a warning) instead of raising.

  Raises:
    ElectraError: a prediction is missing (unless `allow_missing`), a
      prediction is not a string, or `examples` is empty.
  """
  if not examples:
    raise ElectraError("no SQuAD examples to score")
  missing = [ex.qas_id for ex in examples if ex.qas_id not in predictions]
  if missing and not allow_missing:
    raise ElectraError(
      f"{len(missing)} of {len(examples)} questions have no prediction (first: {missing[0]!r})"
    )
  sums = collections.defaultdict(float)
  counts = collections.Counter()
  for ex in examples:
    if ex.qas_id not in predictions:
      em = score = 0.0
    else:
      prediction = predictions[ex.qas_id]
      if not isinstance(prediction, str):
        raise ElectraError(f"prediction for {ex.qas_id!r} must be a string, got {prediction!r}")
      golds = _gold_texts(ex)
      em = max(exact_match(prediction, g) for g in golds)
      score = max(f1(prediction, g) for g in golds)
    for group in ("", "no_answer_" if ex.is_impossible else "has_answer_"):
      sums[group + "exact_match"] += em
      sums[group + "f1"] += score
      counts[group] += 1
  out: dict[str, float] = {}
  for group in ("", "has_answer_", "no_answer_"):
    if counts[group] and (group == "" or counts["no_answer_"]):
      out[group + "exact_match"] = 100.0 * sums[group + "exact_match"] / counts[group]
      out[group + "f1"] = 100.0 * sums[group + "f1"] / counts[group]
      out[group + "total"] = float(counts[group])
  return out
