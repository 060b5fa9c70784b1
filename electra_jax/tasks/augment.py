"""Train-time noise injection on token id batches (numpy, seeded).

    noise = NoiseConfig(token_dropout=0.1, local_shuffle=0.1, random_token=0.05)
    batch = augment_batch(batch, noise, np.random.default_rng([seed, step]),
                          vocab_size=tok.vocab_size,
                          special_ids=tok.special_ids.values(), pad_id=tok.pad_id)

Three kinds of noise for robustness to typos, word order and paraphrase, each
applied to every content token independently with its own probability, in
this order:

1. token dropout: the token is removed; the row closes up and is padded at the
   end again. Every segment keeps at least one token (if all of a segment's
   tokens were drawn, its first survives).
2. local shuffle: a drawn token's sort key is moved right by U[0, k+1) (the
   word-shuffle noise of Lample et al. 2018 applied per token), then each
   segment is reordered by key: no token moves more than `shuffle_window` = k
   places and tokens never cross a `[SEP]`.
3. random-token replacement: the token becomes an id drawn uniformly from the
   vocabulary minus the special ids.

Special tokens (`special_ids`: `[CLS]`, `[SEP]`, `[PAD]`, ...) and padding
(`input_mask == 0`) are never touched, and `[CLS] A [SEP] B [SEP]` keeps its
shape: segment ids follow their tokens. Use it on training batches only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np

from electra_jax.errors import ElectraError


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
  """Per-token probabilities of each noise; 0 disables it.

  Attributes:
    token_dropout: probability that a content token is removed.
    local_shuffle: probability that a content token is displaced (by at most
      `shuffle_window` places within its segment).
    random_token: probability that a content token is replaced by a random id.
    shuffle_window: the largest displacement of the local shuffle (k >= 1).
  """

  token_dropout: float = 0.0
  local_shuffle: float = 0.0
  random_token: float = 0.0
  shuffle_window: int = 3

  def __post_init__(self):
    for name in ("token_dropout", "local_shuffle", "random_token"):
      value = getattr(self, name)
      if not 0.0 <= float(value) <= 1.0:
        raise ElectraError(f"augment.{name} must be a probability in [0, 1], got {value!r}")
    if int(self.shuffle_window) < 1:
      raise ElectraError(f"augment.shuffle_window must be >= 1, got {self.shuffle_window!r}")

  @property
  def enabled(self) -> bool:
    """True when any noise has a non-zero probability."""
    return bool(self.token_dropout or self.local_shuffle or self.random_token)

  @classmethod
  def from_mapping(cls, mapping: Mapping) -> NoiseConfig:
    """Builds a config from a mapping (e.g. the fine-tuning config's `augment`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    if unknown:
      raise ElectraError(f"unknown augment key(s) {unknown}; valid: {sorted(names)}")
    return cls(**dict(mapping))


def _segments(content: np.ndarray) -> list[tuple[int, int]]:
  """[start, end) runs of True in a 1-d boolean array."""
  edges = np.diff(np.r_[0, content.astype(np.int8), 0])
  return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def augment_batch(
  batch: Mapping[str, np.ndarray],
  config: NoiseConfig,
  rng: np.random.Generator | int,
  *,
  vocab_size: int,
  special_ids: Iterable[int],
  pad_id: int = 0,
) -> dict[str, np.ndarray]:
  """Returns a noised copy of a batch (the input arrays are not modified).

  Args:
    batch: `input_ids`, `input_mask` and (optionally) `segment_ids`, int
      `[batch, length]` as from `features.featurize`; other keys (labels,
      example_index, ...) are passed through.
    config: the noise probabilities.
    rng: a numpy Generator, or an int seed. For reproducible training derive
      it from (seed, step), e.g. `np.random.default_rng([seed, step])`.
    vocab_size: replacement ids are drawn from [0, vocab_size).
    special_ids: ids never touched nor drawn (`tokenizer.special_ids.values()`).
    pad_id: id written into padding freed by dropout.

  Returns:
    The batch with noised `input_ids`, `input_mask`, `segment_ids`.
  """
  out = dict(batch)
  if not config.enabled:
    return out
  rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
  ids = np.array(batch["input_ids"], copy=True)
  mask = np.array(batch["input_mask"], copy=True)
  segment_ids = (
    np.array(batch["segment_ids"], copy=True) if "segment_ids" in batch else np.zeros_like(ids)
  )
  if ids.ndim != 2 or mask.shape != ids.shape or segment_ids.shape != ids.shape:
    raise ElectraError(
      f"augment_batch needs input_ids/input_mask/segment_ids of one [batch, length] shape,"
      f" got {ids.shape}, {mask.shape}, {segment_ids.shape}"
    )
  special = np.array(sorted({int(i) for i in special_ids}), dtype=np.int64)
  length = ids.shape[1]
  k = int(config.shuffle_window)
  allowed = None
  if config.random_token:
    allowed = np.setdiff1d(np.arange(vocab_size, dtype=np.int64), special)
    if allowed.size == 0:
      raise ElectraError("random_token noise: the vocabulary has no non-special ids")

  for r in range(ids.shape[0]):
    row, row_seg = ids[r], segment_ids[r]
    content = (mask[r] != 0) & ~np.isin(row, special)

    if config.token_dropout:
      drop = content & (rng.random(length) < config.token_dropout)
      for start, end in _segments(content):
        if drop[start:end].all():
          drop[start] = False  # a segment never becomes empty
      if drop.any():
        keep = ~drop & (mask[r] != 0)
        n = int(keep.sum())
        new_row = np.full(length, pad_id, ids.dtype)
        new_seg = np.zeros(length, segment_ids.dtype)
        new_row[:n], new_seg[:n] = row[keep], row_seg[keep]
        new_content = np.zeros(length, bool)
        new_content[:n] = content[keep]
        ids[r], segment_ids[r] = new_row, new_seg
        mask[r] = 0
        mask[r, :n] = 1
        row, row_seg, content = ids[r], segment_ids[r], new_content

    if config.local_shuffle:
      for start, end in _segments(content):
        n = end - start
        if n < 2:
          continue
        moved = rng.random(n) < config.local_shuffle
        keys = np.arange(n) + moved * rng.uniform(0.0, k + 1.0, n)
        order = np.argsort(keys, kind="stable")
        row[start:end] = row[start:end][order]

    if config.random_token:
      replace = content & (rng.random(length) < config.random_token)
      count = int(replace.sum())
      if count:
        row[replace] = rng.choice(allowed, size=count)

  out["input_ids"] = ids
  out["input_mask"] = mask
  if "segment_ids" in batch:
    out["segment_ids"] = segment_ids
  return out
