"""SQuAD 1.1 / 2.0 as a fine-tuning task: the adapter the per-seed loop runs.

Data: the official JSON files (`train_file`, `dev_file`, optional
`test_file`), read by `squad.read_squad` (an `answer_start` that does not
point at its text is an error naming the question), or tfds `squad/v1.1` /
`squad/v2.0` prepared under `tfds_data_dir` (`tfds:squad/v1.1:train`). Features:
`squad.featurize`, `[CLS] question [SEP] window [SEP]` with `doc_stride` and
`max_query_length`. Training targets are the first gold answer's token span;
a window that does not hold the whole answer, and an unanswerable 2.0
question, point at [CLS] (position 0), as the official ELECTRA code
(`finetune/qa/qa_tasks.py`) and HF's `run_squad` do for both versions. A
training question whose answer covers no token (only whitespace) is dropped
and counted, so it cannot teach "no answer".

Heads (the recipe's `head` switch): `hf` is HF's `question_answering`
(independent start / end linear layer; exportable to HF), trained with the
mean of the start and end cross-entropies per example; `official` is
`qa_official.ElectraForQuestionAnsweringOfficial` (end conditioned on the
start, beam search, answerability classifier) with `official_qa_loss`. Per
example losses are summed (official) or averaged (standard) over the batch as
the recipe's `loss_reduction` says.

Evaluation: dev outputs become answer text (n-best, `max_answer_length`,
max-context windows) and, for 2.0, a no-answer score per question; after
every evaluation `SEED_DIR/predictions.json` and (2.0) `null_odds.json` are
written in the official ELECTRA formats (the best non-null answer per
question, and the no-answer score), and scored with the official scripts
(`squad_eval`): 1.1 `exact_match` / `f1`; 2.0 `exact`, `f1`, `HasAns_*`,
`NoAns_*` at `na_threshold` and the best thresholds on dev. `f1` is primary.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from electra_jax import fileio
from electra_jax.errors import ElectraError
from electra_jax.tasks import adapters, squad, squad_eval

log = logging.getLogger(__name__)

# `head` switch -> the registered head (electra_jax/heads.py).
HEAD_NAMES = {"official": "question_answering_official", "hf": "question_answering"}
# The no-answer threshold when `na_threshold` is unset: the official
# `qa_na_threshold` (on the answerability logit) and HF's
# `null_score_diff_threshold` (on [CLS] score minus best span score).
DEFAULT_NA_THRESHOLDS = {"official": -2.75, "hf": 0.0}
# The recipe switches that apply to SQuAD (the others are GLUE's).
RECIPE_SWITCHES = (
  "head",
  "official_adam",
  "official_schedule",
  "llrd_official_off_by_one",
  "loss_reduction",
)


@dataclasses.dataclass
class SquadPredictions:
  """One split's answers: the best non-null text and (2.0) the no-answer score per question."""

  answers: dict[str, str]
  null_odds: dict[str, float] | None


