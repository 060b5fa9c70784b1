"""Fine-tuning recipes: the official ELECTRA one, and the one HF Trainer users get.

`official` is google-research/electra's fine-tuning, switch by switch
(`run_finetuning.py`, `configure_finetuning.py`, `model/optimization.py`,
`finetune/classification/classification_tasks.py`):

  head                      dropout on [CLS] → one dense layer (no pooler)
  official_adam             Adam without bias correction (`AdamWeightDecayOptimizer`)
  official_schedule         `lr · (1 − t/T) · min(1, t/warmup)`, warmup a float
  llrd_official_off_by_one  `_get_layer_lrs`' depths (one more factor of decay
                            below the head than the textbook scheme)
  loss_reduction            `sum`: the batch's losses summed (`tf.reduce_sum`),
                            then the global-norm clip at 1.0
  double_unordered          MRPC and STS-B train on both sentence orders
  scale_regression          STS-B targets / 5 (`(label - 0) / 5`), predictions
                            scaled back for the metric

`standard` is bias-corrected AdamW, warmup then linear decay, the mean loss,
HF's two-layer classification head and the intended layer-wise decay.

The config's `recipe` picks one; any switch set in the config (not None)
overrides it; `resolve` returns the values the run uses, which `results.json`
records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from electra_jax.errors import ElectraError

RECIPES: Mapping[str, Mapping[str, Any]] = {
  "official": {
    "head": "official",
    "official_adam": True,
    "official_schedule": True,
    "llrd_official_off_by_one": True,
    "loss_reduction": "sum",
    "double_unordered": True,
    "scale_regression": True,
  },
  "standard": {
    "head": "hf",
    "official_adam": False,
    "official_schedule": False,
    "llrd_official_off_by_one": False,
    "loss_reduction": "mean",
    "double_unordered": False,
    "scale_regression": False,
  },
}
SWITCHES = tuple(RECIPES["official"])
_CHOICES = {"head": ("official", "hf"), "loss_reduction": ("sum", "mean")}

# `head` switch -> the registered head (electra_jax/heads.py).
HEAD_NAMES = {"official": "sequence_classification_official", "hf": "sequence_classification"}

# The official code's regression range (`RegressionTask(min_value, max_value)`):
# targets become `(label - min) / max`. STS-B is the only regression GLUE task.
REGRESSION_RANGE = {"stsb": (0.0, 5.0)}
# Tasks whose `_create_examples` honours `double_unordered` (sentence order does not matter).
UNORDERED_TASKS = ("mrpc", "stsb")


def resolve(cfg: Mapping[str, Any]) -> dict[str, Any]:
  """The recipe's switches with the config's explicit values applied.

  Args:
    cfg: the fine-tuning config (`recipe` and optionally any of `SWITCHES`).

  Returns:
    `{"recipe": name, switch: value, ...}`.

  Raises:
    ElectraError: an unknown recipe or switch value.
  """
  name = str(cfg.get("recipe") or "")
  if name not in RECIPES:
    raise ElectraError(
      f"--config.recipe={name!r} is not a recipe: choose {' or '.join(map(repr, RECIPES))}"
    )
  out: dict[str, Any] = {"recipe": name, **RECIPES[name]}
  for key in SWITCHES:
    value = cfg.get(key)
    if value is None:
      continue
    if key in _CHOICES and value not in _CHOICES[key]:
      raise ElectraError(
        f"--config.{key}={value!r}: choose {' or '.join(map(repr, _CHOICES[key]))}"
      )
    out[key] = value
  return out
