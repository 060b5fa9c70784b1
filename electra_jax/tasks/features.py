"""Examples -> fixed-shape numpy features for sentence(-pair) classification.

    task = glue.get_task("mrpc")
    examples = glue.read_split(task, data_dir, "dev")
    features = featurize(examples, tokenizer, 128, task.label_map)
    features["input_ids"].shape  # (408, 128)

Encoding is the tokenizer's (`electra_jax.tokenization`): `[CLS] A [SEP]` or
`[CLS] A [SEP] B [SEP]`, segment ids 0 / 1, longest-first truncation to
`max_seq_length` with the official tie rule, padding with the tokenizer's
`pad_id`. Names follow the official ELECTRA code (`input_mask`,
`segment_ids`); `example_index` maps each row back to `examples[i]` so that
predictions can be put back in order after shuffling or padding batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from electra_jax.errors import ElectraError
from electra_jax.tasks.glue import Example

# Examples encoded per tokenizer call: bounds the size of the ragged
# intermediate lists while keeping the tokenizer's batch parallelism.
_CHUNK = 2048

MISSING_CLASS_LABEL = -1


def _labels(examples: Sequence[Example], label_map: Mapping[str, int] | None) -> np.ndarray:
  if label_map is None:
    labels = np.full(len(examples), np.nan, np.float32)
    for i, e in enumerate(examples):
      if e.label is None:
        continue
      if isinstance(e.label, str):
        raise ElectraError(
          f"example {e.guid} has class label {e.label!r} but no label_map was given; pass"
          " task.label_map (label_map=None means a regression task)"
        )
      labels[i] = float(e.label)
    return labels
  labels = np.full(len(examples), MISSING_CLASS_LABEL, np.int32)
  for i, e in enumerate(examples):
    if e.label is None:
      continue
    if e.label not in label_map:
      raise ElectraError(
        f"example {e.guid}: label {e.label!r} is not in the label map {sorted(label_map)}"
      )
    labels[i] = label_map[e.label]
  return labels


def featurize(
  examples: Sequence[Example],
  tokenizer,
  max_seq_length: int,
  label_map: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
  """Tokenizes examples into padded arrays.

  Args:
    examples: `glue.Example`s (GLUE or custom readers).
    tokenizer: an `electra_jax.tokenization.Tokenizer`.
    max_seq_length: every row is truncated / padded to this length
      (special tokens included).
    label_map: `{label: class id}` for classification (`task.label_map`);
      None for regression.

  Returns:
    `{"input_ids", "input_mask", "segment_ids"}`: int32 `[n, max_seq_length]`;
    `"labels"`: int32 `[n]` class ids (-1 where an example has no label) or,
    with `label_map=None`, float32 `[n]` (NaN where missing);
    `"example_index"`: int32 `[n]`, 0..n-1.

  Raises:
    ElectraError: a label not in `label_map`, a string label without a
      `label_map`, or a `max_seq_length` too small for the special tokens.
  """
  n = len(examples)
  input_ids = np.full((n, max_seq_length), tokenizer.pad_id, np.int32)
  input_mask = np.zeros((n, max_seq_length), np.int32)
  segment_ids = np.zeros((n, max_seq_length), np.int32)
  # Single texts and pairs are encoded separately: the tokenizer takes either
  # all pairs or none.
  for has_pair in (False, True):
    rows = [i for i, e in enumerate(examples) if (e.text_b is not None) == has_pair]
    for start in range(0, len(rows), _CHUNK):
      chunk = rows[start : start + _CHUNK]
      encoded = tokenizer.encode_batch(
        [examples[i].text_a for i in chunk],
        [examples[i].text_b for i in chunk] if has_pair else None,
        max_length=max_seq_length,
        pad_to=max_seq_length,
      )
      input_ids[chunk] = encoded["input_ids"]
      input_mask[chunk] = encoded["attention_mask"]
      segment_ids[chunk] = encoded["token_type_ids"]
  return {
    "input_ids": input_ids,
    "input_mask": input_mask,
    "segment_ids": segment_ids,
    "labels": _labels(examples, label_map),
    "example_index": np.arange(n, dtype=np.int32),
  }
