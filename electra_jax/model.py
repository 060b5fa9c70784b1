"""ELECTRA encoder and heads as Flax Linen modules.

Purely functional: `model.init(rng, input_ids)` gives a param pytree and
`model.apply({"params": params}, input_ids, ...)` the outputs. Param names
mirror HF `transformers` module names (`electra/embeddings/word_embeddings`,
`electra/encoder/layer_0/attention/self/query`, ...) so that converting a
PyTorch checkpoint is a rename plus a kernel transpose (see `convert.py`).

Every kernel carries logical axis names (`vocab`, `embed`, `joined_kv`,
`mlp`, ...) that `sharding.py` maps to mesh axes; activations are constrained
at block boundaries with `activation_*` names.
"""

from __future__ import annotations

import functools
import importlib
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from electra_jax import attention, cpu_kernels
from electra_jax.config import ElectraConfig
from electra_jax.heads import HEADS as HEAD_REGISTRY
from electra_jax.heads import check_head

Array = jax.Array
Dtype = Any

ACTIVATION_AXES = ("activation_batch", "activation_length", "activation_embed")


def gelu_erf(x: Array) -> Array:
  """Exact GELU written as HF/PyTorch write it: x/2 * (1 + erf(x/sqrt(2))).

  `jax.nn.gelu(approximate=False)` computes the same function through `erfc`,
  which XLA:CPU lowers to a much slower kernel (2.5x on the forward pass); the
  two agree to float32 rounding (within 1.4e-6 of `torch.nn.functional.gelu`).
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(1.0 / math.sqrt(2.0), x.dtype)))


def activation_fn(name: str):
  """HF `ACT2FN` semantics. `gelu` is the exact erf GELU (not jax's default tanh)."""
  if name == "gelu":
    return gelu_erf
  if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
    return functools.partial(jax.nn.gelu, approximate=True)
  if name == "relu":
    return jax.nn.relu
  if name in ("silu", "swish"):
    return jax.nn.silu
  if name == "tanh":
    return jnp.tanh
  raise ValueError(f"unsupported activation {name!r}")


def _dense(
  features: int,
  axes: tuple[str | None, str | None],
  config: ElectraConfig,
  dtype: Dtype,
  param_dtype: Dtype,
  name: str,
) -> nn.Dense:
  return nn.Dense(
    features,
    dtype=dtype,
    param_dtype=param_dtype,
    kernel_init=nn.with_logical_partitioning(
      nn.initializers.normal(config.initializer_range), axes
    ),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)),
    # None (plain `lax.dot_general`) unless `cpu_kernels.enable()` was called.
    dot_general=cpu_kernels.dot_general_for_dense(),
    name=name,
  )


def _layer_norm(config: ElectraConfig, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
    epsilon=config.layer_norm_eps,
    dtype=dtype,
    param_dtype=param_dtype,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
    name=name,
  )


def _embed(
  num: int, features: int, axes, config: ElectraConfig, dtype, param_dtype, name: str
) -> nn.Embed:
  return nn.Embed(
    num,
    features,
    dtype=dtype,
    param_dtype=param_dtype,
    embedding_init=nn.with_logical_partitioning(
      nn.initializers.normal(config.initializer_range), axes
    ),
    name=name,
  )


class ElectraEmbeddings(nn.Module):
  """Word + position + token-type embeddings, then LayerNorm and dropout."""

  config: ElectraConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    c = self.config
    self.word_embeddings = _embed(
      c.vocab_size,
      c.embedding_size,
      ("vocab", "embed"),
      c,
      self.dtype,
      self.param_dtype,
      "word_embeddings",
    )
    self.position_embeddings = _embed(
      c.max_position_embeddings,
      c.embedding_size,
      ("position", "embed"),
      c,
      self.dtype,
      self.param_dtype,
      "position_embeddings",
    )
    self.token_type_embeddings = _embed(
      c.type_vocab_size,
      c.embedding_size,
      ("token_type", "embed"),
      c,
      self.dtype,
      self.param_dtype,
      "token_type_embeddings",
    )
    self.LayerNorm = _layer_norm(c, self.dtype, self.param_dtype, "LayerNorm")
    self.dropout = nn.Dropout(c.hidden_dropout_prob)

  def __call__(self, input_ids, token_type_ids, position_ids, deterministic: bool = True):
    x = self.word_embeddings(input_ids)
    x = x + self.token_type_embeddings(token_type_ids)
    x = x + self.position_embeddings(position_ids)
    x = self.LayerNorm(x)
    return self.dropout(x, deterministic=deterministic)

  def attend(self, x: Array) -> Array:
    """Projects `x` (..., embedding_size) onto the word embeddings (tied decoder)."""
    return self.word_embeddings.attend(x)


