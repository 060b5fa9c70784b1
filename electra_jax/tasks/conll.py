"""CoNLL column files for token classification: reading, writing, entity-level scores.

    sentences = read_conll("train.txt")            # [Sentence(words, tags, line)]
    scores = entity_scores(gold_tags, pred_tags)    # precision, recall, f1, accuracy

Format (CoNLL-2000 chunking, CoNLL-2003 NER, the official ELECTRA tagging
reader `finetune/tagging/tagging_tasks.py`): whitespace-separated columns, one
token per line, a blank line between sentences, `-DOCSTART-` lines skipped.
The word is the first column and the tag the last, unless `tag_column` names
another (0-based; -1 = last). Every token line of a file must have as many
columns as its first one, so a stray line is an error naming the file and line,
never a silently shifted tag.

Scores are entity-level precision / recall / F1 with the conlleval definition
(`seqeval`'s default mode is a port of conlleval: `I-X` after `O` or after a
chunk of another type opens a chunk, so IOB1 and IOB2 files both work, and
`E-`/`S-` close chunks as in IOBES), plus word accuracy; all over words, with
the tags as given (no re-encoding).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from electra_jax import fileio
from electra_jax.errors import ElectraError
from electra_jax.textfiles import utf8_lines

DOCSTART = "-DOCSTART-"


@dataclasses.dataclass(frozen=True)
class Sentence:
  """One sentence of a CoNLL file.

  Attributes:
    words: the first column of each token line.
    tags: the tag column of each token line, or None (unlabelled input).
    line: file line number of the sentence's first token (for messages).
  """

  words: tuple[str, ...]
  tags: tuple[str, ...] | None
  line: int


def read_conll(
  path: str | os.PathLike, tag_column: int = -1, *, require_tags: bool = True
) -> list[Sentence]:
  """Reads a CoNLL column file.

  Args:
    path: the file (UTF-8).
    tag_column: index of the tag column (0-based, -1 = last; the word is
      always column 0).
    require_tags: False for unlabelled data: a file of one column then gives
      sentences with `tags=None`.

  Returns:
    The sentences in file order.

  Raises:
    ElectraError: missing or empty file, a line with another number of
      columns than the file's first token line, a tag column the lines do
      not have, or (with `require_tags`) a file of one column.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ElectraError(f"CoNLL file {path} not found")
  sentences: list[Sentence] = []
  words: list[str] = []
  tags: list[str] = []
  start, width, labelled = 0, None, False

  def flush():
    if words:
      sentences.append(Sentence(tuple(words), tuple(tags) if labelled else None, start))
      words.clear()
      tags.clear()

  with open(path, encoding="utf-8-sig") as f:
    for line_no, line in enumerate(utf8_lines(f, path), start=1):
      columns = line.split()
      if not columns:
        flush()
        continue
      if columns[0] == DOCSTART:
        flush()
        continue
      if width is None:
        width = len(columns)
        labelled = _check_width(path, line_no, width, tag_column, require_tags)
      elif len(columns) != width:
        raise ElectraError(
          f"{path}:{line_no}: {len(columns)} column(s) where the file's first token line has "
          f"{width}; one token per line, whitespace-separated columns, blank lines between sentences"
        )
      if not words:
        start = line_no
      words.append(columns[0])
      if labelled:
        tags.append(columns[tag_column])
  flush()
  if not sentences:
    raise ElectraError(f"{path} has no sentences (expected CoNLL columns: word ... tag)")
  return sentences


def _check_width(path, line_no, width, tag_column, require_tags) -> bool:
  """Whether lines of `width` columns carry tags; an error when they must and cannot."""
  if width == 1:
    if require_tags:
      raise ElectraError(
        f"{path}:{line_no}: one column; a labelled CoNLL file needs the word and a tag column"
      )
    return False
  if not -width <= tag_column < width or tag_column in (0, -width):
    raise ElectraError(
      f"{path}:{line_no}: tag_column={tag_column} does not name a tag column of a line with "
      f"{width} columns (0 is the word; use 1..{width - 1} or -1 for the last)"
    )
  return True


def read_text(path: str | os.PathLike) -> list[Sentence]:
  """One sentence per line, words split on whitespace; blank lines are skipped."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ElectraError(f"input file {path} not found")
  with open(path, encoding="utf-8-sig") as f:
    sentences = [
      Sentence(tuple(line.split()), None, i)
      for i, line in enumerate(utf8_lines(f, path), start=1)
      if line.strip()
    ]
  if not sentences:
    raise ElectraError(f"{path} has no text (expected one sentence per line)")
  return sentences


def write_conll(
  path: str | os.PathLike, sentences: Sequence[Sentence], predicted: Sequence[Sequence[str]]
) -> str:
  """Writes `word [gold] predicted` per token, a blank line after each sentence (atomically).

  The gold column is written when the sentences have tags, so the file can be
  scored with conlleval as it is.
  """
  with fileio.atomic_writer(path) as f:
    for sentence, tags in zip(sentences, predicted, strict=True):
      gold = sentence.tags or [None] * len(sentence.words)
      for word, g, p in zip(sentence.words, gold, tags, strict=True):
        f.write(f"{word} {p}\n" if g is None else f"{word} {g} {p}\n")
      f.write("\n")
  return os.fspath(path)


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
  """Entity-level precision / recall / F1 (conlleval, via seqeval) and word accuracy.

  Args:
    gold: each sentence's gold tags.
    predicted: each sentence's predicted tags (same lengths).

  Returns:
    `{"precision", "recall", "f1", "accuracy"}` as fractions in [0, 1]
    (0 when there is nothing to count, as conlleval prints).
  """
  from seqeval import metrics as seqeval_metrics

  gold, predicted = [list(s) for s in gold], [list(s) for s in predicted]
  for g, p in zip(gold, predicted, strict=True):
    if len(g) != len(p):
      raise ElectraError(f"a sentence has {len(g)} gold tags but {len(p)} predicted")
  kw = {"zero_division": 0}
  return {
    "precision": float(seqeval_metrics.precision_score(gold, predicted, **kw)),
    "recall": float(seqeval_metrics.recall_score(gold, predicted, **kw)),
    "f1": float(seqeval_metrics.f1_score(gold, predicted, **kw)),
    "accuracy": float(seqeval_metrics.accuracy_score(gold, predicted)) if gold else 0.0,
  }
