"""What a job derives from its config before building anything: tokenizer, model config, dtype.

Shared by both jobs (`run_pretraining`, `run_finetuning`), `quickstart` and
the up-front checks (`validate`), so that no job imports another for its
helpers. Importing this module imports no jax (`validate` stays light);
`compute_dtype` imports it when called.
"""

from __future__ import annotations

import os

import ml_collections

from electra_jax.config import ElectraConfig
from electra_jax.errors import ElectraError

SAMPLE_DATA = os.path.join(os.path.dirname(__file__), "sample_data")
BUNDLED_VOCAB = os.path.join(SAMPLE_DATA, "vocab.txt")
# The project's shared data (GLUE, WikiText-2, Gutenberg, SQuAD): `../shared/data`
# beside the checkout, or `$ELECTRA_JAX_SHARED_DATA` (as the tests read it).
SHARED_DATA = os.environ.get("ELECTRA_JAX_SHARED_DATA") or os.path.normpath(
  os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
)
DEFAULT_GLUE_DIR = os.path.join(SHARED_DATA, "glue_data")
COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")
# `auto` computes in bfloat16 on these backends (params, optimizer state,
# softmax and LayerNorm statistics and the losses stay float32), in float32
# elsewhere: XLA:CPU runs bfloat16 matmuls slower than float32
# (experiments/benchmarks/README.md).
BFLOAT16_BACKENDS = ("gpu", "cuda", "rocm", "tpu")


def resolve_compute_dtype(name: str, backend: str | None = None) -> str:
  """`name` with `auto` replaced by `bfloat16` on GPU/TPU and `float32` elsewhere.

  Args:
    name: one of `COMPUTE_DTYPES`.
    backend: the JAX backend (`jax.default_backend()` when None).
  """
  if name not in COMPUTE_DTYPES:
    raise ElectraError(f"compute_dtype {name!r} is not one of {', '.join(COMPUTE_DTYPES)}")
  if name != "auto":
    return name
  if backend is None:
    import jax

    backend = jax.default_backend()
  return "bfloat16" if backend in BFLOAT16_BACKENDS else "float32"


def compute_dtype(name: str):
  """The jnp dtype for `--config.compute_dtype` (one of `COMPUTE_DTYPES`; `auto` resolved)."""
  resolved = resolve_compute_dtype(name)
  import jax.numpy as jnp  # here, not at the top: `validate` imports this module without jax

  return getattr(jnp, resolved)


def with_resolved_compute_dtype(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `cfg` whose `compute_dtype` is concrete (`auto` resolved for this backend).

  Jobs record this copy in `run_config.json`, so a run resumed on another kind
  of device, where `auto` means another dtype, is seen as a changed config.
  """
  resolved = cfg.copy_and_resolve_references()
  resolved.compute_dtype = resolve_compute_dtype(str(cfg.compute_dtype))
  return resolved


def resolve_tokenizer(cfg: ml_collections.ConfigDict):
  """The configured tokenizer, else the prepared data's, else init_from's, else the bundled BERT vocab.

  Fine-tuning configs have no `data` key; that step is skipped for them.
  """
  from electra_jax import tokenization

  path = str(cfg.tokenizer or "")
  if not path:
    data = str(cfg.get("data") or "")
    if data and os.path.isdir(data) and os.path.isdir(os.path.join(data, "tokenizer")):
      path = os.path.join(data, "tokenizer")
    elif cfg.init_from and os.path.isdir(cfg.init_from):
      try:
        return tokenization.load_tokenizer(cfg.init_from)
      except ElectraError:
        path = BUNDLED_VOCAB
    else:
      path = BUNDLED_VOCAB
  return tokenization.load_tokenizer(path)


def model_config(cfg: ml_collections.ConfigDict, tokenizer) -> ElectraConfig:
  """The `ElectraConfig` of `cfg.model`, sized to `tokenizer` (a model built from scratch)."""
  try:
    return ElectraConfig(
      vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id, **cfg.model.to_dict()
    )
  except TypeError as e:
    raise ElectraError(f"config.model: {e}") from None
