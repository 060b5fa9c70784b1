"""ELECTRA in JAX/Flax.

    model, params = electra_jax.from_pretrained("path/to/hf-or-electra-jax-dir",
                                                head="sequence_classification")
    logits = model.apply({"params": params}, input_ids, attention_mask=mask)

The public names below are imported on first use, so `import electra_jax`
(e.g. by the CLI's `--help`) does not pay for importing jax and flax.
"""

import importlib

# The one place the version is written: setup.cfg reads it (`attr:`).
__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS = {
  "ElectraConfig": "electra_jax.config",
  "ElectraError": "electra_jax.errors",
  "from_pretrained": "electra_jax.pretrained",
  "save_pretrained": "electra_jax.pretrained",
  "build_model": "electra_jax.model",
  "ElectraModel": "electra_jax.model",
  "ElectraForPreTraining": "electra_jax.model",
  "ElectraForMaskedLM": "electra_jax.model",
  "ElectraForSequenceClassification": "electra_jax.model",
  "ElectraForQuestionAnswering": "electra_jax.model",
  "ElectraForTokenClassification": "electra_jax.model",
  "ElectraForMultipleChoice": "electra_jax.model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this hook
    return value
  raise AttributeError(f"module 'electra_jax' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
