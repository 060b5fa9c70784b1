"""ElectraConfig: the hyperparameters that define ELECTRA's math.

A frozen, hashable dataclass (so it can be a static argument under `jit`)
holding every field of HF `transformers.ElectraConfig` that changes what the
model computes, plus `from_hf` / `to_hf` converters and presets for the
released Google checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from electra_jax.errors import ElectraError

ACTIVATIONS = (
  "gelu",
  "gelu_new",
  "gelu_pytorch_tanh",
  "gelu_fast",
  "relu",
  "silu",
  "swish",
  "tanh",
)

# HF config keys we read; everything else in a HF config.json is bookkeeping
# (architectures, torch_dtype, summary_* for multiple choice are handled
# explicitly below).
_HF_FIELDS = (
  "vocab_size",
  "embedding_size",
  "hidden_size",
  "num_hidden_layers",
  "num_attention_heads",
  "intermediate_size",
  "hidden_act",
  "hidden_dropout_prob",
  "attention_probs_dropout_prob",
  "max_position_embeddings",
  "type_vocab_size",
  "layer_norm_eps",
  "initializer_range",
  "pad_token_id",
  "classifier_dropout",
)


@dataclasses.dataclass(frozen=True)
class ElectraConfig:
  """ELECTRA architecture hyperparameters (HF `ElectraConfig` names).

  Attributes mirror `transformers.ElectraConfig`. Defaults are ELECTRA-Small
  discriminator's.
  """

  vocab_size: int = 30522
  embedding_size: int = 128
  hidden_size: int = 256
  num_hidden_layers: int = 12
  num_attention_heads: int = 4
  intermediate_size: int = 1024
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  pad_token_id: int = 0
  classifier_dropout: float | None = None

  def __post_init__(self):
    if self.hidden_act not in ACTIVATIONS:
      raise ElectraError(
        f"unsupported hidden_act {self.hidden_act!r}: use one of {', '.join(ACTIVATIONS)}"
      )
    if self.hidden_size % self.num_attention_heads:
      raise ElectraError(
        f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
        f"{self.num_attention_heads}"
      )
    for name in (
      "vocab_size",
      "embedding_size",
      "hidden_size",
      "num_hidden_layers",
      "num_attention_heads",
      "intermediate_size",
      "max_position_embeddings",
      "type_vocab_size",
    ):
      if int(getattr(self, name)) <= 0:
        raise ElectraError(
          f"config field {name} must be a positive integer, got {getattr(self, name)!r}"
        )

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  def replace(self, **changes) -> ElectraConfig:
    return dataclasses.replace(self, **changes)

  # -- HF interop -------------------------------------------------------------

  @classmethod
  def from_hf(cls, path_or_dict: str | os.PathLike | dict[str, Any]) -> ElectraConfig:
    """Builds a config from a HF `config.json`, its directory, or its dict.

    Raises:
      ElectraError: the file is missing/unreadable, or it asks for something
        this implementation does not compute (e.g. relative positions).
    """
    if isinstance(path_or_dict, dict):
      hf = dict(path_or_dict)
      where = "config dict"
    else:
      path = os.fspath(path_or_dict)
      if os.path.isdir(path):
        path = os.path.join(path, "config.json")
      if not os.path.exists(path):
        raise ElectraError(
          f"no config.json at {path}: point at a HF model directory or its config.json"
        )
      try:
        with open(path, encoding="utf-8") as f:
          hf = json.load(f)
      except (OSError, json.JSONDecodeError) as e:
        raise ElectraError(f"cannot read {path}: {e}") from None
      where = path
    model_type = hf.get("model_type", "electra")
    if model_type != "electra":
      raise ElectraError(
        f"{where} has model_type {model_type!r}; only 'electra' checkpoints are supported"
      )
    pos = hf.get("position_embedding_type", "absolute")
    if pos != "absolute":
      raise ElectraError(
        f"{where}: position_embedding_type={pos!r} is not supported (only 'absolute', as in every released ELECTRA)"
      )
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
      raise ElectraError(f"{where}: decoder/cross-attention ELECTRA configs are not supported")
    kwargs = {k: hf[k] for k in _HF_FIELDS if k in hf}
    if kwargs.get("embedding_size") is None:
      kwargs["embedding_size"] = kwargs.get("hidden_size", cls.hidden_size)
    if kwargs.get("pad_token_id") is None:
      kwargs.pop("pad_token_id", None)
    try:
      return cls(**kwargs)
    except TypeError as e:
      raise ElectraError(f"{where}: {e}") from None

  def to_hf(self, architectures: list[str] | None = None, **extra) -> dict[str, Any]:
    """Returns a dict that `transformers.ElectraConfig(**d)` accepts."""
    d = {k: getattr(self, k) for k in _HF_FIELDS}
    d.update(
      model_type="electra",
      position_embedding_type="absolute",
      summary_type="first",
      summary_use_proj=True,
      summary_activation="gelu",
      summary_last_dropout=0.1,
    )
    if architectures:
      d["architectures"] = list(architectures)
    d.update(extra)
    return d

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> ElectraConfig:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ElectraError(f"unknown ElectraConfig fields: {', '.join(unknown)}")
    return cls(**d)


# Model shapes by size name: the one table behind `PRESETS` and the `size=`
# argument of experiments/configs/*.py. small/base/large are the paper's
# discriminators (Table 6; the released Google checkpoints); tiny is for CPU
# smoke runs: the shape of the tiny pretraining run and the quickstart, whose
# numbers experiments/results/README.md reports.
SIZES: dict[str, ElectraConfig] = {
  "tiny": ElectraConfig(
    embedding_size=32,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=256,
  ),
  "small": ElectraConfig(
    embedding_size=128,
    hidden_size=256,
    num_hidden_layers=12,
    num_attention_heads=4,
    intermediate_size=1024,
  ),
  "base": ElectraConfig(
    embedding_size=768,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
  ),
  "large": ElectraConfig(
    embedding_size=1024,
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
  ),
}

# The fields a size sets; the rest (vocabulary, dropout, ...) come from the
# tokenizer or the config file.
SHAPE_FIELDS = (
  "embedding_size",
  "hidden_size",
  "num_hidden_layers",
  "num_attention_heads",
  "intermediate_size",
)


def shape(size: str) -> dict[str, int]:
  """The `SHAPE_FIELDS` of a size (`"tiny"`, `"small"`, ...), for config files."""
  if size not in SIZES:
    raise ElectraError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
  return {name: getattr(SIZES[size], name) for name in SHAPE_FIELDS}


# The released generators of base and large are narrower than their
# discriminators (hidden 256, 4 heads); small's has the discriminator's shape.
_NARROW_GENERATOR = dict(hidden_size=256, num_attention_heads=4, intermediate_size=1024)

# Released Google checkpoints (google/electra-{small,base,large}-{discriminator,generator}).
PRESETS: dict[str, ElectraConfig] = {
  "small-discriminator": SIZES["small"],
  "small-generator": SIZES["small"],
  "base-discriminator": SIZES["base"],
  "base-generator": SIZES["base"].replace(**_NARROW_GENERATOR),
  "large-discriminator": SIZES["large"],
  "large-generator": SIZES["large"].replace(**_NARROW_GENERATOR),
  # For tests and CPU smoke runs.
  "tiny": SIZES["tiny"],
}


def preset(name: str) -> ElectraConfig:
  """Returns a named preset, e.g. `preset("small-discriminator")`."""
  if name not in PRESETS:
    raise ElectraError(f"unknown preset {name!r}: choose from {', '.join(PRESETS)}")
  return PRESETS[name]
