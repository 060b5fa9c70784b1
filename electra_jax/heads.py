"""The registry of model heads: one entry per head, read by every layer.

A head is named once here, with the Linen class that implements it (in
`model.py`), the HF `transformers` class it converts to and from, and the
rules that map its own modules (those outside the `electra` encoder) between
HF and our param names. `model.build_model`, `convert`, `pretrained`, the
CLI's `--head` choices and the tests all read `HEADS`, so adding a head is
one entry here plus its module code.

This module imports neither jax nor flax, so the CLI can list the heads
without paying for them.

A rule is `(hf_module, our_module, kind)`: HF modules are `.`-separated, ours
`/`-separated, and placeholders such as `{i}` match the same text on both
sides (see `convert._PLACEHOLDERS`). The kind fixes how the module's leaves
rename: `weight` -> `kernel` (transposed) for a Linear, `weight` -> `scale`
for a LayerNorm, `weight` -> `embedding` for an Embedding; a tied decoder
drops its weight (it is the word embeddings).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from electra_jax.errors import ElectraError

# Module kinds of a conversion rule.
LINEAR = "linear"
NORM = "layer_norm"
EMBED = "embedding"
TIED_DECODER = "tied_decoder"

Rule = tuple[str, str, str]


@dataclasses.dataclass(frozen=True)
class Head:
  """What every layer needs to know about one head.

  Attributes:
    name: our name (`None` for the bare encoder), as `build_model` and
      checkpoints spell it.
    module_class: the Linen class that implements it: a name in
      `electra_jax.model`, or `module:Class` for a head in a module of its own
      (which imports `model`, so `model.build_model` imports it when first used).
    hf_architecture: the HF `transformers` class (`config.json` architectures);
      empty for a head HF does not have (it cannot be exported to HF).
    hf_rules: the head's own modules, outside the encoder (see the module
      docstring).
    base_model_prefix: the scope of the encoder in both param trees (HF's
      `base_model_prefix`); empty for the bare encoder, whose keys have none.
    labeled: the output size is `num_labels`, named by HF `id2label`.
    hf_config_kwargs: head arguments stored in the HF config under the same
      name, with their defaults there.
    check_hf_config: raises `ElectraError` for a HF config this head cannot
      represent (options HF has and we do not implement).
  """

  name: str | None
  module_class: str
  hf_architecture: str
  hf_rules: tuple[Rule, ...] = ()
  base_model_prefix: str = "electra"
  labeled: bool = False
  hf_config_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  check_hf_config: Callable[[Mapping[str, Any]], None] | None = None


def _check_multiple_choice(hf_config: Mapping[str, Any]) -> None:
  # HF's SequenceSummary has more variants than ELECTRA uses; we build only ELECTRA's.
  wanted = {"summary_type": "first", "summary_use_proj": True, "summary_activation": "gelu"}
  for k, v in wanted.items():
    if hf_config.get(k, v) != v:
      raise ElectraError(
        f"multiple choice with {k}={hf_config[k]!r} is not supported (only the ELECTRA default {v!r})"
      )
  if hf_config.get("summary_proj_to_labels") or hf_config.get("summary_first_dropout"):
    raise ElectraError(
      "multiple choice with summary_proj_to_labels / summary_first_dropout is not supported"
    )


_REGISTRY = (
  Head(None, "ElectraModel", "ElectraModel", base_model_prefix=""),
  Head(
    "pretraining",
    "ElectraForPreTraining",
    "ElectraForPreTraining",
    (("discriminator_predictions.{disc}", "discriminator_predictions/{disc}", LINEAR),),
  ),
  Head(
    "masked_lm",
    "ElectraForMaskedLM",
    "ElectraForMaskedLM",
    (
      ("generator_predictions.dense", "generator_predictions/dense", LINEAR),
      ("generator_predictions.LayerNorm", "generator_predictions/LayerNorm", NORM),
      ("generator_lm_head", "generator_lm_head", TIED_DECODER),
    ),
  ),
  Head(
    "sequence_classification",
    "ElectraForSequenceClassification",
    "ElectraForSequenceClassification",
    (("classifier.{cls}", "classifier/{cls}", LINEAR),),
    labeled=True,
  ),
  # The official ELECTRA fine-tuning head (`finetune/classification`):
  # dropout on [CLS], one dense layer, Glorot init. HF has no such class.
  Head(
    "sequence_classification_official",
    "ElectraForSequenceClassificationOfficial",
    "",
    labeled=True,
  ),
  Head(
    "question_answering",
    "ElectraForQuestionAnswering",
    "ElectraForQuestionAnswering",
    (("qa_outputs", "qa_outputs", LINEAR),),
  ),
  # The official ELECTRA QA head (`finetune/qa/qa_tasks.py`): end logits
  # conditioned on the start, beam search, answerability classifier.
  Head(
    "question_answering_official",
    "electra_jax.qa_official:ElectraForQuestionAnsweringOfficial",
    "",
  ),
  Head(
    "token_classification",
    "ElectraForTokenClassification",
    "ElectraForTokenClassification",
    (("classifier", "classifier", LINEAR),),
    labeled=True,
  ),
  Head(
    "multiple_choice",
    "ElectraForMultipleChoice",
    "ElectraForMultipleChoice",
    (
      ("sequence_summary.summary", "sequence_summary/summary", LINEAR),
      ("classifier", "classifier", LINEAR),
    ),
    hf_config_kwargs={"summary_last_dropout": 0.1},
    check_hf_config=_check_multiple_choice,
  ),
)

# Our head name -> its entry, in registry order.
HEADS: Mapping[str | None, Head] = MappingProxyType({h.name: h for h in _REGISTRY})
# HF class name -> our head name.
HEAD_OF_ARCHITECTURE: Mapping[str, str | None] = MappingProxyType(
  {h.hf_architecture: h.name for h in _REGISTRY if h.hf_architecture}
)
# Heads whose output size is `num_labels`.
LABELED_HEADS = tuple(h.name for h in _REGISTRY if h.labeled)


def check_hf_exportable(head: str | None) -> Head:
  """The registry entry of `head`, or an `ElectraError` if HF has no class for it."""
  spec = check_head(head)
  if not spec.hf_architecture:
    raise ElectraError(
      f"head {head!r} has no HF transformers equivalent, so it cannot be exported to HF "
      "(fine-tune with --config.head=hf for a HF-compatible classifier)"
    )
  return spec


def check_head(head: str | None, where: str = "") -> Head:
  """The registry entry of `head`; an `ElectraError` naming the choices if there is none.

  Args:
    head: a head name (`None` for the bare encoder).
    where: what named it (e.g. a file), put before the message.
  """
  try:
    return HEADS[head]
  except (KeyError, TypeError):  # TypeError: an unhashable value from a JSON file
    prefix = f"{where}: " if where else ""
    raise ElectraError(
      f"{prefix}unknown head {head!r}: choose one of {', '.join(map(str, HEADS))}"
    ) from None
