"""The official SQuAD evaluation scripts, as functions over `squad.read_squad` examples.

`evaluate_v1` is `evaluate-v1.1.py` (`exact_match`, `f1`) and `evaluate_v2`
is `evaluate-v2.0.py` as google-research/electra ships it
(`finetune/qa/squad_official_eval.py`): `exact`, `f1`, `total`, the
`HasAns_*` / `NoAns_*` splits, and with no-answer scores (`null_odds.json`)
the best thresholds `best_exact` / `best_exact_thresh` / `best_f1` /
`best_f1_thresh`. The answer normalisation is `squad.normalize_answer`.

The two scripts differ in small ways that are kept: v1.1 takes every gold
answer as given and its F1 is 0 when nothing is shared (even when both sides
normalise to nothing); v2.0 drops gold answers that normalise to nothing (a
question left with none has the gold answer "") and scores two empty answers
F1 1. A question is answerable in v2.0 when its `answers` list is not empty.

A question without a prediction scores 0 (`evaluate-v1.1.py` says so on
stderr; `evaluate-v2.0.py` would leave it out of the total and then fail on
the HasAns split): `missing` is returned beside the metrics so callers can
report it.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from electra_jax.errors import ElectraError
from electra_jax.tasks import squad

VERSIONS = ("1.1", "2.0")
# `evaluate-v2.0.py --na-prob-thresh` default: predict "" when the no-answer score exceeds it.
DEFAULT_NA_PROB_THRESH = 1.0


class Evaluation(NamedTuple):
  """Official metrics (an ordered dict, the scripts' keys) and the ids that had no prediction."""

  metrics: dict
  missing: list[str]


def _f1_v1(prediction: str, gold: str) -> float:
  pred_tokens = squad.normalize_answer(prediction).split()
  gold_tokens = squad.normalize_answer(gold).split()
  common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
  overlap = sum(common.values())
  if overlap == 0:
    return 0.0
  precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def _check_predictions(predictions: Mapping, examples: Sequence[squad.SquadExample]) -> list[str]:
  if not examples:
    raise ElectraError("no SQuAD questions to score")
  if not isinstance(predictions, Mapping):
    raise ElectraError("predictions must be a JSON object {question id: answer text}")
  bad = next((k for k, v in predictions.items() if not isinstance(v, str)), None)
  if bad is not None:
    raise ElectraError(
      f"the prediction for {bad!r} is {predictions[bad]!r}, not a string (answer text)"
    )
  ids = {ex.qas_id for ex in examples}
  if predictions and not ids & set(predictions):
    raise ElectraError(
      "no prediction id matches a question of the data file: are they for another file?"
    )
  return [ex.qas_id for ex in examples if ex.qas_id not in predictions]


def evaluate_v1(
  examples: Sequence[squad.SquadExample], predictions: Mapping[str, str]
) -> Evaluation:
  """`evaluate-v1.1.py`: `{"exact_match", "f1"}` in percent over all questions."""
  missing = _check_predictions(predictions, examples)
  unanswerable = next((ex.qas_id for ex in examples if not ex.answers), None)
  if unanswerable is not None:
    raise ElectraError(
      f"question {unanswerable!r} has no gold answer: score SQuAD 2.0 data with version 2.0"
    )
  em = f1 = 0.0
  for ex in examples:
    if ex.qas_id not in predictions:
      continue
    prediction = predictions[ex.qas_id]
    golds = [text for text, _ in ex.answers]
    em += max(squad.normalize_answer(prediction) == squad.normalize_answer(g) for g in golds)
    f1 += max(_f1_v1(prediction, g) for g in golds)
  total = len(examples)
  return Evaluation({"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total}, missing)


def _raw_scores_v2(examples, predictions):
  exact, f1 = {}, {}
  for ex in examples:
    golds = [text for text, _ in ex.answers if squad.normalize_answer(text)] or [""]
    prediction = predictions.get(ex.qas_id, "")
    present = ex.qas_id in predictions
    exact[ex.qas_id] = float(present and max(squad.exact_match(prediction, g) for g in golds))
    f1[ex.qas_id] = max(squad.f1(prediction, g) for g in golds) if present else 0.0
  return exact, f1


def _eval_dict(exact: dict, f1: dict, qids: list[str]) -> dict:
  total = len(qids)
  return {
    "exact": 100.0 * sum(exact[k] for k in qids) / total,
    "f1": 100.0 * sum(f1[k] for k in qids) / total,
    "total": total,
  }


def _best_threshold(preds, scores, na_probs, has_answer) -> tuple[float, float]:
  """`find_best_thresh`: sweep the no-answer score, best total score and its threshold."""
  best = current = float(sum(not v for v in has_answer.values()))
  best_thresh = 0.0
  for qid in sorted(na_probs, key=lambda k: na_probs[k]):
    if qid not in scores:
      continue
    if has_answer[qid]:
      current += scores[qid]
    elif preds.get(qid):
      current -= 1
    if current > best:
      best, best_thresh = current, na_probs[qid]
  return 100.0 * best / len(scores), best_thresh


def evaluate_v2(
  examples: Sequence[squad.SquadExample],
  predictions: Mapping[str, str],
  na_probs: Mapping[str, float] | None = None,
  na_prob_thresh: float = DEFAULT_NA_PROB_THRESH,
) -> Evaluation:
  """`evaluate-v2.0.py`: the answer of a question whose `na_probs` exceeds `na_prob_thresh` is "".

  Args:
    examples: the data file's questions.
    predictions: question id -> answer text (the best non-null span, as the
      official ELECTRA code writes it, or "" for no answer).
    na_probs: question id -> no-answer score (`null_odds.json`); with it the
      best thresholds are added.
    na_prob_thresh: the threshold applied to `na_probs`.
  """
  missing = _check_predictions(predictions, examples)
  has_answer = {ex.qas_id: bool(ex.answers) and not ex.is_impossible for ex in examples}
  if na_probs is not None:
    lacking = [q for q in has_answer if q not in na_probs]
    if lacking:
      raise ElectraError(
        f"{len(lacking)} questions have no no-answer score (first: {lacking[0]!r})"
      )
    bad = next((k for k, v in na_probs.items() if not isinstance(v, int | float)), None)
    if bad is not None:
      raise ElectraError(f"the no-answer score of {bad!r} is {na_probs[bad]!r}, not a number")
  probs = {k: float(na_probs[k]) for k in has_answer} if na_probs is not None else None
  exact_raw, f1_raw = _raw_scores_v2(examples, predictions)
  exact, f1 = dict(exact_raw), dict(f1_raw)
  if probs is not None:
    for qid, p in probs.items():
      if p > na_prob_thresh:
        exact[qid] = f1[qid] = float(not has_answer[qid])
  out = _eval_dict(exact, f1, list(has_answer))
  for name, wanted in (("HasAns", True), ("NoAns", False)):
    qids = [q for q, v in has_answer.items() if v is wanted]
    if qids:
      out.update({f"{name}_{k}": v for k, v in _eval_dict(exact, f1, qids).items()})
  if probs is not None:
    out["best_exact"], out["best_exact_thresh"] = _best_threshold(
      predictions, exact_raw, probs, has_answer
    )
    out["best_f1"], out["best_f1_thresh"] = _best_threshold(predictions, f1_raw, probs, has_answer)
  return Evaluation(out, missing)


def _read_json_object(path: str, what: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      blob = json.load(f)
  except FileNotFoundError:
    raise ElectraError(f"{what} {path} does not exist") from None
  except UnicodeDecodeError:
    raise ElectraError(f"{what} {path} is not UTF-8 text") from None
  except json.JSONDecodeError as e:
    raise ElectraError(f"{what} {path} is not valid JSON: {e}") from None
  if not isinstance(blob, dict):
    raise ElectraError(f"{what} {path} must hold a JSON object {{question id: value}}")
  return blob


def evaluate_files(
  data_file: str | os.PathLike,
  pred_file: str | os.PathLike,
  na_prob_file: str | os.PathLike | None = None,
  *,
  na_prob_thresh: float = DEFAULT_NA_PROB_THRESH,
  version: str | None = None,
) -> Evaluation:
  """Scores a predictions file against a SQuAD data file, as the official scripts do.

  Args:
    version: "1.1" or "2.0"; None picks 2.0 when the data has unanswerable
      questions or `na_prob_file` is given, else 1.1.
  """
  examples = squad.read_squad(data_file)
  predictions = _read_json_object(os.fspath(pred_file), "predictions file")
  na_probs = (
    None if na_prob_file is None else _read_json_object(os.fspath(na_prob_file), "--na-prob-file")
  )
  if version is None:
    v2 = na_probs is not None or any(ex.is_impossible or not ex.answers for ex in examples)
    version = "2.0" if v2 else "1.1"
  if version not in VERSIONS:
    raise ElectraError(f"SQuAD version must be 1.1 or 2.0, got {version!r}")
  if version == "1.1":
    if na_probs is not None:
      raise ElectraError(
        "--na-prob-file is for SQuAD 2.0; version 1.1 has no unanswerable questions"
      )
    return evaluate_v1(examples, predictions)
  return evaluate_v2(examples, predictions, na_probs, na_prob_thresh)