class ElectraSelfAttention(nn.Module):
  """Multi-head scaled dot-product attention (HF `attention.self`)."""

  config: ElectraConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask_bias: Array, deterministic: bool) -> Array:
    c = self.config
    b, length, _ = x.shape
    heads, head_dim = c.num_attention_heads, c.head_dim

    def project(name):
      y = _dense(c.hidden_size, ("embed", "joined_kv"), c, self.dtype, self.param_dtype, name)(x)
      return y.reshape(b, length, heads, head_dim)

    q, k, v = project("query"), project("key"), project("value")
    # einsum (the reference, with dropout), or a fused kernel where one can run (attention.py).
    implementation = attention.select(
      attention.requested(),
      platform=jax.default_backend(),
      dtype=self.dtype,
      dropout_active=not deterministic and c.attention_probs_dropout_prob > 0,
      head_dim=head_dim,
    )
    context = None
    if implementation != "einsum":
      context = attention.fused(q, k, v, mask_bias, implementation)
    if context is None:
      probs = attention.scores_softmax(q, k, mask_bias, self.dtype)
      probs = nn.Dropout(c.attention_probs_dropout_prob)(probs, deterministic=deterministic)
      context = attention.weighted_values(probs, v)
    return context.reshape(b, length, heads * head_dim)


class ElectraSelfOutput(nn.Module):
  config: ElectraConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, context: Array, residual: Array, deterministic: bool) -> Array:
    c = self.config
    y = _dense(c.hidden_size, ("joined_kv", "embed"), c, self.dtype, self.param_dtype, "dense")(
      context
    )
    y = nn.Dropout(c.hidden_dropout_prob)(y, deterministic=deterministic)
    return _layer_norm(c, self.dtype, self.param_dtype, "LayerNorm")(y + residual)


class ElectraAttention(nn.Module):
  config: ElectraConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask_bias: Array, deterministic: bool) -> Array:
    kw = dict(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype)
    context = ElectraSelfAttention(**kw, name="self")(x, mask_bias, deterministic)
    return ElectraSelfOutput(**kw, name="output")(context, x, deterministic)


class ElectraLayer(nn.Module):
  """One post-LN transformer block (attention, then feed-forward)."""

  config: ElectraConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask_bias: Array, deterministic: bool) -> Array:
    c = self.config
    kw = dict(config=c, dtype=self.dtype, param_dtype=self.param_dtype)
    x = ElectraAttention(**kw, name="attention")(x, mask_bias, deterministic)
    x = nn.with_logical_constraint(x, ACTIVATION_AXES)
    # HF nests these as `intermediate.dense` and `output.{dense,LayerNorm}`.
    h = IntermediateDense(**kw, name="intermediate")(x)
    h = nn.with_logical_constraint(h, ("activation_batch", "activation_length", "activation_mlp"))
    y = FeedForwardOutput(**kw, name="output")(h, x, deterministic)
    return nn.with_logical_constraint(y, ACTIVATION_AXES)


class IntermediateDense(nn.Module):
  config: ElectraConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    h = _dense(c.intermediate_size, ("embed", "mlp"), c, self.dtype, self.param_dtype, "dense")(x)
    return activation_fn(c.hidden_act)(h)


class FeedForwardOutput(nn.Module):
  config: ElectraConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: Array, residual: Array, deterministic: bool) -> Array:
    c = self.config
    y = _dense(c.hidden_size, ("mlp", "embed"), c, self.dtype, self.param_dtype, "dense")(h)
    y = nn.Dropout(c.hidden_dropout_prob)(y, deterministic=deterministic)
    return _layer_norm(c, self.dtype, self.param_dtype, "LayerNorm")(y + residual)


