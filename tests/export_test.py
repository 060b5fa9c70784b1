"""Tests for `export`: a fine-tuned classifier as a jax.export artifact that serves like the live model."""

import json
import os

import jax
import numpy as np
import pytest
from tiny_classifier import LABELS, LONG, MAX_LEN, softmax

from electra_jax import export, predict, serving
from electra_jax.errors import ElectraError


@pytest.mark.parametrize(
  "embed_params,fixed_length,platforms",
  [(False, False, ("cpu", "cuda", "tpu")), (True, True, None)],
)
def test_export_round_trip_equals_live_model(
  classifier, tmp_path, embed_params, fixed_length, platforms
):
  out = export.export_model(
    classifier,
    tmp_path / "exported",
    embed_params=embed_params,
    fixed_length=fixed_length,
    platforms=platforms,
  )
  files = set(os.listdir(out))
  assert {serving.EXPORT_FILE, serving.SERVING_CONFIG, "vocab.txt"} <= files
  assert (serving.PARAMS_FILE in files) != embed_params
  cfg = json.load(open(os.path.join(out, serving.SERVING_CONFIG)))
  assert (cfg["label_map"], cfg["max_seq_length"], cfg["task"]) == (LABELS, MAX_LEN, "custom")
  assert cfg["fixed_length"] == fixed_length and cfg["text_columns"] == ["review"]
  assert cfg["platforms"] == list(platforms or [jax.export.default_export_platform()])

  texts = ["a gripping film", "", LONG, "dull", "so so", "great acting , weak plot"]
  live = predict.load_predictor(classifier, batch_size=4).predict(texts)
  exported = serving.load_exported(out, batch_size=4).predict(texts)
  assert [r.keys() for r in exported] == [r.keys() for r in live]
  for a, b in zip(live, exported):
    if "error" in a:
      assert a == b
      continue
    assert a["label"] == b["label"]
    np.testing.assert_allclose(
      [a["probabilities"][k] for k in LABELS], [b["probabilities"][k] for k in LABELS], atol=1e-5
    )
  # The raw exported function also returns probabilities, batch size free.
  blob = open(os.path.join(out, serving.EXPORT_FILE), "rb").read()
  fn = jax.export.deserialize(bytearray(blob))
  assert (
    fn.in_avals[-1].shape[1] == MAX_LEN
    if fixed_length
    else not isinstance(fn.in_avals[-1].shape[1], int)
  )
  ids = np.zeros((3, MAX_LEN if fixed_length else 10), np.int32)
  args = (ids, np.ones_like(ids), ids)
  if not embed_params:
    args = (serving.load_params_npz(os.path.join(out, serving.PARAMS_FILE)), *args)
  outputs = fn.call(*args)
  assert outputs["probabilities"].shape == (3, 3)
  np.testing.assert_allclose(outputs["probabilities"], softmax(np.asarray(outputs["logits"])), 1e-5)


@pytest.mark.parametrize("embed_params", [False, True])
def test_exported_call_runs_a_large_batch_in_micro_batches(
  classifier, tmp_path, embed_params, monkeypatch
):
  """On CPU, 100 rows × 16 tokens (64 rows per 1,024-token micro-batch: 2, the last padded)
  give the raw exported function's outputs for each row."""
  from electra_jax import inference

  out = export.export_model(classifier, tmp_path / "exported", embed_params=embed_params)
  wrapped = []  # what load_exported_call hands to inference.microbatched

  def spy(fn, *args, **kwargs):
    wrapped.append(fn)
    return inference.microbatched(fn, *args, **kwargs)

  monkeypatch.setattr(serving, "microbatched", spy)
  call, _ = serving.load_exported_call(out)
  assert len(wrapped) == 1
  rng = np.random.RandomState(0)
  ids = rng.randint(1, 50, size=(100, 16)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[::3, 9:] = 0
  assert inference.chunk_rows(16) == 64
  got = call(ids, mask, np.zeros_like(ids))
  fn = jax.export.deserialize(bytearray(open(os.path.join(out, serving.EXPORT_FILE), "rb").read()))
  params = (
    () if embed_params else (serving.load_params_npz(os.path.join(out, serving.PARAMS_FILE)),)
  )
  for rows in (slice(0, 7), slice(60, 70), slice(93, 100)):
    want = fn.call(*params, ids[rows], mask[rows], np.zeros_like(ids[rows]))
    np.testing.assert_allclose(
      np.asarray(got["logits"])[rows], want["logits"], rtol=1e-5, atol=1e-6
    )
  text = (
    jax.jit(inference.microbatched(lambda p, *x: fn.call(*params, *x)))
    .lower((), ids, mask, np.zeros_like(ids))
    .as_text()
  )
  assert "while" in text  # the lax.map over micro-batches is in the program


def test_export_for_another_platform_is_refused_on_load(classifier, tmp_path):
  out = export.export_model(classifier, tmp_path / "tpu", platforms=["tpu"])
  with pytest.raises(ElectraError, match="exported for tpu but this machine runs cpu"):
    serving.load_exported(out)
  with pytest.raises(ElectraError, match="unknown platform"):
    export.export_model(classifier, tmp_path / "x", platforms=["metal"])
  with pytest.raises(ElectraError, match="already exists"):
    export.export_model(classifier, tmp_path / "tpu")