@dataclasses.dataclass
class SquadAdapter(adapters.TaskAdapter):
  """SQuAD `version` ("1.1" or "2.0") with the recipe's head.

  Attributes:
    splits: split name -> examples (`train`, `dev`, `test` when given).
    options: `doc_stride`, `max_query_length`, `max_answer_length`,
      `n_best_size`, `na_threshold` (None: the head's default).
  """

  version: str
  splits: dict[str, list[squad.SquadExample]]
  dev_splits: tuple[str, ...]
  test_splits: tuple[str, ...]
  recipe: dict
  source: str
  options: dict
  name: str = "squad"
  primary_metric: str = "f1"

  def __post_init__(self):
    self._features: dict[str, squad.SquadFeatures] = {}
    self.dropped: list[str] = []  # training question ids whose answer covers no token
    # The head of the model being trained: the recipe's, unless `init_from` is a
    # QA model with the other head, which keeps its own (see `kept_heads`).
    self._head_in_use: str | None = None

  @property
  def v2(self) -> bool:
    return self.version == "2.0"

  @property
  def official(self) -> bool:
    return (self._head_in_use or self.recipe["head"]) == "official"

  @property
  def head(self) -> str:
    return HEAD_NAMES[self.recipe["head"]]

  @property
  def head_kwargs(self) -> dict:
    return {}

  @property
  def na_threshold(self) -> float:
    value = self.options.get("na_threshold")
    if value is not None:
      return float(value)
    return DEFAULT_NA_THRESHOLDS["official" if self.official else "hf"]

  def kept_heads(self):
    return tuple(HEAD_NAMES.values())

  def featurize(self, tokenizer, max_seq_length):
    out = {}
    for split, examples in self.splits.items():
      feats = squad.featurize(
        examples,
        tokenizer,
        max_seq_length,
        doc_stride=int(self.options["doc_stride"]),
        max_query_length=int(self.options["max_query_length"]),
      )
      arrays = {
        "input_ids": feats.input_ids,
        "input_mask": feats.attention_mask,
        "segment_ids": feats.token_type_ids,
        "start_positions": feats.start_positions,
        "end_positions": feats.end_positions,
        "is_impossible": np.asarray(
          [examples[i].is_impossible for i in feats.example_index], np.int32
        ),
        "example_index": feats.example_index,
      }
      if split == "train" and feats.unmapped:
        self.dropped = [examples[i].qas_id for i in feats.unmapped]
        keep = ~np.isin(feats.example_index, np.asarray(feats.unmapped))
        arrays = {k: v[keep] for k, v in arrays.items()}
        log.warning(
          "%d training question(s) dropped: the answer covers no context token (first: %s)",
          len(self.dropped),
          self.dropped[0],
        )
      self._features[split] = feats
      out[split] = arrays
    return out

  def loss_fn(self, model, weights):
    """Per example (start CE + end CE) / 2 (plus the answerability loss with the official head)."""
    if weights is not None:
      raise ElectraError("class_weights do not apply to SQuAD")
    reduction = self.recipe["loss_reduction"]
    reduce = jnp.sum if reduction == "sum" else jnp.mean
    official = type(model).__name__ == "ElectraForQuestionAnsweringOfficial"
    self._head_in_use = "official" if official else "hf"

    def loss_fn(params, batch, rng, deterministic):
      starts, ends = batch["start_positions"], batch["end_positions"]
      kwargs = {"start_positions": starts} if official else {}
      outputs = model.apply(
        {"params": params},
        batch["input_ids"],
        attention_mask=batch["input_mask"],
        token_type_ids=batch["segment_ids"],
        deterministic=deterministic,
        rngs={"dropout": rng},
        **kwargs,
      )
      if official:
        from electra_jax import qa_official

        loss, metrics = qa_official.official_qa_loss(
          outputs, starts, ends, batch["is_impossible"], reduction=reduction
        )
        start_logits = outputs["start_logits"]
      else:
        start_logits, end_logits = outputs
        per_example = (
          optax.softmax_cross_entropy_with_integer_labels(start_logits, starts)
          + optax.softmax_cross_entropy_with_integer_labels(end_logits, ends)
        ) / 2
        loss, metrics = reduce(per_example), {}
      metrics["start_accuracy"] = jnp.mean(start_logits.argmax(-1) == starts)
      return loss, metrics

    return loss_fn

  def predictions(self, outputs, split):
    examples, feats = self.splits[split], self._features[split]
    n_best, max_len = int(self.options["n_best_size"]), int(self.options["max_answer_length"])
    if isinstance(outputs, Mapping) and "start_top_index" in outputs:  # the official head's beams
      from electra_jax import qa_official

      answers, null_odds = qa_official.postprocess_official(
        examples, feats, outputs, n_best_size=n_best, max_answer_length=max_len
      )
    else:
      if isinstance(outputs, Mapping):  # HF head outputs by name (an exported model's)
        start_logits, end_logits = outputs["start_logits"], outputs["end_logits"]
      else:
        start_logits, end_logits = outputs
      answers, null_odds = squad.best_spans(
        examples,
        feats,
        start_logits,
        end_logits,
        n_best=n_best,
        max_answer_length=max_len,
      )
    return SquadPredictions(answers, null_odds if self.v2 else None)

  def metrics(self, predictions, split_features, split):
    examples = self.splits[split]
    if not self.v2:
      result = squad_eval.evaluate_v1(examples, predictions.answers)
    else:
      result = squad_eval.evaluate_v2(
        examples, predictions.answers, predictions.null_odds, self.na_threshold
      )
    return {k: float(v) for k, v in result.metrics.items()}

  def write_eval_outputs(self, predictions, out_dir, split):
    prefix = "" if split == "dev" else f"{split}_"
    path = os.path.join(out_dir, f"{prefix}predictions.json")
    os.makedirs(out_dir, exist_ok=True)
    if predictions.null_odds is not None:
      fileio.atomic_write_text(
        os.path.join(out_dir, f"{prefix}null_odds.json"),
        json.dumps(predictions.null_odds, indent=2),
      )
    return fileio.atomic_write_text(path, json.dumps(predictions.answers, indent=2))

  def describe(self):
    threshold = f", no-answer threshold {self.na_threshold}" if self.v2 else ""
    dropped = f"; {len(self.dropped)} training question(s) dropped" if self.dropped else ""
    questions = ", ".join(f"{name} {len(split):,}" for name, split in self.splits.items())
    return (
      f"SQuAD {self.version} questions ({questions}) as answer spans ({self.head}, "
      f"n-best {self.options['n_best_size']}, "
      f"answers <= {self.options['max_answer_length']} tokens{threshold}){dropped}"
    )

  def model_extra(self):
    return {
      "task": self.name,
      "squad_version": self.version,
      **{
        k: self.options[k]
        for k in ("doc_stride", "max_query_length", "max_answer_length", "n_best_size")
      },
      "na_threshold": self.na_threshold,
    }

  def write_submission(self, predictions, out_dir, split):
    """The leaderboard format: `{id: answer}`, "" for a question judged unanswerable."""
    answers = predictions.answers
    if predictions.null_odds is not None:
      t = self.na_threshold
      answers = {q: "" if predictions.null_odds[q] > t else a for q, a in answers.items()}
    os.makedirs(out_dir, exist_ok=True)
    return fileio.atomic_write_text(
      os.path.join(out_dir, f"{split}_predictions.json"), json.dumps(answers, indent=2)
    )


