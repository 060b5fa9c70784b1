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

`featurize` turns examples into fixed-length `[CLS] question [SEP] context
window [SEP]` features with a document stride, as the official BERT/ELECTRA
`run_squad` code does, and `postprocess` maps per-token start/end logits back
to answer text (n-best spans, maximum answer length, the "max context" rule,
and for 2.0 the no-answer score against a threshold).

The fine-tuning task is `squad_adapter.py`; the official evaluation scripts
(`exact`, `HasAns_*`, best thresholds, ...) are `squad_eval.py`.
"""

from __future__ import annotations

import collections
import json
import os
import re
import string
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from electra_jax.errors import ElectraError
from electra_jax.textfiles import not_utf8


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


def read_squad(path: str | os.PathLike, *, labeled: bool = True) -> list[SquadExample]:
  """Reads a SQuAD 1.1 or 2.0 JSON file (train or dev) into examples, in file order.

  Args:
    labeled: every question must have answers or be marked `is_impossible`;
      False for a file to predict (answers, when present, are still checked).

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
  except UnicodeDecodeError:
    raise not_utf8(path) from None
  except json.JSONDecodeError as e:
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
        listed = _require(qa, "answers", qwhere, list) if labeled else qa.get("answers") or []
        if not isinstance(listed, list):
          raise ElectraError(f"{qwhere}: 'answers' must be a list")
        for n, ans in enumerate(listed):
          text = _require(ans, "text", f"{qwhere}.answers[{n}]", str)
          start = _require(ans, "answer_start", f"{qwhere}.answers[{n}]", int)
          if context[start : start + len(text)] != text:
            raise ElectraError(
              f"{qwhere}.answers[{n}]: answer_start {start} does not point at {text!r} in the context"
            )
          answers.append((text, start))
        if labeled and not answers and not is_impossible:
          raise ElectraError(f"{qwhere}: no answers but not marked is_impossible")
        examples.append(
          SquadExample(qas_id, title, question, context, tuple(answers), is_impossible)
        )
  return examples


# tfds `squad/v1.1` and `squad/v2.0` split names of our train / dev.
TFDS_SPLITS = {"train": "train", "dev": "validation", "validation": "validation"}


def _tfds_text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_tfds_squad(
  name: str, split: str, data_dir: str | os.PathLike | None = None
) -> list[SquadExample]:
  """Reads tfds `squad/v1.1` or `squad/v2.0` (prepared as array_record) into examples.

  Nothing is downloaded: prepare it first (`tfds build squad/v1.1
  --file_format=array_record`). Records come in tfds's (hashed) order; every
  answer is checked against its context as `read_squad` does.

  Args:
    name: `squad/v1.1` or `squad/v2.0`.
    split: `train`, or `dev` / `validation`.
    data_dir: the tfds data directory; None: tfds's default.

  Raises:
    ElectraError: another dataset, an unknown split, the dataset not
      prepared, or an answer off its context.
  """
  if name not in ("squad/v1.1", "squad/v2.0"):
    raise ElectraError(f"tfds dataset {name!r} is not SQuAD: use squad/v1.1 or squad/v2.0")
  if split not in TFDS_SPLITS:
    raise ElectraError(f"tfds {name} has no split {split!r}: use train or validation")
  try:
    import tensorflow_datasets as tfds

    source = tfds.data_source(
      name,
      split=TFDS_SPLITS[split],
      data_dir=None if data_dir is None else os.fspath(data_dir),
      download=False,
    )
  except Exception as e:  # tfds raises many types for "not there"; report any as one line
    where = os.fspath(data_dir) if data_dir is not None else "the default tfds data_dir"
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ElectraError(
      f"tfds {name} is not available under {where} ({reason}); prepare it with "
      f"`tfds build {name} --file_format=array_record`, or give the JSON file"
    ) from None
  examples = []
  for i in range(len(source)):
    record = source[i]
    context = _tfds_text(record["context"])
    qas_id = _tfds_text(record["id"])
    answers = []
    for text, start in zip(record["answers"]["text"], record["answers"]["answer_start"]):
      text, start = _tfds_text(text), int(start)
      if context[start : start + len(text)] != text:
        raise ElectraError(
          f"tfds {name} {split} {qas_id}: answer_start {start} does not point at {text!r}"
        )
      answers.append((text, start))
    impossible = bool(record.get("is_impossible", False))
    examples.append(
      SquadExample(
        qas_id,
        _tfds_text(record["title"]),
        _tfds_text(record["question"]),
        context,
        tuple(answers),
        impossible,
      )
    )
  return examples


def read_source(
  spec: str, *, labeled: bool = True, tfds_data_dir: str | None = None
) -> list[SquadExample]:
  """A SQuAD JSON file, or `tfds:squad/v1.1:train` (`tfds:NAME:SPLIT`) read with `read_tfds_squad`."""
  if not spec.startswith("tfds:"):
    return read_squad(spec, labeled=labeled)
  name, sep, split = spec[len("tfds:") :].rpartition(":")
  if not sep:
    raise ElectraError(f"{spec!r}: write tfds:NAME:SPLIT, e.g. tfds:squad/v1.1:validation")
  return read_tfds_squad(name, split, tfds_data_dir or None)


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