class _ScannedLayer(nn.Module):
  """Adapts ElectraLayer to `nn.scan`'s (carry, x) -> (carry, y) signature."""

  config: ElectraConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x, mask_bias, deterministic):
    layer_cls = nn.remat(ElectraLayer, static_argnums=(3,)) if self.remat else ElectraLayer
    y = layer_cls(self.config, self.dtype, self.param_dtype, name="layer")(
      x, mask_bias, deterministic
    )
    return y, None


class ElectraEncoder(nn.Module):
  """The stack of layers: `layer_0 ... layer_{n-1}`, or one scanned `layer`.

  With `scan_layers=True` the params of all layers are stacked along a leading
  `layers` axis under `encoder/layer/...` (compiles once per model instead of
  once per layer); `scan_to_layers` / `layers_to_scan` convert between the two
  layouts.
  """

  config: ElectraConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  scan_layers: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, x: Array, mask_bias: Array, deterministic: bool) -> Array:
    c = self.config
    if self.scan_layers:
      scanned = nn.scan(
        _ScannedLayer,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast, nn.broadcast),
        length=c.num_hidden_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
      )
      x, _ = scanned(c, self.dtype, self.param_dtype, self.remat, name="layer")(
        x, mask_bias, deterministic
      )
      return x
    layer_cls = nn.remat(ElectraLayer, static_argnums=(3,)) if self.remat else ElectraLayer
    for i in range(c.num_hidden_layers):
      x = layer_cls(c, self.dtype, self.param_dtype, name=f"layer_{i}")(x, mask_bias, deterministic)
    return x


class ElectraModel(nn.Module):
  """The bare ELECTRA encoder; returns the last hidden states (B, L, hidden_size).

  Attributes:
    config: architecture.
    dtype: compute dtype (e.g. `jnp.bfloat16`); params stay `param_dtype`.
    scan_layers: scan over layers (stacked params, faster compile).
    remat: rematerialise each layer in the backward pass (saves memory).
    shared_embeddings: an `ElectraEmbeddings` owned by a parent module, used
      instead of a private copy (ELECTRA's generator shares the
      discriminator's embeddings).
  """

  config: ElectraConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  scan_layers: bool = False
  remat: bool = False
  shared_embeddings: ElectraEmbeddings | None = None

  def setup(self):
    c = self.config
    if self.shared_embeddings is None:
      self.embeddings = ElectraEmbeddings(c, self.dtype, self.param_dtype)
    if c.embedding_size != c.hidden_size:
      # Input axis unnamed: flax rejects a logical name used twice in one
      # kernel (("embed", "embed") fails under any sharding rules).
      self.embeddings_project = _dense(
        c.hidden_size, (None, "embed"), c, self.dtype, self.param_dtype, "embeddings_project"
      )
    self.encoder = ElectraEncoder(c, self.dtype, self.param_dtype, self.scan_layers, self.remat)

  @property
  def embedding_module(self) -> ElectraEmbeddings:
    return self.shared_embeddings if self.shared_embeddings is not None else self.embeddings

  def __call__(
    self,
    input_ids: Array,
    attention_mask: Array | None = None,
    token_type_ids: Array | None = None,
    position_ids: Array | None = None,
    deterministic: bool = True,
  ) -> Array:
    c = self.config
    if input_ids.ndim != 2:
      raise ValueError(f"input_ids must be (batch, length), got shape {input_ids.shape}")
    length = input_ids.shape[1]
    if length > c.max_position_embeddings:
      raise ValueError(
        f"sequence length {length} exceeds max_position_embeddings {c.max_position_embeddings}: truncate the input"
      )
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if position_ids is None:
      position_ids = jnp.broadcast_to(jnp.arange(length), input_ids.shape)
    x = self.embedding_module(input_ids, token_type_ids, position_ids, deterministic)
    if c.embedding_size != c.hidden_size:
      x = self.embeddings_project(x)
    x = nn.with_logical_constraint(x, ACTIVATION_AXES)
    # Additive mask, (B, 1, 1, L): 0 where attended, most negative float where padded.
    mask_bias = jnp.where(
      attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min
    ).astype(jnp.float32)
    return self.encoder(x, mask_bias, deterministic)

  def attend(self, x: Array) -> Array:
    return self.embedding_module.attend(x)


