"""Task adapters: what a fine-tuning task supplies to the one per-seed loop.

`run_finetuning` trains, evaluates, checkpoints and summarises any task the
same way; a `TaskAdapter` says what is task-specific: its data, the head, the
features, the loss, how outputs become predictions and how predictions are
scored. GLUE and the user's CSV/TSV/JSONL data are `ClassificationAdapter`s
(one label, or a score, per text or text pair); SQuAD, token classification
and multiple choice plug in as further adapters.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from electra_jax import recipes
from electra_jax.errors import ElectraError
from electra_jax.job_setup import DEFAULT_GLUE_DIR
from electra_jax.tasks import custom, features, glue, metrics

log = logging.getLogger(__name__)


class TaskAdapter:
  """The interface the fine-tuning loop uses (see `ClassificationAdapter`).

  Attributes:
    name: the task's name (`results.json`, `glue-report`).
    dev_splits / test_splits: split names with labels / for submissions.
    primary_metric: the dev metric that picks `best/`.
    head: the registered head (`electra_jax/heads.py`) and `head_kwargs`.
    source: where the data came from (for the log line).
  """

  name: str
  dev_splits: tuple[str, ...]
  test_splits: tuple[str, ...]
  primary_metric: str
  head: str
  head_kwargs: dict

  # Feature arrays the model reads, in `forward`'s order (the rest are targets / bookkeeping).
  input_keys: tuple[str, ...] = ("input_ids", "input_mask", "segment_ids")

  def featurize(self, tokenizer, max_seq_length: int) -> dict[str, dict[str, np.ndarray]]:
    """Split name → feature arrays (`input_ids`, `input_mask`, `segment_ids`, `labels`).

    Every array of a split has the split's number of rows first; an adapter
    may add more (e.g. `example_index` to map features back to examples).
    """
    raise NotImplementedError

  def kept_heads(self) -> tuple[str, ...]:
    """Heads an `init_from` checkpoint may keep instead of `head` (same task, other variant)."""
    return (self.head,)

  def init_inputs(self, max_seq_length: int) -> tuple:
    """Dummy positional inputs for `model.init` (shape of one example's `input_ids`)."""
    return (jnp.zeros((1, max_seq_length), jnp.int32),)

  def forward(self, model) -> Callable:
    """`(params, *inputs, deterministic, rngs) -> outputs` (a pytree), inputs as `input_keys`."""

    def forward(params, ids, mask, types, deterministic=True, rngs=None):
      return model.apply(
        {"params": params},
        ids,
        attention_mask=mask,
        token_type_ids=types,
        deterministic=deterministic,
        rngs=rngs,
      )

    return forward

  def loss_fn(self, model, weights: np.ndarray | None) -> Callable:
    """`(params, batch, rng, deterministic) -> (loss, metrics)` for `train.TrainTask`."""
    raise NotImplementedError

  def loss_reduction(self, weights: np.ndarray | None) -> str | None:
    """`"sum"` / `"mean"` when `loss_fn` sums / averages a per-example loss over the batch.

    Then the train step may run a batch as micro-batches with summed / averaged
    gradients (`train.make_train_step`). None (the default): it may not, e.g.
    a mean over tokens or a weighted mean.
    """
    return None

  def predictions(self, outputs, split: str):
    """Model outputs of `split` (a pytree of arrays stacked over its features) → predictions."""
    raise NotImplementedError

  def metrics(self, predictions, split_features: Mapping[str, np.ndarray], split: str) -> dict:
    """Dev metrics (name → float) of `split`'s predictions."""
    raise NotImplementedError

  def write_eval_outputs(self, predictions, out_dir: str, split: str) -> str | None:
    """Writes a dev split's predictions after each evaluation (e.g. SQuAD's `predictions.json`).

    Called on process 0 after every evaluation with the evaluated model's
    predictions, so at the end `out_dir` holds the final model's; must write
    atomically (`electra_jax.fileio`). Returns the path, or None (the default:
    nothing to write).
    """
    return None

  def describe(self) -> str:
    """What the model predicts, for the job's log line (e.g. "2 labels (neg, pos)")."""
    raise NotImplementedError

  def model_extra(self) -> dict:
    """What a saved model records for `predict` / `export` (label map, text columns, ...)."""
    raise NotImplementedError

  def write_submission(self, predictions: np.ndarray, out_dir: str, split: str) -> str | None:
    """Writes a test split's predictions for a leaderboard; returns the path (None: no format)."""
    raise NotImplementedError


@dataclasses.dataclass
class ClassificationAdapter(TaskAdapter):
  """A label (or a score, `num_labels == 1`) per text or text pair: GLUE and custom data.

  Attributes:
    task: the `glue.Task` (or the custom task built from the user's files).
    label_list: class labels in id order; None for regression.
    splits: split name → examples.
    recipe: resolved switches (`recipes.resolve`): head, loss reduction,
      double_unordered, regression scaling.
  """

  task: glue.Task
  label_list: list | None
  splits: dict[str, list]
  dev_splits: tuple[str, ...]
  test_splits: tuple[str, ...]
  recipe: dict
  source: str

  @property
  def name(self) -> str:
    return self.task.name

  @property
  def primary_metric(self) -> str:
    return self.task.primary_metric

  @property
  def num_labels(self) -> int:
    return 1 if self.label_list is None else len(self.label_list)

  @property
  def regression(self) -> bool:
    return self.num_labels == 1

  @property
  def head(self) -> str:
    return recipes.HEAD_NAMES[self.recipe["head"]]

  @property
  def head_kwargs(self) -> dict:
    return {"num_labels": self.num_labels}

  @property
  def regression_range(self) -> tuple[float, float] | None:
    """`(min, max)` when targets are scaled as the official code does (STS-B), else None."""
    if self.regression and self.recipe["scale_regression"]:
      return recipes.REGRESSION_RANGE.get(self.task.name)
    return None

  def training_examples(self) -> list:
    """The train split; MRPC/STS-B with `double_unordered` add each pair swapped, after the originals."""
    train = list(self.splits["train"])
    if self.recipe["double_unordered"] and self.task.name in recipes.UNORDERED_TASKS:
      train += [dataclasses.replace(e, text_a=e.text_b, text_b=e.text_a) for e in train]
    return train

  def featurize(self, tokenizer, max_seq_length):
    label_map = (
      None if self.label_list is None else {label: i for i, label in enumerate(self.label_list)}
    )
    examples = {**self.splits, "train": self.training_examples()}
    return {
      name: features.featurize(split, tokenizer, max_seq_length, label_map)
      for name, split in examples.items()
    }

  def loss_fn(self, model, weights):
    """Cross-entropy (or squared error), summed or averaged over the batch as the recipe says."""
    reduce = jnp.sum if self.recipe["loss_reduction"] == "sum" else jnp.mean
    scale = self.regression_range
    w = None if weights is None else jnp.asarray(weights, jnp.float32)
    forward = self.forward(model)

    def loss_fn(params, batch, rng, deterministic):
      logits = forward(
        params, *(batch[k] for k in self.input_keys), deterministic, {"dropout": rng}
      )
      labels = batch["labels"]
      if self.regression:
        targets = labels if scale is None else (labels - scale[0]) / scale[1]
        return reduce(jnp.square(logits[:, 0] - targets)), {}
      per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      if w is None:
        loss = reduce(per_example)
      elif self.recipe["loss_reduction"] == "sum":
        loss = jnp.sum(per_example * w[labels])
      else:
        loss = jnp.sum(per_example * w[labels]) / jnp.sum(w[labels])
      return loss, {"accuracy": jnp.mean(logits.argmax(-1) == labels)}

    return loss_fn

  def loss_reduction(self, weights):
    """The recipe's sum / mean over examples; None for a class-weighted mean (not per-example)."""
    reduction = self.recipe["loss_reduction"]
    return None if weights is not None and reduction != "sum" else reduction

  def kept_heads(self):
    return tuple(recipes.HEAD_NAMES.values())

  def predictions(self, outputs, split=None):
    if not self.regression:
      return outputs.argmax(-1)
    scale = self.regression_range
    return outputs[:, 0] if scale is None else outputs[:, 0] * scale[1] + scale[0]

  def metrics(self, predictions, split_features, split=None):
    return metrics.compute_metrics(self.task, predictions, split_features["labels"])

  def describe(self):
    if self.label_list is None:
      return "regression"
    return f"{len(self.label_list)} labels ({', '.join(map(str, self.label_list))})"

  def model_extra(self):
    return {
      "task": self.name,
      "label_map": self.label_list,
      "text_columns": list(self.task.text_columns),
      # Targets were (y - min) / max: predict and export map scores back.
      "regression_range": list(self.regression_range) if self.regression_range else None,
    }

  def write_submission(self, predictions, out_dir, split):
    if self.name == "custom":  # no leaderboard format for the user's own data
      return None
    values = predictions.tolist() if self.regression else [self.label_list[i] for i in predictions]
    return metrics.write_glue_submission(self.task, values, out_dir, split=split)


def classification_adapter(cfg: ml_collections.ConfigDict, recipe: dict) -> ClassificationAdapter:
  """GLUE (`cfg.task`) or the user's files (`task=custom`), read and checked."""
  limit = int(cfg.max_train_examples) or None
  if cfg.task == "custom":
    if not cfg.train_file:
      raise ElectraError("task=custom needs --config.train_file (and usually --config.dev_file)")
    task, label_map, splits = custom.load_custom_task(
      custom.CustomDataConfig.from_mapping(cfg),
      cfg.train_file,
      cfg.dev_file or None,
      cfg.test_file or None,
    )
    if limit:
      splits["train"] = splits["train"][:limit]
    labels = None if label_map.regression else list(label_map.labels)
    return ClassificationAdapter(
      task=task,
      label_list=labels,
      splits=splits,
      dev_splits=tuple(s for s in ("dev",) if s in splits),
      test_splits=tuple(s for s in ("test",) if s in splits),
      recipe=recipe,
      source=os.path.abspath(cfg.train_file),
    )
  task = glue.get_task(cfg.task)
  if task.train_split is None:
    raise ElectraError(f"task {task.name} has no training split (predict it with an MNLI model)")
  data_dir = cfg.data_dir or DEFAULT_GLUE_DIR
  if not os.path.isdir(data_dir):
    raise ElectraError(
      f"GLUE data_dir {data_dir} not found: set --config.data_dir to a download_glue_data.py directory"
    )
  splits = {"train": glue.read_split(task, data_dir, task.train_split, limit=limit)}
  for split in task.dev_splits:
    splits[split] = glue.read_split(task, data_dir, split)
  tests = []
  if cfg.write_test_predictions:
    for split in task.test_splits:
      try:
        splits[split] = glue.read_split(task, data_dir, split)
        tests.append(split)
      except ElectraError as e:
        log.info("no test predictions for %s: %s", split, e)
  return ClassificationAdapter(
    task=task,
    label_list=None if task.is_regression else list(task.label_list),
    splits=splits,
    dev_splits=tuple(task.dev_splits),
    test_splits=tuple(tests),
    recipe=recipe,
    source=os.path.abspath(data_dir),
  )


# Adapter factories by `cfg.task`; task names that are not listed (GLUE tasks,
# `custom`) are classification. Each factory reads and checks the task's data.
ADAPTERS: dict[str, Callable[[ml_collections.ConfigDict, dict], TaskAdapter]] = {}


def make_adapter(cfg: ml_collections.ConfigDict) -> TaskAdapter:
  """The adapter for `cfg.task`, with the recipe resolved."""
  factory = ADAPTERS.get(str(cfg.task), classification_adapter)
  return factory(cfg, recipes.resolve(cfg))
