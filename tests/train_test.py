"""Tests of the shared train loop on a tiny classifier with synthetic data."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from electra_jax import model as model_lib
from electra_jax import train
from electra_jax.config import ElectraConfig
from electra_jax.errors import ElectraError

CFG = ElectraConfig(
  vocab_size=50,
  embedding_size=16,
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=2,
  intermediate_size=64,
  max_position_embeddings=16,
)


class SyntheticBatches:
  """A deterministic, resumable iterator: batch i is a function of (seed, i)."""

  def __init__(self, seed=0, batch=8, length=12):
    self.seed, self.batch, self.length, self.position = seed, batch, length, 0

  def __iter__(self):
    return self

  def __next__(self):
    rs = np.random.RandomState(self.seed * 100003 + self.position)
    self.position += 1
    ids = rs.randint(1, CFG.vocab_size, size=(self.batch, self.length)).astype(np.int32)
    labels = (ids[:, 0] > CFG.vocab_size // 2).astype(np.int32)
    return {"input_ids": ids, "labels": labels}

  def get_state(self):
    return {"position": self.position}

  def set_state(self, state):
    self.position = int(state["position"])


def _setup(nan_at_step=None):
  model = model_lib.ElectraForSequenceClassification(CFG, num_labels=2)

  def init_boxed(rng):
    return model.init(rng, jnp.zeros((1, 12), jnp.int32))["params"]

  def loss_fn(params, batch, rng, deterministic):
    logits = model.apply(
      {"params": params}, batch["input_ids"], deterministic=deterministic, rngs={"dropout": rng}
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
    if nan_at_step is not None:
      loss = loss * jnp.where(batch["input_ids"][0, 0] < 0, jnp.nan, 1.0)
    return loss, {"accuracy": (logits.argmax(-1) == batch["labels"]).mean()}

  optimizer = optax.adamw(3e-3)
  return init_boxed, loss_fn, optimizer


def _run(workdir, total, stop_after=None, data=None, *, setup=None, signature=None, **kw):
  """`(state, results)` of `train_loop` on the tiny classifier (one device unless a mesh is asked for)."""
  init_boxed, loss_fn, optimizer = setup or _setup()
  devices = None
  if "mesh_shape" not in kw:  # fast on 2 cores
    kw["mesh_shape"], devices = {"data": 1}, jax.devices()[:1]
  task = train.TrainTask(
    init_boxed_params=init_boxed,
    loss_fn=loss_fn,
    optimizer=optimizer,
    signature={"model": CFG.to_dict()} if signature is None else signature,
  )
  settings = train.LoopSettings(
    total_steps=total,
    log_every=2,
    checkpoint_every=kw.pop("checkpoint_every", 3),
    async_checkpoints=False,
    progress=False,
    stop_after=stop_after,
    tokens_per_batch=96,
    **kw,
  )
  return train.train_loop(str(workdir), task, data or SyntheticBatches(), settings, devices=devices)


def test_resume_is_bitwise_exact(tmp_path):
  full_state, _ = _run(tmp_path / "full", 6)
  _, first = _run(tmp_path / "split", 6, stop_after=3)
  assert first["stopped"] == "stop_after" and first["step"] == 3
  assert first["status"] == "stopped"
  second_state, second = _run(tmp_path / "split", 6)
  assert second["step"] == 6
  for a, b in zip(jax.tree.leaves(full_state.params), jax.tree.leaves(second_state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  lines = [json.loads(line) for line in open(tmp_path / "full" / "metrics.jsonl")]
  assert [row["step"] for row in lines] == [2, 4, 6]
  assert all("loss" in row and "tokens_per_sec" in row for row in lines)
  results = json.load(open(tmp_path / "full" / "results.json"))
  assert results["step"] == 6 and results["stopped"] == "completed"
  assert results["status"] == "complete"
  json.dumps(second)  # results hold JSON values only


def test_results_are_json_and_a_finished_run_is_not_touched(tmp_path):
  state, results = _run(tmp_path, 3)
  assert json.loads(json.dumps(results)) == results
  stored = json.load(open(tmp_path / "results.json"))
  again_state, again = _run(tmp_path, 3)
  assert again == stored
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(again_state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_loss_falls(tmp_path):
  _run(tmp_path / "w", 60, checkpoint_every=100)
  rows = [json.loads(line) for line in open(tmp_path / "w" / "metrics.jsonl")]
  first = np.mean([r["loss"] for r in rows[:3]])
  last = np.mean([r["loss"] for r in rows[-3:]])
  assert last < first - 0.1, (first, last)


def test_nan_loss_stops_and_names_last_checkpoint(tmp_path):
  init_boxed, loss_fn, optimizer = _setup(nan_at_step=True)

  class PoisonAt5(SyntheticBatches):
    def __next__(self):
      batch = super().__next__()
      if self.position == 5:  # the 5th batch: step 5
        batch["input_ids"][0, 0] = -1
      return batch

  with pytest.raises(train.TrainingStopped, match=r"at step 5; last good checkpoint: step 3"):
    _run(tmp_path, 10, data=PoisonAt5(), setup=(init_boxed, loss_fn, optimizer))


def test_workdir_of_another_model_is_refused(tmp_path):
  _run(tmp_path, 3)
  before = sorted(os.listdir(tmp_path / "checkpoints"))
  with pytest.raises(ElectraError, match="different model"):
    _run(tmp_path, 6, signature={"model": CFG.replace(hidden_size=64).to_dict()})
  assert sorted(os.listdir(tmp_path / "checkpoints")) == before


@pytest.fixture(scope="module")
def single_device_run(tmp_path_factory):
  return _run(tmp_path_factory.mktemp("one"), 3)


@pytest.mark.parametrize("rules", ["dp", "fsdp", "fsdp_tp"])
def test_sharded_steps_match_single_device(tmp_path, rules, single_device_run):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (fake) devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
  single = single_device_run
  mesh = {
    "dp": {"data": 8},
    "fsdp": {"data": 2, "fsdp": 4},
    "fsdp_tp": {"data": 2, "fsdp": 2, "model": 2},
  }[rules]
  sharded_state, sharded = _run(tmp_path / rules, 3, mesh_shape=mesh, sharding_rules=rules)
  single_state, single = single
  assert abs(single["final_metrics"]["loss"] - sharded["final_metrics"]["loss"]) < 1e-5
  for a, b in zip(jax.tree.leaves(single_state.params), jax.tree.leaves(sharded_state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(
  "rows, length, tokens, expected",
  [
    (32, 128, 2048, 2),
    (32, 128, 1024, 4),
    (32, 64, 2048, 1),
    (12, 10, 50, 3),
    (7, 10, 20, 7),
    (8, 12, 0, 1),
  ],
)
def test_num_microbatches_is_the_smallest_divisor_that_fits(rows, length, tokens, expected):
  batch = {"input_ids": np.zeros((rows, length), np.int32), "labels": np.zeros((rows,), np.int32)}
  assert train.num_microbatches(batch, tokens) == expected


def _one_step(microbatch_tokens, reduction, deterministic):
  """Params and metrics after one step of the tiny classifier on a batch of 12 × 12."""
  init_boxed, loss_fn, _ = _setup()
  params = train.strip_boxes(init_boxed(jax.random.PRNGKey(0)))
  if reduction == "sum":  # the official recipe's summed loss

    def fn(p, b, rng, det):
      loss, m = loss_fn(p, b, rng, det)
      return loss * b["labels"].shape[0], m

  else:
    fn = loss_fn
  if deterministic:
    base = fn

    def fn(p, b, rng, det):
      return base(p, b, rng, True)

  optimizer = optax.sgd(0.1)
  state = train.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=optimizer.init(params),
    rng=jax.random.PRNGKey(1),
  )
  step = train.make_train_step(
    fn, optimizer, microbatch_tokens=microbatch_tokens, loss_reduction=reduction
  )
  batch = next(SyntheticBatches(batch=12, length=12))
  return jax.jit(step)(state, batch)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_microbatched_step_is_the_whole_batch_step_without_dropout(reduction):
  whole, m_whole = _one_step(0, reduction, deterministic=True)
  for tokens in (72, 48, 24):  # 2, 3 and 6 micro-batches of a 12-row batch of length 12
    split, m_split = _one_step(tokens, reduction, deterministic=True)
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(split.params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for k in ("loss", "grad_norm", "accuracy"):
      np.testing.assert_allclose(float(m_whole[k]), float(m_split[k]), rtol=1e-5)


def test_microbatched_step_with_dropout_draws_other_masks_and_one_batch_is_unchanged():
  whole, m_whole = _one_step(0, "mean", deterministic=False)
  fits, m_fits = _one_step(144, "mean", deterministic=False)  # 12 × 12 fits: today's step
  split, m_split = _one_step(48, "mean", deterministic=False)
  for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(fits.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert float(m_whole["loss"]) != float(m_split["loss"])  # another dropout draw
  assert abs(float(m_whole["loss"]) - float(m_split["loss"])) < 0.1


def test_microbatched_loss_reduction_is_checked():
  with pytest.raises(ValueError, match="loss_reduction"):
    train.make_train_step(lambda *a: None, optax.sgd(0.1), loss_reduction="token_mean")


def test_loop_hands_freed_memory_back_after_init_first_step_before_saves_and_at_the_end(
  tmp_path, monkeypatch
):
  import sys

  from electra_jax import host_memory

  callers = []
  monkeypatch.setattr(
    host_memory,
    "release_free_memory",
    lambda: callers.append(sys._getframe(1).f_code.co_name) or True,
  )
  # Not the compile listener (installed if a CLI test ran in this process first): only the loop.
  monkeypatch.setattr(host_memory, "MIN_COMPILE_SECONDS", float("inf"))
  _run(tmp_path / "w", 5, checkpoint_every=2)
  # After the initial state, after step 1 (not after steps 2-5), before the saves at
  # steps 2, 4 and 5 (the last), and when the loop ends.
  assert callers == ["train_loop", "after_first_step", *["__call__"] * 3, "_run_steps"]