class _Base(nn.Module):
  """Common attributes of the heads; `electra` is the encoder submodule."""

  config: ElectraConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  scan_layers: bool = False
  remat: bool = False

  def _encoder(self, shared_embeddings=None) -> ElectraModel:
    return ElectraModel(
      self.config,
      self.dtype,
      self.param_dtype,
      self.scan_layers,
      self.remat,
      shared_embeddings,
      name="electra",
    )

  def _dense(self, features, axes, name):
    return _dense(features, axes, self.config, self.dtype, self.param_dtype, name)


class ElectraForPreTraining(_Base):
  """Discriminator: a replaced/original logit per token, shape (B, L)."""

  shared_embeddings: ElectraEmbeddings | None = None

  def setup(self):
    c = self.config
    self.electra = self._encoder(self.shared_embeddings)
    self.discriminator_predictions = DiscriminatorPredictions(c, self.dtype, self.param_dtype)

  def __call__(
    self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, deterministic=True
  ):
    h = self.electra(input_ids, attention_mask, token_type_ids, position_ids, deterministic)
    return self.discriminator_predictions(h)


class DiscriminatorPredictions(nn.Module):
  config: ElectraConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h):
    c = self.config
    h = _dense(c.hidden_size, ("embed", "mlp"), c, self.dtype, self.param_dtype, "dense")(h)
    h = activation_fn(c.hidden_act)(h)
    logits = _dense(1, ("mlp", None), c, self.dtype, self.param_dtype, "dense_prediction")(h)
    return logits[..., 0].astype(jnp.float32)


class GeneratorPredictions(nn.Module):
  config: ElectraConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h):
    c = self.config
    h = _dense(c.embedding_size, ("mlp", "embed"), c, self.dtype, self.param_dtype, "dense")(h)
    h = activation_fn("gelu")(h)
    return _layer_norm(c, self.dtype, self.param_dtype, "LayerNorm")(h)


class ElectraForMaskedLM(_Base):
  """Generator: vocabulary logits, decoder tied to the word embeddings.

  `masked_positions` (B, P) restricts the (expensive) vocabulary projection to
  those positions: the output is then (B, P, vocab) instead of (B, L, vocab).
  """

  shared_embeddings: ElectraEmbeddings | None = None

  def setup(self):
    c = self.config
    self.electra = self._encoder(self.shared_embeddings)
    self.generator_predictions = GeneratorPredictions(c, self.dtype, self.param_dtype)
    self.generator_lm_head = LMHeadBias(c.vocab_size, self.param_dtype)

  def __call__(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    deterministic=True,
    masked_positions: Array | None = None,
  ):
    h = self.electra(input_ids, attention_mask, token_type_ids, position_ids, deterministic)
    if masked_positions is not None:
      h = jnp.take_along_axis(h, masked_positions[..., None].astype(jnp.int32), axis=1)
    h = self.generator_predictions(h)
    logits = self.electra.attend(h.astype(self.dtype))
    return self.generator_lm_head(logits.astype(jnp.float32))


class LMHeadBias(nn.Module):
  """The output bias of the tied decoder (`generator_lm_head.bias` in HF)."""

  vocab_size: int
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, logits):
    bias = self.param(
      "bias",
      nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",)),
      (self.vocab_size,),
      self.param_dtype,
    )
    return logits + bias.astype(logits.dtype)


class ElectraForSequenceClassification(_Base):
  """HF classification head on [CLS]: dropout, dense, gelu, dropout, out_proj.

  `num_labels == 1` is regression (STS-B); the output is (B, num_labels).
  """

  num_labels: int = 2

  @nn.compact
  def __call__(
    self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, deterministic=True
  ):
    c = self.config
    h = self._encoder()(input_ids, attention_mask, token_type_ids, position_ids, deterministic)
    return ClassificationHead(c, self.num_labels, self.dtype, self.param_dtype, name="classifier")(
      h, deterministic
    )


