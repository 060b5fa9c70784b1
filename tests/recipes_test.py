"""The fine-tuning recipes and the classification adapter against the official formulas.

google-research/electra, `finetune/classification/classification_tasks.py`:
MRPC and STS-B add every training pair swapped (`double_unordered`), STS-B
targets are `(label - 0) / 5`, the per-example losses are summed over the
batch (`run_finetuning.py`: `tf.reduce_sum`). The optimizer's official form
is checked against a numpy port in `optim_test.py`; here, that the
fine-tuning job builds exactly that optimizer from the config.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from electra_jax import experiment, optim, recipes, run_finetuning
from electra_jax import model as model_lib
from electra_jax.errors import ElectraError
from electra_jax.tasks import adapters, glue

CONFIG = os.path.join(os.path.dirname(__file__), "..", "experiments", "configs", "glue.py")


def _cfg(arg, **overrides):
  return experiment.load_config(
    f"{CONFIG}:{arg}", [f"--config.{k}={v}" for k, v in overrides.items()]
  )


def test_recipes_resolve_and_every_switch_overrides():
  official = recipes.resolve(_cfg("task=rte,size=tiny"))
  assert official == {"recipe": "official", **recipes.RECIPES["official"]}
  assert official["head"] == "official" and official["loss_reduction"] == "sum"
  standard = recipes.resolve(_cfg("task=custom,size=tiny"))
  assert standard["recipe"] == "standard" and standard["official_adam"] is False
  mixed = recipes.resolve(_cfg("task=rte,size=tiny", head="hf", official_adam=False))
  assert mixed["head"] == "hf" and mixed["official_adam"] is False
  assert mixed["official_schedule"] is True  # the rest stays official
  with pytest.raises(ElectraError, match="--config.loss_reduction='median'"):
    recipes.resolve(_cfg("task=rte,size=tiny", loss_reduction="median"))
  with pytest.raises(ElectraError, match="not a recipe"):
    recipes.resolve(_cfg("task=rte,size=tiny", recipe="paper"))


def _adapter(task, recipe_name, train, label_list=None):
  cfg = _cfg(f"task={task},size=tiny", recipe=recipe_name)
  return adapters.ClassificationAdapter(
    task=glue.get_task(task),
    label_list=label_list,
    splits={"train": train, "dev": train[:2]},
    dev_splits=("dev",),
    test_splits=(),
    recipe=recipes.resolve(cfg),
    source="test",
  )


def _pairs(n, label=lambda i: "1"):
  return [glue.Example(f"train-{i}", f"first {i}", f"second {i}", label(i)) for i in range(n)]


@pytest.mark.parametrize("task", ["mrpc", "stsb"])
def test_double_unordered_adds_each_pair_swapped(task):
  label = (lambda i: "1") if task == "mrpc" else (lambda i: float(i % 5))
  train = _pairs(5, label)
  official = _adapter(task, "official", train, ["0", "1"] if task == "mrpc" else None)
  doubled = official.training_examples()
  assert len(doubled) == 10 and doubled[:5] == train
  for original, swapped in zip(train, doubled[5:]):
    assert (swapped.text_a, swapped.text_b) == (original.text_b, original.text_a)
    assert swapped.label == original.label
  standard = _adapter(task, "standard", train, ["0", "1"] if task == "mrpc" else None)
  assert standard.training_examples() == train
  # Order matters elsewhere: RTE is never doubled.
  rte = _adapter(
    "rte", "official", _pairs(5, lambda i: "entailment"), ["entailment", "not_entailment"]
  )
  assert len(rte.training_examples()) == 5


class _FixedOutputs:
  """A stand-in model whose `apply` returns fixed outputs (the loss is what is tested)."""

  def __init__(self, outputs):
    self.outputs = jnp.asarray(outputs, jnp.float32)

  def apply(self, variables, input_ids, **kwargs):
    del variables, input_ids, kwargs
    return self.outputs


def _batch(labels):
  n = len(labels)
  zeros = np.zeros((n, 4), np.int32)
  return {
    "input_ids": zeros,
    "input_mask": zeros,
    "segment_ids": zeros,
    "labels": np.asarray(labels),
  }


def test_stsb_targets_scaled_by_five_and_predictions_scaled_back():
  scores = [0.0, 2.5, 5.0, 4.0]
  outputs = np.array([[0.1], [0.5], [0.9], [0.7]], np.float32)
  official = _adapter("stsb", "official", _pairs(4, lambda i: scores[i]))
  loss, _ = official.loss_fn(_FixedOutputs(outputs), None)(
    None, _batch(np.float32(scores)), None, True
  )
  # tf.square(predictions - (label - 0) / 5), summed over the batch
  want = sum((o - s / 5.0) ** 2 for o, s in zip(outputs[:, 0], scores))
  assert float(loss) == pytest.approx(want, rel=1e-6)
  np.testing.assert_allclose(official.predictions(outputs), outputs[:, 0] * 5.0, rtol=1e-6)
  standard = _adapter("stsb", "standard", _pairs(4, lambda i: scores[i]))
  loss, _ = standard.loss_fn(_FixedOutputs(outputs), None)(
    None, _batch(np.float32(scores)), None, True
  )
  assert float(loss) == pytest.approx(np.mean((outputs[:, 0] - scores) ** 2), rel=1e-6)
  np.testing.assert_allclose(standard.predictions(outputs), outputs[:, 0])


def test_official_classification_loss_is_summed_over_the_batch():
  logits = np.array([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.0]], np.float32)
  labels = np.array([0, 1, 1])
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  per_example = -log_probs[np.arange(3), labels]  # -reduce_sum(one_hot * log_softmax)
  official = _adapter("rte", "official", _pairs(3), ["entailment", "not_entailment"])
  loss, _ = official.loss_fn(_FixedOutputs(logits), None)(None, _batch(labels), None, True)
  assert float(loss) == pytest.approx(per_example.sum(), rel=1e-6)
  standard = _adapter("rte", "standard", _pairs(3), ["entailment", "not_entailment"])
  loss, _ = standard.loss_fn(_FixedOutputs(logits), None)(None, _batch(labels), None, True)
  assert float(loss) == pytest.approx(per_example.mean(), rel=1e-6)


def test_the_job_builds_the_official_optimizer_from_the_config(tiny_config):
  """`run_finetuning.make_optimizer` = the official chain (ported in optim_test.py), unrounded warmup."""
  cfg = _cfg("task=rte,size=tiny", learning_rate=3e-3, layerwise_lr_decay=0.8)
  recipe = recipes.resolve(cfg)
  total = 37  # warmup 3.7 steps: the official code does not round it
  model = model_lib.build_model(tiny_config, "sequence_classification_official", num_labels=2)
  params = model_lib.init_params(model, jax.random.key(0))
  ours = run_finetuning.make_optimizer(cfg, recipe, total, tiny_config.num_hidden_layers)
  reference = optim.make_optimizer(
    learning_rate=3e-3,
    total_steps=total,
    warmup_steps=3.7,
    weight_decay=0.01,
    eps=1e-6,
    clip_norm=1.0,
    official_adam=True,
    official_schedule=True,
    layerwise_lr_decay=0.8,
    num_layers=tiny_config.num_hidden_layers,
    llrd_official_off_by_one=True,
  )
  rng = np.random.default_rng(0)
  grads = [
    jax.tree.map(lambda p: rng.normal(size=np.shape(p)).astype(np.float32), params)
    for _ in range(5)
  ]
  a, sa = params, ours.init(params)
  b, sb = params, reference.init(params)
  for g in grads:
    ua, sa = ours.update(g, sa, a)
    ub, sb = reference.update(g, sb, b)
    a, b = optax.apply_updates(a, ua), optax.apply_updates(b, ub)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  lr = run_finetuning._learning_rate_fn(cfg, recipe, total)
  assert float(lr(2)) == pytest.approx(3e-3 * (1 - 2 / 37) * (2 / 3.7), rel=1e-6)