def squad_adapter(cfg: ml_collections.ConfigDict, recipe: dict) -> SquadAdapter:
  """The SQuAD adapter of `cfg` (`experiments/configs/squad.py`), its files read and checked."""
  version = str(cfg.version)
  if version not in squad_eval.VERSIONS:
    raise ElectraError(f"--config.version must be 1.1 or 2.0, got {version!r}")
  if not cfg.train_file:
    raise ElectraError("task=squad needs --config.train_file (and usually --config.dev_file)")
  tfds_dir = cfg.get("tfds_data_dir") or None
  splits = {"train": squad.read_source(cfg.train_file, tfds_data_dir=tfds_dir)}
  limit = int(cfg.max_train_examples)
  if limit:
    splits["train"] = splits["train"][:limit]
  if cfg.dev_file:
    splits["dev"] = squad.read_source(cfg.dev_file, tfds_data_dir=tfds_dir)
  if cfg.test_file:
    splits["test"] = squad.read_source(cfg.test_file, labeled=False, tfds_data_dir=tfds_dir)
  if version == "1.1":
    for split in ("train", "dev"):
      if any(ex.is_impossible for ex in splits.get(split, ())):
        raise ElectraError(
          f"the {split} file has unanswerable questions (SQuAD 2.0): set --config.version=2.0"
        )
  return SquadAdapter(
    version=version,
    splits=splits,
    dev_splits=("dev",) if "dev" in splits else (),
    test_splits=("test",) if "test" in splits else (),
    recipe={"recipe": recipe["recipe"], **{k: recipe[k] for k in RECIPE_SWITCHES}},
    source=cfg.train_file
    if cfg.train_file.startswith("tfds:")
    else os.path.abspath(cfg.train_file),
    options={
      k: cfg[k]
      for k in (
        "doc_stride",
        "max_query_length",
        "max_answer_length",
        "n_best_size",
        "na_threshold",
      )
    },
  )


adapters.ADAPTERS["squad"] = squad_adapter