class ElectraForSequenceClassificationOfficial(_Base):
  """The official ELECTRA fine-tuning head: dropout on [CLS] → one dense(num_labels).

  As `finetune/classification/classification_tasks.py`: no pooler and no
  hidden layer, `tf.layers.dense` defaults (Glorot-uniform kernel, zero bias)
  under the `task_specific/` scope (params `task_specific/dense/*`), dropout
  0.1 (`hidden_dropout_prob`). `num_labels == 1` is regression. HF has no
  such class (`heads.check_hf_exportable`).
  """

  num_labels: int = 2

  @nn.compact
  def __call__(
    self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, deterministic=True
  ):
    h = self._encoder()(input_ids, attention_mask, token_type_ids, position_ids, deterministic)
    head = OfficialClassificationHead(
      self.config, self.num_labels, self.dtype, self.param_dtype, name="task_specific"
    )
    return head(h, deterministic)


class ClassificationHead(nn.Module):
  config: ElectraConfig
  num_labels: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h, deterministic):
    c = self.config
    rate = c.classifier_dropout if c.classifier_dropout is not None else c.hidden_dropout_prob
    x = h[:, 0, :]
    x = nn.Dropout(rate)(x, deterministic=deterministic)
    x = _dense(c.hidden_size, ("embed", "mlp"), c, self.dtype, self.param_dtype, "dense")(x)
    x = activation_fn("gelu")(x)
    x = nn.Dropout(rate)(x, deterministic=deterministic)
    x = _dense(self.num_labels, ("mlp", None), c, self.dtype, self.param_dtype, "out_proj")(x)
    return x.astype(jnp.float32)


class OfficialClassificationHead(ClassificationHead):
  """Dropout on [CLS] → one Glorot-initialised dense (the official `task_specific/` layer)."""

  @nn.compact
  def __call__(self, h, deterministic):
    x = nn.Dropout(self.config.hidden_dropout_prob)(h[:, 0, :], deterministic=deterministic)
    x = nn.Dense(
      self.num_labels,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=nn.with_logical_partitioning(nn.initializers.glorot_uniform(), ("embed", None)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
      dot_general=cpu_kernels.dot_general_for_dense(),
      name="dense",
    )(x)
    return x.astype(jnp.float32)


class SpanLogits(NamedTuple):
  """Question-answering output: per-token start and end logits, each (B, L)."""

  start_logits: Array
  end_logits: Array

  @property
  def logits(self) -> Array:
    """Both as one array, (B, L, 2)."""
    return jnp.stack([self.start_logits, self.end_logits], axis=-1)


class ElectraForQuestionAnswering(_Base):
  """Span extraction: `qa_outputs` dense to (start, end) logits."""

  @nn.compact
  def __call__(
    self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, deterministic=True
  ):
    h = self._encoder()(input_ids, attention_mask, token_type_ids, position_ids, deterministic)
    logits = self._dense(2, ("embed", None), "qa_outputs")(h).astype(jnp.float32)
    return SpanLogits(logits[..., 0], logits[..., 1])


class ElectraForTokenClassification(_Base):
  """Per-token labels (NER, ...): dropout then `classifier`; output (B, L, num_labels)."""

  num_labels: int = 2

  @nn.compact
  def __call__(
    self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, deterministic=True
  ):
    c = self.config
    h = self._encoder()(input_ids, attention_mask, token_type_ids, position_ids, deterministic)
    rate = c.classifier_dropout if c.classifier_dropout is not None else c.hidden_dropout_prob
    h = nn.Dropout(rate)(h, deterministic=deterministic)
    return self._dense(self.num_labels, ("embed", None), "classifier")(h).astype(jnp.float32)


class ElectraForMultipleChoice(_Base):
  """Inputs (B, num_choices, L); output (B, num_choices).

  HF's `sequence_summary` on [CLS]: dense (hidden -> hidden), gelu, dropout
  (`summary_last_dropout` 0.1), then `classifier` to one score per choice.
  """

  summary_last_dropout: float = 0.1

  @nn.compact
  def __call__(
    self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, deterministic=True
  ):
    b, n, length = input_ids.shape

    def flat(x):
      return None if x is None else x.reshape(b * n, length)

    h = self._encoder()(
      flat(input_ids), flat(attention_mask), flat(token_type_ids), flat(position_ids), deterministic
    )
    x = SequenceSummary(
      self.config, self.summary_last_dropout, self.dtype, self.param_dtype, name="sequence_summary"
    )(h, deterministic)
    x = self._dense(1, ("embed", None), "classifier")(x)
    return x.reshape(b, n).astype(jnp.float32)


class SequenceSummary(nn.Module):
  config: ElectraConfig
  last_dropout: float = 0.1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h, deterministic):
    c = self.config
    x = _dense(c.hidden_size, ("embed", "mlp"), c, self.dtype, self.param_dtype, "summary")(h[:, 0])
    x = activation_fn("gelu")(x)
    x = x.astype(self.dtype)
    return nn.Dropout(self.last_dropout)(x, deterministic=deterministic)


