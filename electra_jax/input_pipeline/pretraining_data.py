"""The ELECTRA pretraining example builder and the record format.

`ExampleBuilder` follows google-research/electra `build_pretraining_dataset.py`
(`ExampleBuilder.add_line` / `_create_example` / `_make_tf_example`):
  - tokenized lines ("sentences") accumulate until their total length reaches
    the target length; the end of a document (a blank line there) flushes
    whatever has accumulated, so an example never spans two documents;
  - with probability 0.1 the example keeps a single segment; otherwise
    sentences go to segment A while A stays under (target - 3) // 2 tokens
    (the first sentence always does, one that would cross the half goes to A
    with probability 0.5 while B is still empty), the rest to segment B;
  - A is trimmed to max_length - 2 tokens, B to what is left after
    `[CLS] A [SEP]` and the final `[SEP]`;
  - after each example the next target length is max_length, or with
    probability 0.05 a uniform random length in [5, max_length];
  - `[CLS] A [SEP] B [SEP]`, segment ids 0 for `[CLS] A [SEP]` and 1 for
    `B [SEP]`, zero (pad) padding to max_length.
The random draws happen in the official order on a `random.Random(seed)`.
One difference: a line that tokenizes to nothing is skipped (the official
code appends an empty sentence, which changes nothing but can consume a
random draw).

Record format (what `prepare.py` writes, one array_record record per
example): the little-endian array `[n_a, id_0, ..., id_{n-1}]` in the
manifest's `token_dtype` (uint16 when the vocabulary fits, else int32), where
`id_*` are the example's tokens without padding and `n_a` counts the segment-0
positions (`[CLS] A [SEP]`). `decode_batch` turns records into the padded
`input_ids` / `input_mask` / `segment_ids` arrays of the official format.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

SINGLE_SEGMENT_PROB = 0.1
SHORT_TARGET_PROB = 0.05
MIN_TARGET_LENGTH = 5


class ExampleBuilder:
  """Turns a stream of tokenized sentences into packed examples."""

  def __init__(self, max_length: int, cls_id: int, sep_id: int, rng: random.Random):
    """Creates a builder.

    Args:
      max_length: example length, special tokens included (>= 5).
      cls_id: id of `[CLS]`.
      sep_id: id of `[SEP]`.
      rng: source of the random draws (seed it for reproducible examples).
    """
    self._max_length = max_length
    self._cls_id = cls_id
    self._sep_id = sep_id
    self._rng = rng
    self._current_sentences: list[list[int]] = []
    self._current_length = 0
    self._target_length = max_length

  def add_sentence(self, token_ids: Sequence[int]) -> tuple[list[int], int] | None:
    """Adds one tokenized line; returns an example when one is complete.

    Args:
      token_ids: the line's token ids (no special tokens).

    Returns:
      None, or `(ids, n_a)`: the unpadded example and the number of its
      segment-0 positions.
    """
    if not token_ids:
      return None
    self._current_sentences.append(list(token_ids))
    self._current_length += len(token_ids)
    if self._current_length >= self._target_length:
      return self._create_example()
    return None

  def end_document(self) -> tuple[list[int], int] | None:
    """Ends the current document: flushes what has accumulated, if anything."""
    if self._current_length != 0:
      return self._create_example()
    return None

  def _create_example(self) -> tuple[list[int], int]:
    rng = self._rng
    if rng.random() < SINGLE_SEGMENT_PROB:
      first_target = 100000
    else:
      # -3 for the [CLS] and two [SEP] not yet in the text.
      first_target = (self._target_length - 3) // 2

    first: list[int] = []
    second: list[int] = []
    for sentence in self._current_sentences:
      # Same short-circuit order as the official code: the 0.5 draw happens
      # only when the sentence would cross the half and B is still empty.
      if (
        not first
        or len(first) + len(sentence) < first_target
        or (not second and len(first) < first_target and rng.random() < 0.5)
      ):
        first += sentence
      else:
        second += sentence

    first = first[: self._max_length - 2]
    second = second[: max(0, self._max_length - len(first) - 3)]

    self._current_sentences = []
    self._current_length = 0
    if rng.random() < SHORT_TARGET_PROB:
      self._target_length = rng.randint(MIN_TARGET_LENGTH, self._max_length)
    else:
      self._target_length = self._max_length

    ids = [self._cls_id, *first, self._sep_id]
    n_a = len(ids)
    if second:
      ids += [*second, self._sep_id]
    return ids, n_a


def build_examples(
  documents: Sequence[Sequence[Sequence[int]]],
  max_length: int,
  cls_id: int,
  sep_id: int,
  rng: random.Random,
) -> list[tuple[list[int], int]]:
  """Runs an `ExampleBuilder` over tokenized documents.

  Args:
    documents: documents, each a list of tokenized sentences.
    max_length: example length.
    cls_id: id of `[CLS]`.
    sep_id: id of `[SEP]`.
    rng: random source.

  Returns:
    the `(ids, n_a)` examples in order.
  """
  builder = ExampleBuilder(max_length, cls_id, sep_id, rng)
  examples = []
  for document in documents:
    for sentence in document:
      example = builder.add_sentence(sentence)
      if example is not None:
        examples.append(example)
    example = builder.end_document()
    if example is not None:
      examples.append(example)
  return examples


def token_dtype(vocab_size: int, max_length: int) -> np.dtype:
  """uint16 when every id and length fits, else int32."""
  return np.dtype("<u2") if max(vocab_size, max_length + 1) <= 65536 else np.dtype("<i4")


def encode_record(ids: Sequence[int], n_a: int, dtype: np.dtype) -> bytes:
  """Serializes one example as `[n_a, *ids]` (see the module docstring)."""
  return np.asarray([n_a, *ids], dtype=dtype).tobytes()


def decode_batch(
  records: Sequence[bytes], max_length: int, dtype: np.dtype, pad_id: int = 0
) -> dict[str, np.ndarray]:
  """Decodes records into padded int32 arrays, official feature names.

  Args:
    records: serialized examples.
    max_length: the padded length.
    dtype: the records' token dtype.
    pad_id: padding id (0 in the official format and both our tokenizers).

  Returns:
    {"input_ids", "input_mask", "segment_ids"}: int32 [len(records), max_length].
  """
  n = len(records)
  input_ids = np.full((n, max_length), pad_id, np.int32)
  lengths = np.empty(n, np.int64)
  n_a = np.empty(n, np.int64)
  for i, record in enumerate(records):
    values = np.frombuffer(record, dtype=dtype)
    length = len(values) - 1
    input_ids[i, :length] = values[1:]
    lengths[i] = length
    n_a[i] = values[0]
  positions = np.arange(max_length)[None, :]
  input_mask = (positions < lengths[:, None]).astype(np.int32)
  segment_ids = ((positions >= n_a[:, None]) & (positions < lengths[:, None])).astype(np.int32)
  return {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids}
