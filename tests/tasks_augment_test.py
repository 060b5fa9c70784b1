"""Tests for electra_jax.tasks.augment: noise counts and structural invariants."""

import numpy as np
import pytest

from electra_jax.errors import ElectraError
from electra_jax.tasks.augment import NoiseConfig, augment_batch

PAD, CLS, SEP, MASK = 0, 101, 102, 103
SPECIALS = (PAD, 100, CLS, SEP, MASK)
VOCAB = 30522


def _batch(batch_size=64, length=64, seed=0):
  """[CLS] A [SEP] B [SEP] pad..., distinct content ids (1000 + position + 100 * row)."""
  rng = np.random.default_rng(seed)
  ids = np.full((batch_size, length), PAD, np.int32)
  mask = np.zeros_like(ids)
  seg = np.zeros_like(ids)
  for r in range(batch_size):
    len_a = int(rng.integers(1, 25))
    len_b = int(rng.integers(0, length - len_a - 3)) if r % 2 else None
    row = [CLS, *range(1000, 1000 + len_a), SEP]
    types = [0] * len(row)
    if len_b is not None:
      row += [*range(5000, 5000 + len_b), SEP]
      types += [1] * (len_b + 1)
    ids[r, : len(row)] = np.array(row) + np.where(np.isin(row, SPECIALS), 0, 100 * r)
    mask[r, : len(row)] = 1
    seg[r, : len(row)] = types
  return {"input_ids": ids, "input_mask": mask, "segment_ids": seg, "labels": np.arange(batch_size)}


def _run(batch, seed=0, **noise):
  return augment_batch(
    batch, NoiseConfig(**noise), seed, vocab_size=VOCAB, special_ids=SPECIALS, pad_id=PAD
  )


def _segments_of(ids, mask):
  """Content tokens of each segment of one row, split at [SEP]."""
  row = ids[mask == 1].tolist()
  assert row[0] == CLS and row[-1] == SEP
  parts, current = [], []
  for t in row[1:]:
    if t == SEP:
      parts.append(current)
      current = []
    else:
      current.append(t)
  return parts


def _check_structure(out):
  ids, mask, seg = out["input_ids"], out["input_mask"], out["segment_ids"]
  for r in range(ids.shape[0]):
    n = int(mask[r].sum())
    assert mask[r, :n].all() and not mask[r, n:].any()  # mask is a prefix
    assert (ids[r, n:] == PAD).all() and (seg[r, n:] == 0).all()
    first_sep = int(np.flatnonzero(ids[r] == SEP)[0])
    assert (seg[r, : first_sep + 1] == 0).all() and (seg[r, first_sep + 1 : n] == 1).all()


def test_no_noise_is_identity_and_inputs_untouched():
  batch = _batch()
  copy = {k: v.copy() for k, v in batch.items()}
  out = _run(batch)
  for k in batch:
    np.testing.assert_array_equal(out[k], copy[k])
  _run(batch, token_dropout=0.5, local_shuffle=0.5, random_token=0.5)
  for k in batch:
    np.testing.assert_array_equal(batch[k], copy[k])


def test_token_dropout_counts_and_structure():
  batch = _batch()
  out = _run(batch, seed=1, token_dropout=0.3)
  _check_structure(out)
  before = after = 0
  for r in range(batch["input_ids"].shape[0]):
    old = _segments_of(batch["input_ids"][r], batch["input_mask"][r])
    new = _segments_of(out["input_ids"][r], out["input_mask"][r])
    assert len(old) == len(new)  # same [SEP] count
    for o, n in zip(old, new):
      it = iter(o)
      assert all(t in it for t in n)  # an order-preserving subsequence
      assert len(n) >= min(1, len(o))  # a segment never empties
      before, after = before + len(o), after + len(n)
  assert 0.25 < 1 - after / before < 0.35
  np.testing.assert_array_equal(out["labels"], batch["labels"])
  # p = 1 keeps exactly one token per non-empty segment.
  out = _run(batch, token_dropout=1.0)
  for r in range(4):
    segs = _segments_of(out["input_ids"][r], out["input_mask"][r])
    olds = _segments_of(batch["input_ids"][r], batch["input_mask"][r])
    assert [len(s) for s in segs] == [min(1, len(o)) for o in olds]
    assert [s[:1] for s in segs] == [o[:1] for o in olds]


@pytest.mark.parametrize("window", [1, 3])
def test_local_shuffle_is_bounded_permutation(window):
  batch = _batch(seed=2)
  out = _run(batch, seed=3, local_shuffle=0.5, shuffle_window=window)
  np.testing.assert_array_equal(out["input_mask"], batch["input_mask"])
  np.testing.assert_array_equal(out["segment_ids"], batch["segment_ids"])
  ids, new = batch["input_ids"], out["input_ids"]
  special = np.isin(ids, SPECIALS)
  np.testing.assert_array_equal(new[special], ids[special])  # specials stay in place
  moved = 0
  for r in range(ids.shape[0]):
    position = {t: i for i, t in enumerate(ids[r]) if not special[r, i]}
    for i, t in enumerate(new[r]):
      if special[r, i]:
        continue
      assert abs(position[t] - i) <= window
      assert batch["segment_ids"][r, position[t]] == batch["segment_ids"][r, i]
      moved += position[t] != i
    assert sorted(new[r].tolist()) == sorted(ids[r].tolist())
  assert moved > 0.1 * (~special).sum()


def test_random_token_counts_and_ids():
  batch = _batch(seed=4)
  out = _run(batch, seed=5, random_token=0.2)
  ids, new = batch["input_ids"], out["input_ids"]
  content = (batch["input_mask"] == 1) & ~np.isin(ids, SPECIALS)
  np.testing.assert_array_equal(new[~content], ids[~content])
  changed = new != ids
  assert 0.16 < changed[content].mean() < 0.24
  assert not np.isin(new[changed], SPECIALS).any() and (new < VOCAB).all()


def test_all_noises_together_seeded():
  batch = _batch(seed=6)
  noise = dict(token_dropout=0.2, local_shuffle=0.3, random_token=0.1)
  a = _run(batch, seed=7, **noise)
  b = _run(batch, seed=np.random.default_rng(7), **noise)
  c = _run(batch, seed=8, **noise)
  _check_structure(a)
  np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
  assert (a["input_ids"] != c["input_ids"]).any()
  assert (a["input_ids"][:, 0] == CLS).all()
  assert ((a["input_ids"] == SEP).sum(1) == (batch["input_ids"] == SEP).sum(1)).all()


def test_config_validation():
  with pytest.raises(ElectraError, match=r"augment.token_dropout must be a probability"):
    NoiseConfig(token_dropout=1.5)
  with pytest.raises(ElectraError, match="shuffle_window must be >= 1"):
    NoiseConfig(shuffle_window=0)
  cfg = NoiseConfig.from_mapping({"token_dropout": 0.1, "local_shuffle": 0.0, "random_token": 0.0})
  assert cfg.enabled and not NoiseConfig().enabled
  with pytest.raises(ElectraError, match=r"unknown augment key\(s\) \['typo'\]"):
    NoiseConfig.from_mapping({"typo": 0.1})