# Head name -> Linen class, for every head in the registry (`heads.HEADS`
# names each head's class; a name with no class here fails at import). A head
# in a module of its own (`module:Class`) is imported by `build_model`.
HEADS: dict[str | None, type[nn.Module]] = {
  name: globals()[head.module_class]
  for name, head in HEAD_REGISTRY.items()
  if ":" not in head.module_class
}


def head_class(head: str | None) -> type[nn.Module]:
  """The Linen class of a registered head."""
  spec = check_head(head)
  if spec.name not in HEADS:
    module, _, name = spec.module_class.partition(":")
    HEADS[spec.name] = getattr(importlib.import_module(module), name)
  return HEADS[spec.name]


def build_model(
  config: ElectraConfig,
  head: str | None = None,
  *,
  dtype: Dtype = jnp.float32,
  param_dtype: Dtype = jnp.float32,
  scan_layers: bool = False,
  remat: bool = False,
  **head_kwargs,
) -> nn.Module:
  """Returns the Linen module for `head` (see `heads.HEADS`)."""
  cls = head_class(head)
  return cls(
    config,
    dtype=dtype,
    param_dtype=param_dtype,
    scan_layers=scan_layers,
    remat=remat,
    **head_kwargs,
  )


def dummy_inputs(model: nn.Module, batch: int = 1, length: int = 8) -> Array:
  """Input ids with the shape `model` expects (multiple choice has a choices axis)."""
  if isinstance(model, ElectraForMultipleChoice):
    return jnp.zeros((batch, 2, length), jnp.int32)
  return jnp.zeros((batch, length), jnp.int32)


def init_params(model: nn.Module, rng: Array, length: int = 8) -> dict:
  """Initialises `model` and returns its plain (unboxed) param pytree."""
  variables = jax.jit(lambda r: model.init(r, dummy_inputs(model, 1, length)))(rng)
  return nn.meta.unbox(variables["params"])


def logical_axes(model: nn.Module, length: int = 8) -> dict:
  """A pytree of `PartitionSpec`s of logical axis names, shaped like the params."""
  abstract = jax.eval_shape(
    lambda r: model.init(r, dummy_inputs(model, 1, length)), jax.random.key(0)
  )
  return nn.get_partition_spec(abstract["params"])


def scan_to_layers(params: dict, num_layers: int) -> dict:
  """Converts scanned params (`encoder/layer/layer/...`, leading layer axis) to `layer_i`."""

  def convert(tree):
    if not isinstance(tree, dict):
      return tree
    out = {}
    for k, v in tree.items():
      if k == "encoder" and isinstance(v, dict) and "layer" in v:
        stacked = v["layer"]["layer"]
        out[k] = {
          f"layer_{i}": jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(num_layers)
        }
      else:
        out[k] = convert(v)
    return out

  return convert(params)


def layers_to_scan(params: dict, num_layers: int) -> dict:
  """Inverse of `scan_to_layers`: stacks `layer_i` into one scanned `layer`."""

  def convert(tree):
    if not isinstance(tree, dict):
      return tree
    out = {}
    for k, v in tree.items():
      if k == "encoder" and isinstance(v, dict) and "layer_0" in v:
        layers = [v[f"layer_{i}"] for i in range(num_layers)]
        out[k] = {"layer": {"layer": jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}}
      else:
        out[k] = convert(v)
    return out

  return convert(params)