# --- Features (document stride) ---------------------------------------------------


class SquadFeatures(NamedTuple):
  """Model inputs for every window of every example, and what maps them back.

  Arrays have one row per feature: `input_ids`, `attention_mask`,
  `token_type_ids` (all (F, L) int32), `start_positions` / `end_positions` (F,)
  int32 token indices of the first gold answer, 0 ([CLS]) when the window does
  not contain it or the question has no answer. `example_index[f]` is the
  example the feature came from; `offsets[f][t]` is the (start, end) character
  span of token t in the context, None outside the context; `max_context[f][t]`
  says whether this window gives token t its most central position.
  `unmapped` lists the examples whose first gold answer covers no context
  token (e.g. only whitespace): their features point at [CLS], which would
  teach "no answer" for an answerable question, so training drops them.
  """

  input_ids: np.ndarray
  attention_mask: np.ndarray
  token_type_ids: np.ndarray
  start_positions: np.ndarray
  end_positions: np.ndarray
  example_index: np.ndarray
  offsets: list[list[tuple[int, int] | None]]
  max_context: list[list[bool]]
  unmapped: tuple[int, ...] = ()


def _encode_text(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
  enc = tokenizer.encode(text)
  return enc.ids[1:-1], [tuple(o) for o in enc.offsets[1:-1]]


def featurize(
  examples: Sequence[SquadExample],
  tokenizer,
  max_seq_length: int = 384,
  doc_stride: int = 128,
  max_query_length: int = 64,
) -> SquadFeatures:
  """Splits each example's context into overlapping windows of tokens.

  The question is cut to `max_query_length` tokens; each window holds up to
  `max_seq_length - len(question) - 3` context tokens and starts `doc_stride`
  tokens after the previous one (the last window reaches the end).

  Raises:
    ElectraError: the lengths leave no room for context tokens.
  """
  if not examples:
    raise ElectraError("no SQuAD examples to featurize")
  if doc_stride < 1 or max_query_length < 1:
    raise ElectraError("doc_stride and max_query_length must be >= 1")
  if max_seq_length - max_query_length - 3 < 1:
    raise ElectraError(
      f"max_seq_length {max_seq_length} leaves no room for context after a "
      f"{max_query_length}-token question: raise it or lower max_query_length"
    )
  cls_id, sep_id, pad_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id
  rows = collections.defaultdict(list)
  offsets_out, max_context_out, unmapped = [], [], []
  for index, ex in enumerate(examples):
    q_ids, _ = _encode_text(tokenizer, ex.question)
    q_ids = q_ids[:max_query_length]
    c_ids, c_offsets = _encode_text(tokenizer, ex.context)
    budget = max_seq_length - len(q_ids) - 3
    # The first gold answer as a token span (the official code trains on it).
    answer = None
    if ex.answers and not ex.is_impossible:
      text, char_start = ex.answers[0]
      char_end = char_start + len(text)
      inside = [i for i, (a, b) in enumerate(c_offsets) if a < char_end and b > char_start]
      if inside:
        answer = (inside[0], inside[-1])
      else:
        unmapped.append(index)
    windows = []  # (first context token, length): the official sliding-window loop
    w_start = 0
    while True:
      w_len = min(len(c_ids) - w_start, budget)
      windows.append((w_start, w_len))
      if w_start + w_len >= len(c_ids):
        break
      w_start += min(w_len, doc_stride)
    for w_start, w_len in windows:
      ids = [cls_id, *q_ids, sep_id, *c_ids[w_start : w_start + w_len], sep_id]
      context_at = len(q_ids) + 2
      types = [0] * context_at + [1] * (w_len + 1)
      offs: list[tuple[int, int] | None] = [None] * len(ids)
      maxc = [False] * len(ids)
      for t in range(w_len):
        token = w_start + t
        offs[context_at + t] = c_offsets[token]
        maxc[context_at + t] = _is_max_context(windows, w_start, token)
      start = end = 0
      if answer is not None and w_start <= answer[0] and answer[1] < w_start + w_len:
        start, end = answer[0] - w_start + context_at, answer[1] - w_start + context_at
      pad = max_seq_length - len(ids)
      rows["input_ids"].append(ids + [pad_id] * pad)
      rows["attention_mask"].append([1] * len(ids) + [0] * pad)
      rows["token_type_ids"].append(types + [0] * pad)
      rows["start_positions"].append(start)
      rows["end_positions"].append(end)
      rows["example_index"].append(index)
      offsets_out.append(offs + [None] * pad)
      max_context_out.append(maxc + [False] * pad)
  arrays = {k: np.asarray(v, np.int32) for k, v in rows.items()}  # every example has a window
  return SquadFeatures(
    **arrays, offsets=offsets_out, max_context=max_context_out, unmapped=tuple(unmapped)
  )


def _is_max_context(windows: Sequence[tuple[int, int]], here: int, token: int) -> bool:
  """The official rule: the window where `token` has the most context on its shorter side wins."""
  best, best_score = None, None
  for start, length in windows:
    if not start <= token < start + length:
      continue
    left, right = token - start, start + length - 1 - token
    score = min(left, right) + 0.01 * length
    if best_score is None or score > best_score:
      best, best_score = start, score
  return best == here


# --- Post-processing --------------------------------------------------------------


def is_valid_span(
  features: SquadFeatures, f: int, start: int, end: int, max_answer_length: int
) -> bool:
  """Whether tokens `start..end` of feature `f` may be an answer (the official filters).

  Both ends are context tokens (not the question, [CLS], [SEP] or padding),
  the start is in its max-context window, start <= end, and the span has at
  most `max_answer_length` tokens. Shared by both QA heads' post-processing.
  """
  offs = features.offsets[f]
  return (
    offs[start] is not None
    and offs[end] is not None
    and features.max_context[f][start]
    and start <= end
    and end - start + 1 <= max_answer_length
  )


def span_text(example: SquadExample, features: SquadFeatures, f: int, start: int, end: int) -> str:
  """The context text of tokens `start..end` of feature `f`, between their character offsets."""
  offs = features.offsets[f]
  return example.context[offs[start][0] : offs[end][1]]


class SpanPredictions(NamedTuple):
  """Per question id: the best non-null span's text and its no-answer score.

  `null_odds[q]` is the lowest [CLS] start + end logit over the question's
  features minus the best span's start + end logit (HF's and the official
  code's `null_score_diff`); the question is answered "" when it exceeds the
  threshold. A question with no valid span has the answer "" and the [CLS]
  score alone (the official code's nonce span scores 0).
  """

  answers: dict[str, str]
  null_odds: dict[str, float]


def best_spans(
  examples: Sequence[SquadExample],
  features: SquadFeatures,
  start_logits: np.ndarray,
  end_logits: np.ndarray,
  *,
  n_best: int = 20,
  max_answer_length: int = 30,
) -> SpanPredictions:
  """The best span of each example from (F, L) start/end logits.

  For each example the best span over all its features is kept: both ends in
  the context, start <= end, at most `max_answer_length` tokens, and the start
  token in its max-context window; among the `n_best` highest start and end
  logits of each feature, the highest start + end logit wins. The text is the
  context slice between the span's character offsets.
  """
  start_logits = np.asarray(start_logits)
  end_logits = np.asarray(end_logits)
  if start_logits.shape != features.input_ids.shape or end_logits.shape != start_logits.shape:
    raise ElectraError(
      f"logits of shape {start_logits.shape} / {end_logits.shape} do not match the features' "
      f"{features.input_ids.shape}"
    )
  by_example = collections.defaultdict(list)
  for f, index in enumerate(features.example_index):
    by_example[int(index)].append(f)
  answers, null_odds = {}, {}
  for index, ex in enumerate(examples):
    best_score, best_text = None, ""
    null_score = None
    for f in by_example.get(index, []):
      s_log, e_log = start_logits[f], end_logits[f]
      offs, maxc = features.offsets[f], features.max_context[f]
      cls = float(s_log[0] + e_log[0])
      null_score = cls if null_score is None else min(null_score, cls)
      top_s = np.argsort(-s_log, kind="stable")[:n_best]
      top_e = np.argsort(-e_log, kind="stable")[:n_best]
      for s in top_s:
        if offs[s] is None or not maxc[s]:
          continue
        for e in top_e:
          if not is_valid_span(features, f, s, e, max_answer_length):
            continue
          score = float(s_log[s] + e_log[e])
          if best_score is None or score > best_score:
            best_score, best_text = score, span_text(ex, features, f, s, e)
    answers[ex.qas_id] = best_text
    null_odds[ex.qas_id] = (null_score or 0.0) - (best_score or 0.0)
  return SpanPredictions(answers, null_odds)


def postprocess(
  examples: Sequence[SquadExample],
  features: SquadFeatures,
  start_logits: np.ndarray,
  end_logits: np.ndarray,
  *,
  n_best: int = 20,
  max_answer_length: int = 30,
  null_threshold: float | None = None,
) -> dict[str, str]:
  """Answer text per question id from (F, L) start/end logits (see `best_spans`).

  With `null_threshold` (SQuAD 2.0) the answer is "" when the lowest [CLS]
  score over the features minus the best span's score exceeds the threshold.
  """
  spans = best_spans(
    examples, features, start_logits, end_logits, n_best=n_best, max_answer_length=max_answer_length
  )
  if null_threshold is None:
    return spans.answers
  return {
    q: "" if spans.null_odds[q] > null_threshold else text for q, text in spans.answers.items()
  }
