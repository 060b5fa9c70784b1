"""The registry of pretraining objectives: name → what each one trains, scores and exports.

One `Objective` per `--config.objective` value (the paper's Section 3.2
ablations). The table holds names only, no code: `pretraining.MAIN_MODELS`
and `pretraining.MAIN_LOSSES` map its `main_model` / `main_loss` to the
modules and loss functions, so this module imports no jax and `validate`
reads its choices from here.

Adding an objective = one entry below, plus its main-model loss in
`pretraining.MAIN_LOSSES` when none of the existing ones fits.
"""

from __future__ import annotations

import dataclasses

from electra_jax.errors import ElectraError


@dataclasses.dataclass(frozen=True)
class Objective:
  """One pretraining objective.

  Every objective trains the generator (a masked LM on `[MASK]`ed input,
  loss weight `gen_weight`); they differ in the main model beside it.

  Attributes:
    name: the `--config.objective` value.
    main_model: the main model's module, a key of `pretraining.MAIN_MODELS`
      (`pretraining`: `ElectraForPreTraining`, `masked_lm`:
      `ElectraForMaskedLM`, `copy_masked_lm`: `pretraining.CopyMaskedLM`); it
      reads the input with the masked positions replaced by generator
      samples. None: no main model, and the generator, the only model
      trained, has the main model's full size.
    main_loss: how the main model's outputs are scored, a key of
      `pretraining.MAIN_LOSSES` (None without a main model).
    export_head: the head the main model is saved with (`save_pretrained`,
      HF export) and loaded with (`init_from`); None when it has no HF
      equivalent, so it is neither exported nor loaded.
    description: one line for people.
  """

  name: str
  main_model: str | None
  main_loss: str | None
  export_head: str | None
  description: str

  @property
  def has_discriminator(self) -> bool:
    """Whether there is a main model besides the generator (`discriminator` params)."""
    return self.main_model is not None


OBJECTIVES: dict[str, Objective] = {
  o.name: o
  for o in (
    Objective(
      "electra",
      "pretraining",
      "rtd_all_tokens",
      "pretraining",
      "replaced-token detection, discriminator loss over all real tokens (the paper)",
    ),
    Objective(
      "electra_15",
      "pretraining",
      "rtd_masked",
      "pretraining",
      "replaced-token detection, discriminator loss over the masked positions only",
    ),
    Objective(
      "replace_mlm",
      "masked_lm",
      "masked_lm",
      "masked_lm",
      "a full-size masked LM whose masked positions hold generator samples, not [MASK]",
    ),
    Objective(
      "all_tokens_mlm",
      "copy_masked_lm",
      "copy_mlm",
      None,
      "as replace_mlm, predicting every real token, with the paper's copy mechanism",
    ),
    Objective("mlm", None, None, None, "BERT: the generator alone, at full size"),
  )
}
NAMES = tuple(OBJECTIVES)


def get(name: str) -> Objective:
  """The `Objective` called `name`; an `ElectraError` listing the choices otherwise."""
  if name not in OBJECTIVES:
    raise ElectraError(f"unknown objective {name!r}: choose one of {', '.join(NAMES)}")
  return OBJECTIVES[name]
