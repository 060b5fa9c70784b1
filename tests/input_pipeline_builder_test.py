"""Example builder against hand-worked cases of the official ELECTRA rules."""

import random

import numpy as np
import pytest

from electra_jax.input_pipeline import pretraining_data as pd

CLS, SEP = 101, 102


class ScriptedRandom:
  """Plays back the draws a hand-worked case needs, and checks it used them all."""

  def __init__(self, randoms, randints=()):
    self.randoms = list(randoms)
    self.randints = list(randints)
    self.randint_args = []

  def random(self):
    return self.randoms.pop(0)

  def randint(self, a, b):
    self.randint_args.append((a, b))
    return self.randints.pop(0)

  def done(self):
    return not self.randoms and not self.randints


def test_two_segments_with_half_crossing_draw():
  # target 12 -> A target (12 - 3) // 2 = 4. [1,2,3] starts A; [4,5] would
  # take A to 5 >= 4, B is empty, A (3) < 4 and the 0.5 draw says yes -> A;
  # [6..9]: A (5) is past its target -> B.
  rng = ScriptedRandom([0.5, 0.3, 0.9])
  builder = pd.ExampleBuilder(12, CLS, SEP, rng)
  assert builder.add_sentence([1, 2, 3]) is None
  assert builder.add_sentence([4, 5]) is None
  assert builder.add_sentence([6, 7, 8, 9]) is None  # 9 tokens < target 12
  ids, n_a = builder.end_document()
  assert ids == [CLS, 1, 2, 3, 4, 5, SEP, 6, 7, 8, 9, SEP]
  assert n_a == 7
  assert rng.done()


def test_declined_draw_sends_later_short_sentence_to_a():
  # The official quirk: after [2,3,4,5] went to B, the short [6,7] still fits
  # under A's target (1 + 2 < 4), so it joins A.
  rng = ScriptedRandom([0.5, 0.7, 0.9])
  examples = pd.build_examples([[[1], [2, 3, 4, 5], [6, 7]]], 12, CLS, SEP, rng)
  assert examples == [([CLS, 1, 6, 7, SEP, 2, 3, 4, 5, SEP], 5)]
  assert rng.done()


def test_single_segment_trim_then_short_target():
  # 0.05 < 0.1 -> one segment; [1..8] + [9..14] = 14 >= 12 closes the example,
  # A is trimmed to 12 - 2 = 10 tokens. Then 0.01 < 0.05 -> target randint(5, 12) = 7.
  rng = ScriptedRandom([0.05, 0.01, 0.5, 0.9], randints=[7])
  builder = pd.ExampleBuilder(12, CLS, SEP, rng)
  assert builder.add_sentence(list(range(1, 9))) is None
  ids, n_a = builder.add_sentence(list(range(9, 15)))
  assert ids == [CLS, *range(1, 11), SEP] and n_a == len(ids) == 12
  assert rng.randint_args == [(5, 12)]
  # Target 7: [20..23] (4) + [24,25,26] (3) = 7 closes it; A target (7 - 3) // 2 = 2,
  # the second sentence goes to B (A is already past 2); B is trimmed against
  # max_length (12), not the short target, so nothing is cut.
  assert builder.add_sentence([20, 21, 22, 23]) is None
  ids, n_a = builder.add_sentence([24, 25, 26])
  assert ids == [CLS, 20, 21, 22, 23, SEP, 24, 25, 26, SEP] and n_a == 6
  assert rng.done()


def test_second_segment_trimmed_to_fit():
  # max 10: A = [1,2,3,4]; B = [5..11] trimmed to 10 - 4 - 3 = 3 tokens.
  rng = ScriptedRandom([0.5, 0.9])
  builder = pd.ExampleBuilder(10, CLS, SEP, rng)
  assert builder.add_sentence([1, 2, 3, 4]) is None
  ids, n_a = builder.add_sentence([5, 6, 7, 8, 9, 10, 11])
  assert ids == [CLS, 1, 2, 3, 4, SEP, 5, 6, 7, SEP] and n_a == 6
  assert rng.done()


def test_first_segment_fills_everything():
  # One long sentence: A takes max_length - 2 tokens and B gets no room.
  rng = ScriptedRandom([0.5, 0.9])
  ids, n_a = pd.ExampleBuilder(8, CLS, SEP, rng).add_sentence(list(range(1, 20)))
  assert ids == [CLS, 1, 2, 3, 4, 5, 6, SEP] and n_a == 8
  assert rng.done()


def test_documents_never_share_an_example():
  rng = ScriptedRandom([0.5, 0.9, 0.5, 0.9])
  examples = pd.build_examples([[[1, 2]], [], [[], [3, 4]]], 12, CLS, SEP, rng)
  assert examples == [([CLS, 1, 2, SEP], 4), ([CLS, 3, 4, SEP], 4)]
  assert rng.done()


def test_seeded_builder_is_deterministic_and_well_formed():
  data_rng = np.random.default_rng(0)
  docs = [
    [list(data_rng.integers(1000, 2000, data_rng.integers(1, 40))) for _ in range(30)]
    for _ in range(40)
  ]
  a = pd.build_examples(docs, 64, CLS, SEP, random.Random(7))
  b = pd.build_examples(docs, 64, CLS, SEP, random.Random(7))
  c = pd.build_examples(docs, 64, CLS, SEP, random.Random(8))
  assert a == b and a != c
  single = 0
  for ids, n_a in a:
    assert len(ids) <= 64 and ids[0] == CLS and ids[n_a - 1] == SEP and ids[-1] == SEP
    assert ids.count(SEP) == (1 if n_a == len(ids) else 2)
    single += n_a == len(ids)
  assert 0 < single < len(a) / 2


def test_record_round_trip_and_padding():
  dtype = pd.token_dtype(30522, 8)
  assert dtype == np.dtype("<u2") and pd.token_dtype(70000, 8) == np.dtype("<i4")
  records = [
    pd.encode_record([CLS, 7, SEP, 8, 9, SEP], 3, dtype),
    pd.encode_record([CLS, 5, SEP], 3, dtype),
  ]
  batch = pd.decode_batch(records, 8, dtype)
  np.testing.assert_array_equal(
    batch["input_ids"], [[CLS, 7, SEP, 8, 9, SEP, 0, 0], [CLS, 5, SEP, 0, 0, 0, 0, 0]]
  )
  np.testing.assert_array_equal(batch["input_mask"], [[1] * 6 + [0, 0], [1] * 3 + [0] * 5])
  np.testing.assert_array_equal(batch["segment_ids"], [[0, 0, 0, 1, 1, 1, 0, 0], [0] * 8])
  assert all(v.dtype == np.int32 for v in batch.values())


@pytest.mark.parametrize("max_length", [5, 9])
def test_short_targets_stay_in_range(max_length):
  rng = random.Random(3)
  builder = pd.ExampleBuilder(max_length, CLS, SEP, rng)
  for i in range(2000):
    example = builder.add_sentence([i % 50 + 1] * (i % 4 + 1))
    if example is not None:
      assert len(example[0]) <= max_length
    assert pd.MIN_TARGET_LENGTH <= builder._target_length <= max_length
