"""ELECTRA pretraining objectives: dynamic masking, generator sampling, losses.

Semantics follow google-research/electra (`pretrain/pretrain_helpers.py`,
`run_pretraining.py`):

  * `mask_inputs`: per batch, `max(1, min(P, round(mask_prob × real tokens)))`
    positions per sequence, never `[CLS]`/`[SEP]`/`[MASK]`/padding, with
    `P = max_predictions_per_seq`; 85 % of them become `[MASK]`, the rest keep
    their token (`random_token_prob` adds BERT's random replacement, 0 by
    default as in the official code).
  * `ElectraRTD`: a generator (`ElectraForMaskedLM` at a fraction of the
    width, `generator_config`) and a discriminator (`ElectraForPreTraining`)
    sharing ONE embeddings module (word, position, type, LayerNorm) owned by
    this parent, so the param tree is `{embeddings, generator, discriminator}`.
  * `rtd_loss_fn`: generator MLM loss + `disc_weight` × discriminator loss,
    samples drawn by Gumbel-max from the generator (no gradient through them),
    a sampled token equal to the original labelled "original".

Two deliberate differences from the official code, both documented where they
happen: masked positions are drawn *without* replacement (the official
`tf.random.categorical` draws with replacement, so it sometimes masks fewer
distinct tokens than it counts in the loss weights), and a sequence with no
maskable token gets no prediction slot (the official code divides by zero).

Objectives (`ObjectiveConfig.name`, the paper's Section 3.2 ablations; the
registry is `objectives.OBJECTIVES`, the main models and losses it names are
`MAIN_MODELS` and `MAIN_LOSSES` here):

  * `electra`: replaced-token detection, disc loss over all real tokens.
  * `electra_15`: the same, disc loss only over the masked positions.
  * `replace_mlm`: the main model is a masked LM (full width, tied decoder)
    whose input has the masked positions replaced by generator samples
    instead of `[MASK]`; it predicts the original tokens there.
  * `all_tokens_mlm`: as `replace_mlm`, but the main model predicts the
    identity of every real token, with the paper's copy mechanism:
    `p(x_t) = D_t·1[x_t = input_t] + (1 − D_t)·softmax(...)[x_t]`, `D_t` a
    sigmoid gate (a `discriminator_predictions`-shaped head).
  * `mlm`: BERT-style masked LM — only the generator, at the discriminator's
    full size, trained on `[MASK]`ed input.

For the MLM ablations the main model sits under the `discriminator` key (it is
the model one fine-tunes) and its MLM loss has weight 1 (the paper gives no
other weight; `disc_weight` only scales the sigmoid loss). The paper does not
say whether the generator keeps training in those ablations; here it does
(same generator loss as `electra`).

Usage (what a train loop does)::

  model = build_rtd_model(disc_config, "electra", generator_hidden_size=0.25)
  P = max_predictions_per_seq(0.15, 128)
  objective = ObjectiveConfig(max_predictions=P, mask_id=vocab["[MASK]"],
                              special_ids=(cls_id, sep_id, pad_id))
  init_boxed = lambda rng: model.init(rng, *init_inputs(1, 128, P))["params"]
  loss_fn = make_loss_fn(model, objective)  # (params, batch, rng, deterministic)
  # export: discriminator_params(params), generator_params(params)
  # init_from: combine_params(discriminator=..., generator=...)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from electra_jax import cpu_kernels, objectives
from electra_jax import model as model_lib
from electra_jax.config import ElectraConfig
from electra_jax.errors import ElectraError

Array = jax.Array
PyTree = Any


def max_predictions_per_seq(mask_prob: float, max_seq_length: int) -> int:
  """The official default: `int((mask_prob + 0.005) * max_seq_length)`."""
  return int((mask_prob + 0.005) * max_seq_length)


def generator_config(
  disc_config: ElectraConfig, generator_hidden_size: float = 0.25, generator_layers: float = 1.0
) -> ElectraConfig:
  """The generator's config, as the official `get_generator_config`.

  Width `round(hidden × generator_hidden_size)`, FFN `4 × width`,
  `max(1, width // 64)` heads, depth `round(layers × generator_layers)`; the
  embedding size (shared embeddings) and everything else unchanged.

  Args:
    disc_config: the discriminator's config.
    generator_hidden_size: width as a fraction of the discriminator's (0.25
      small/large, 1/3 base in the paper; 1.0 for ELECTRA-Small++).
    generator_layers: depth as a fraction of the discriminator's.

  Returns:
    An `ElectraConfig` for the generator.
  """
  if not 0 < generator_hidden_size <= 4 or not 0 < generator_layers <= 4:
    raise ElectraError(
      f"generator_hidden_size {generator_hidden_size} / generator_layers {generator_layers} "
      "must be fractions in (0, 4] of the discriminator's"
    )
  hidden = int(round(disc_config.hidden_size * generator_hidden_size))
  return disc_config.replace(
    hidden_size=hidden,
    num_hidden_layers=max(1, int(round(disc_config.num_hidden_layers * generator_layers))),
    intermediate_size=4 * hidden,
    num_attention_heads=max(1, hidden // 64),
  )


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
  """Everything the loss needs besides the model; hashable, so static under jit.

  Attributes:
    name: the objective, a key of `objectives.OBJECTIVES`.
    mask_prob: fraction of real tokens to mask (0.15; 0.25 for large).
    max_predictions: prediction slots per sequence, `P`; use
      `max_predictions_per_seq(mask_prob, max_seq_length)`.
    mask_id: the `[MASK]` token id (default: BERT uncased vocab's, as are
      the `special_ids` defaults; take both from the tokenizer).
    special_ids: ids never masked besides `[MASK]`: `(cls, sep, pad)`.
    replace_with_mask_prob: of the masked positions, the fraction set to
      `[MASK]` (0.85 official).
    random_token_prob: of the masked positions, the fraction set to a random
      token (0 official; 0.1 with 0.8 above gives BERT's 80/10/10).
    vocab_size: needed when `random_token_prob > 0`.
    gen_weight: generator loss weight (1).
    disc_weight: discriminator loss weight, the paper's lambda (50).
    temperature: Gumbel sampling temperature (1).
  """

  name: str = "electra"
  mask_prob: float = 0.15
  max_predictions: int = 19
  mask_id: int = 103
  special_ids: tuple[int, ...] = (101, 102, 0)
  replace_with_mask_prob: float = 0.85
  random_token_prob: float = 0.0
  vocab_size: int | None = None
  gen_weight: float = 1.0
  disc_weight: float = 50.0
  temperature: float = 1.0

  def __post_init__(self):
    objectives.get(self.name)  # an unknown name fails here, not inside jit
    if not 0 < self.mask_prob < 1:
      raise ElectraError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
    if self.max_predictions < 1:
      raise ElectraError(f"max_predictions must be >= 1, got {self.max_predictions}")
    probs = (self.replace_with_mask_prob, self.random_token_prob)
    if min(probs) < 0 or sum(probs) > 1:
      raise ElectraError(
        f"replace_with_mask_prob {probs[0]} + random_token_prob {probs[1]} must be non-negative and sum to <= 1"
      )
    if self.random_token_prob > 0 and not self.vocab_size:
      raise ElectraError("random_token_prob > 0 needs vocab_size")
    if self.temperature <= 0:
      raise ElectraError(f"temperature must be positive, got {self.temperature}")
    object.__setattr__(self, "special_ids", tuple(int(i) for i in self.special_ids))

  @property
  def spec(self) -> objectives.Objective:
    """The registry entry of this objective."""
    return objectives.OBJECTIVES[self.name]


class MaskedBatch(NamedTuple):
  """The output of `mask_inputs`.

  Attributes:
    masked_input_ids: (B, L) the input with the chosen positions corrupted.
    masked_positions: (B, P) int32 positions of the prediction slots; unused
      slots (weight 0) point at position 0.
    masked_ids: (B, P) the original tokens at those positions (0 if unused).
    masked_weights: (B, P) float32, 1 for a used slot, 0 otherwise.
  """

  masked_input_ids: Array
  masked_positions: Array
  masked_ids: Array
  masked_weights: Array


def _slots_to_sequence(positions: Array, active: Array, length: int) -> Array:
  """(B, P, L) one-hot of `positions`, zero for inactive slots.

  Used instead of a scatter: unused slots all point at position 0, and a
  scatter with duplicate indices has no defined winner.
  """
  hits = positions[:, :, None] == jnp.arange(length)[None, None, :]
  return hits & active[:, :, None]


def _replace_at(ids: Array, positions: Array, active: Array, values: Array) -> Array:
  """`ids` with `values[b, p]` written at `positions[b, p]` where `active`."""
  hits = _slots_to_sequence(positions, active, ids.shape[1])
  written = jnp.any(hits, axis=1)
  new = jnp.sum(jnp.where(hits, values[:, :, None], 0), axis=1).astype(ids.dtype)
  return jnp.where(written, new, ids)


def mask_inputs(
  rng: Array,
  input_ids: Array,
  input_mask: Array,
  *,
  mask_prob: float,
  max_predictions: int,
  mask_id: int,
  special_ids: tuple[int, ...],
  replace_with_mask_prob: float = 0.85,
  random_token_prob: float = 0.0,
  vocab_size: int | None = None,
) -> MaskedBatch:
  """Dynamic masking of a batch (jit-able; `max_predictions` is static).

  Args:
    rng: PRNG key.
    input_ids: (B, L) int token ids.
    input_mask: (B, L) 1 for real tokens, 0 for padding.
    mask_prob: fraction of real tokens to predict.
    max_predictions: `P`, prediction slots per sequence (<= L).
    mask_id: the `[MASK]` id (never chosen itself).
    special_ids: other ids never chosen (`[CLS]`, `[SEP]`, `[PAD]`).
    replace_with_mask_prob: chosen positions set to `[MASK]`.
    random_token_prob: chosen positions set to a uniformly random token id in
      `[0, vocab_size)`; the rest keep their token.
    vocab_size: needed when `random_token_prob > 0`.

  Returns:
    A `MaskedBatch`. Per sequence, `min(P, max(1, round(mask_prob × n_real)),
    n_candidates)` slots are used (round half to even, as `tf.round`).
  """
  b, length = input_ids.shape
  if max_predictions > length:
    raise ElectraError(f"max_predictions {max_predictions} exceeds the sequence length {length}")
  if random_token_prob > 0 and not vocab_size:
    raise ElectraError("random_token_prob > 0 needs vocab_size")
  select_rng, action_rng, token_rng = jax.random.split(rng, 3)
  input_mask = input_mask.astype(bool)
  candidates = input_mask
  for token in (mask_id, *special_ids):
    candidates &= input_ids != token

  num_tokens = jnp.sum(input_mask, axis=-1).astype(jnp.float32)
  num_to_predict = jnp.clip(jnp.round(num_tokens * mask_prob).astype(jnp.int32), 1, max_predictions)
  # Official code: the max(1, ...) above, then sampling with replacement (so
  # possibly repeated positions). Without replacement instead, and never more
  # slots than there are candidates.
  num_to_predict = jnp.minimum(num_to_predict, jnp.sum(candidates, axis=-1))

  # A uniformly random subset: the top-P of i.i.d. uniform scores among the
  # candidates (non-candidates score -1 and sort last).
  scores = jnp.where(candidates, jax.random.uniform(select_rng, (b, length)), -1.0)
  _, positions = jax.lax.top_k(scores, max_predictions)
  used = jnp.arange(max_predictions)[None, :] < num_to_predict[:, None]
  positions = jnp.where(used, positions, 0).astype(jnp.int32)
  masked_ids = jnp.where(used, jnp.take_along_axis(input_ids, positions, axis=1), 0)

  draw = jax.random.uniform(action_rng, (b, max_predictions))
  to_mask = draw < replace_with_mask_prob
  to_random = (draw >= replace_with_mask_prob) & (draw < replace_with_mask_prob + random_token_prob)
  values = jnp.full_like(masked_ids, mask_id)
  if random_token_prob > 0:
    random_ids = jax.random.randint(
      token_rng, masked_ids.shape, 0, vocab_size, dtype=masked_ids.dtype
    )
    values = jnp.where(to_random, random_ids, values)
  masked_input_ids = _replace_at(input_ids, positions, used & (to_mask | to_random), values)
  return MaskedBatch(
    masked_input_ids=jax.lax.stop_gradient(masked_input_ids),
    masked_positions=positions,
    masked_ids=masked_ids.astype(input_ids.dtype),
    masked_weights=used.astype(jnp.float32),
  )


def gumbel_sample(rng: Array, logits: Array, temperature: float = 1.0) -> Array:
  """Gumbel-max sample of token ids from `logits` (..., V); no gradient.

  The noise is the official `-log(-log(u + 1e-9) + 1e-9)`, u ~ U[0, 1).
  """
  u = jax.random.uniform(rng, logits.shape, jnp.float32)
  gumbel = -jnp.log(-jnp.log(u + 1e-9) + 1e-9)
  logits = jax.lax.stop_gradient(logits.astype(jnp.float32))
  return cpu_kernels.argmax(logits / temperature + gumbel).astype(jnp.int32)


class CopyMaskedLM(nn.Module):
  """Main model of `all_tokens_mlm`: vocab logits at every position + copy gate.

  HF-like names: `electra` (encoder), `generator_predictions` /
  `generator_lm_head` (tied MLM decoder), `discriminator_predictions` (the
  copy-probability head, one sigmoid logit per token).
  """

  config: ElectraConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  scan_layers: bool = False
  remat: bool = False
  shared_embeddings: model_lib.ElectraEmbeddings | None = None

  def setup(self):
    c = self.config
    self.electra = model_lib.ElectraModel(
      c, self.dtype, self.param_dtype, self.scan_layers, self.remat, self.shared_embeddings
    )
    self.generator_predictions = model_lib.GeneratorPredictions(c, self.dtype, self.param_dtype)
    self.generator_lm_head = model_lib.LMHeadBias(c.vocab_size, self.param_dtype)
    self.discriminator_predictions = model_lib.DiscriminatorPredictions(
      c, self.dtype, self.param_dtype
    )

  def __call__(
    self, input_ids, attention_mask, token_type_ids, position_ids=None, deterministic=True
  ):
    h = self.electra(input_ids, attention_mask, token_type_ids, position_ids, deterministic)
    logits = self.electra.attend(self.generator_predictions(h).astype(self.dtype))
    return self.generator_lm_head(logits.astype(jnp.float32)), self.discriminator_predictions(h)


class MainModel(NamedTuple):
  """A main model of `objectives.Objective.main_model`.

  Attributes:
    module: the Flax module class, built as `module(config, **kw,
      shared_embeddings=...)` and called as `(ids, mask, segments, None,
      deterministic)`.
    at_masked_positions: it also takes `masked_positions=` and answers only
      there (a masked LM's vocabulary projection is the expensive part).
  """

  module: type[nn.Module]
  at_masked_positions: bool = False


MAIN_MODELS = {
  "pretraining": MainModel(model_lib.ElectraForPreTraining),
  "masked_lm": MainModel(model_lib.ElectraForMaskedLM, at_masked_positions=True),
  "copy_masked_lm": MainModel(CopyMaskedLM),
}


class ElectraRTD(nn.Module):
  """Generator + discriminator with one shared embeddings module.

  Param tree: `{embeddings, generator, discriminator}` (`mlm`: no
  `discriminator`). `generator` is an HF `ElectraForMaskedLM` tree and
  `discriminator` an HF `ElectraForPreTraining` tree, both without
  `electra/embeddings` (see `discriminator_params` / `generator_params`).

  Attributes:
    disc_config: discriminator (main model) config; also the embeddings'.
    gen_config: generator config (`generator_config(disc_config, ...)`); its
      `embedding_size`, `vocab_size` and position/type sizes must match.
    objective: a key of `objectives.OBJECTIVES` (selects the main model).
  """

  disc_config: ElectraConfig
  gen_config: ElectraConfig
  objective: str = "electra"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  scan_layers: bool = False
  remat: bool = False

  def setup(self):
    d, g = self.disc_config, self.gen_config
    for field in ("vocab_size", "embedding_size", "max_position_embeddings", "type_vocab_size"):
      if getattr(d, field) != getattr(g, field):
        raise ElectraError(
          f"generator and discriminator share embeddings, so {field} must match "
          f"({getattr(g, field)} vs {getattr(d, field)})"
        )
    kw = dict(
      dtype=self.dtype, param_dtype=self.param_dtype, scan_layers=self.scan_layers, remat=self.remat
    )
    self.embeddings = model_lib.ElectraEmbeddings(d, self.dtype, self.param_dtype)
    self.generator = model_lib.ElectraForMaskedLM(g, **kw, shared_embeddings=self.embeddings)
    spec = objectives.get(self.objective)
    if spec.has_discriminator:
      main = MAIN_MODELS[spec.main_model].module
      self.discriminator = main(d, **kw, shared_embeddings=self.embeddings)

  def generate(self, input_ids, input_mask, segment_ids, masked_positions, deterministic=True):
    """Generator vocabulary logits at `masked_positions`: (B, P, V) float32."""
    return self.generator(
      input_ids, input_mask, segment_ids, None, deterministic, masked_positions=masked_positions
    )

  def discriminate(
    self, input_ids, input_mask, segment_ids, masked_positions=None, deterministic=True
  ):
    """Main-model outputs on (corrupted) input.

    Returns:
      `electra`/`electra_15`: (B, L) replaced logits; `replace_mlm`: (B, P, V)
      logits at `masked_positions`; `all_tokens_mlm`: ((B, L, V) logits,
      (B, L) copy logits).
    """
    spec = objectives.get(self.objective)
    if not spec.has_discriminator:
      raise ElectraError(f"objective {self.objective!r} has no discriminator")
    kw = {}
    if MAIN_MODELS[spec.main_model].at_masked_positions:
      kw["masked_positions"] = masked_positions
    return self.discriminator(input_ids, input_mask, segment_ids, None, deterministic, **kw)

  def __call__(self, input_ids, input_mask, segment_ids, masked_positions, deterministic=True):
    """Runs every submodule once (for `init`)."""
    out = {
      "generator": self.generate(
        input_ids, input_mask, segment_ids, masked_positions, deterministic
      )
    }
    if objectives.get(self.objective).has_discriminator:
      out["discriminator"] = self.discriminate(
        input_ids, input_mask, segment_ids, masked_positions, deterministic
      )
    return out


def build_rtd_model(
  disc_config: ElectraConfig,
  objective: str = "electra",
  generator_hidden_size: float = 0.25,
  generator_layers: float = 1.0,
  **module_kwargs,
) -> ElectraRTD:
  """`ElectraRTD` for `objective`; `mlm` uses the full-size model as generator.

  Args:
    disc_config: the discriminator (main model) config.
    objective: a key of `objectives.OBJECTIVES`.
    generator_hidden_size: generator width fraction (ignored without a main
      model, as for `mlm`: the generator *is* the model trained and so has the
      full config).
    generator_layers: generator depth fraction (ignored without a main model).
    **module_kwargs: `dtype`, `param_dtype`, `scan_layers`, `remat`.

  Returns:
    The (unbound) Flax module.
  """
  if not objectives.get(objective).has_discriminator:
    gen = disc_config
  else:
    gen = generator_config(disc_config, generator_hidden_size, generator_layers)
  return ElectraRTD(disc_config, gen, objective, **module_kwargs)


def init_inputs(batch_size: int, max_seq_length: int, max_predictions: int) -> tuple[Array, ...]:
  """Dummy `(input_ids, input_mask, segment_ids, masked_positions)` for `init`."""
  ids = jnp.zeros((batch_size, max_seq_length), jnp.int32)
  return (
    ids,
    jnp.ones_like(ids),
    jnp.zeros_like(ids),
    jnp.zeros((batch_size, max_predictions), jnp.int32),
  )


# -- losses ---------------------------------------------------------------------


def _weighted_mean(values: Array, weights: Array) -> Array:
  """`sum(w·v) / (sum(w) + 1e-6)`, the official normalisation."""
  weights = weights.astype(jnp.float32)
  return jnp.sum(values * weights) / (jnp.sum(weights) + 1e-6)


def _ratio(num: Array, den: Array) -> Array:
  """`num / den`, 0 where `den` is 0 (e.g. precision with no positive prediction)."""
  return jnp.where(den > 0, num / jnp.maximum(den, 1e-12), 0.0)


def _weighted_fraction(flags: Array, weights: Array) -> Array:
  """The weighted share of true `flags` (0 when the weights sum to 0)."""
  weights = weights.astype(jnp.float32)
  return _ratio(jnp.sum(flags * weights), jnp.sum(weights))


def _accuracy(preds: Array, labels: Array, weights: Array) -> Array:
  return _weighted_fraction(preds == labels, weights)


def masked_lm_loss(logits: Array, labels: Array, weights: Array) -> tuple[Array, Array]:
  """Weighted mean cross-entropy and accuracy of (..., V) logits.

  A prediction counts as right when the label's logit reaches the row's
  maximum: the accuracy of the argmax without an argmax over the vocabulary
  (its index search cost ~3 % of the ELECTRA-Small pretraining step on CPU;
  the maximum is the one the cross-entropy computes anyway, shared by XLA's
  CSE). The two differ only on a tie for the maximum, where the argmax takes
  the first index and this counts the label right wherever it is.
  """
  logits = logits.astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  label_logits = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  right = label_logits >= jnp.max(logits, axis=-1)
  return _weighted_mean(ce, weights), _weighted_fraction(right, weights)


def discriminator_loss(logits: Array, labels: Array, weights: Array) -> Array:
  """Sigmoid cross-entropy of (B, L) replaced logits, weighted mean over `weights`."""
  ce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels.astype(jnp.float32))
  return _weighted_mean(ce, weights)


def rtd_metrics(logits: Array, labels: Array, input_mask: Array) -> dict[str, Array]:
  """The official discriminator metrics, over every real token.

  Returns:
    `discriminator_accuracy`, `replaced_precision` (right among tokens
    predicted replaced; 0 if none is), `replaced_recall` (found among
    replaced tokens; 0 if none is) and `replaced_fraction` (replaced share of
    the real tokens; `1 - replaced_fraction` is the all-"original" baseline).
  """
  real = input_mask.astype(jnp.float32)
  # sign(logit) > 0, as the official `round((sign(logits) + 1) / 2)`.
  preds = (logits > 0).astype(jnp.float32)
  labels_f = labels.astype(jnp.float32)
  correct = (preds == labels_f).astype(jnp.float32)
  return {
    "discriminator_accuracy": _ratio(jnp.sum(correct * real), jnp.sum(real)),
    "replaced_precision": _ratio(jnp.sum(preds * labels_f * real), jnp.sum(preds * real)),
    "replaced_recall": _ratio(jnp.sum(preds * labels_f * real), jnp.sum(labels_f * real)),
    # 1 - this is the accuracy of always answering "original": the baseline
    # discriminator_accuracy has to beat.
    "replaced_fraction": _ratio(jnp.sum(labels_f * real), jnp.sum(real)),
  }


def copy_mlm_loss(
  logits: Array, copy_logits: Array, input_ids: Array, labels: Array, weights: Array
) -> tuple[Array, Array]:
  """All-Tokens MLM with the copy mechanism (paper Section 3.2).

  `p(label) = D·1[label = input] + (1 − D)·softmax(logits)[label]`,
  `D = sigmoid(copy_logits)`; returns the weighted mean of `−log p` and the
  accuracy of the argmax of that mixture.
  """
  log_softmax = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  label_logp = jnp.take_along_axis(log_softmax, labels[..., None], axis=-1)[..., 0]
  copy_logits = copy_logits.astype(jnp.float32)
  log_copy = jnp.where(labels == input_ids, jax.nn.log_sigmoid(copy_logits), -jnp.inf)
  log_p = jnp.logaddexp(log_copy, jax.nn.log_sigmoid(-copy_logits) + label_logp)
  # The mixture's mode: the input token if D + (1-D)·p(input) beats the best
  # other token's (1-D)·p.
  d = jax.nn.sigmoid(copy_logits)[..., None]
  probs = (1 - d) * jnp.exp(log_softmax)
  probs = probs + d * jax.nn.one_hot(input_ids, logits.shape[-1], dtype=probs.dtype)
  return _weighted_mean(-log_p, weights), _accuracy(jnp.argmax(probs, -1), labels, weights)


def replace_with_samples(
  input_ids: Array, masked_positions: Array, masked_weights: Array, sampled_ids: Array
) -> tuple[Array, Array]:
  """The discriminator's input and labels (official `_get_fake_data`).

  Every used slot of the *original* sequence gets its sampled token (the
  `[MASK]`s and the kept tokens alike); a position is labelled replaced (1)
  only if its token now differs from the original, so a sample equal to the
  original is labelled original (0).

  Args:
    input_ids: (B, L) original (unmasked) ids.
    masked_positions: (B, P) slots' positions.
    masked_weights: (B, P) 1 for used slots.
    sampled_ids: (B, P) generator samples.

  Returns:
    `(fake_ids, labels)`, both (B, L) int32.
  """
  used = masked_weights > 0
  fake_ids = _replace_at(input_ids, masked_positions, used, sampled_ids)
  at_masked = jnp.any(_slots_to_sequence(masked_positions, used, input_ids.shape[1]), axis=1)
  return fake_ids, (at_masked & (fake_ids != input_ids)).astype(jnp.int32)


def rtd_forward(
  params: PyTree,
  batch: dict[str, Array],
  rng: Array,
  deterministic: bool = False,
  *,
  model: ElectraRTD,
  objective: ObjectiveConfig,
) -> dict[str, Any]:
  """Masking, generator, sampling and main model of one batch, no losses.

  Returns:
    A dict with `masked` (`MaskedBatch`), `generator_logits` (B, P, V) and,
    with a main model (all but `mlm`), `sampled_ids` (B, P), `fake_ids` / `labels` (B, L),
    `masked_tokens` (B, L) bool (used slots as a sequence mask) and
    `main_outputs` (the `ElectraRTD.discriminate` output).
  """
  if model.objective != objective.name:
    raise ElectraError(
      f"model was built for objective {model.objective!r} but the loss is {objective.name!r}"
    )
  mask_rng, sample_rng, gen_dropout, disc_dropout = jax.random.split(rng, 4)
  input_ids = batch["input_ids"].astype(jnp.int32)
  input_mask = batch["input_mask"].astype(jnp.int32)
  segment_ids = batch["segment_ids"].astype(jnp.int32)
  masked = mask_inputs(
    mask_rng,
    input_ids,
    input_mask,
    mask_prob=objective.mask_prob,
    max_predictions=objective.max_predictions,
    mask_id=objective.mask_id,
    special_ids=objective.special_ids,
    replace_with_mask_prob=objective.replace_with_mask_prob,
    random_token_prob=objective.random_token_prob,
    vocab_size=objective.vocab_size,
  )
  variables = {"params": params}
  out: dict[str, Any] = {"masked": masked}
  out["generator_logits"] = model.apply(
    variables,
    masked.masked_input_ids,
    input_mask,
    segment_ids,
    masked.masked_positions,
    deterministic,
    method=ElectraRTD.generate,
    rngs={"dropout": gen_dropout},
  )
  if not objective.spec.has_discriminator:
    return out
  sampled = gumbel_sample(sample_rng, out["generator_logits"], objective.temperature)
  fake_ids, labels = replace_with_samples(
    input_ids, masked.masked_positions, masked.masked_weights, sampled
  )
  used = masked.masked_weights > 0
  out.update(
    sampled_ids=sampled,
    fake_ids=fake_ids,
    labels=labels,
    masked_tokens=jnp.any(_slots_to_sequence(masked.masked_positions, used, input_ids.shape[1]), 1),
  )
  out["main_outputs"] = model.apply(
    variables,
    fake_ids,
    input_mask,
    segment_ids,
    masked.masked_positions,
    deterministic,
    method=ElectraRTD.discriminate,
    rngs={"dropout": disc_dropout},
  )
  return out


def rtd_loss_fn(
  params: PyTree,
  batch: dict[str, Array],
  rng: Array,
  deterministic: bool = False,
  *,
  model: ElectraRTD,
  objective: ObjectiveConfig,
) -> tuple[Array, dict[str, Array]]:
  """The pretraining loss of one batch (pure; differentiate w.r.t. `params`).

  Args:
    params: `ElectraRTD` params (unboxed).
    batch: `input_ids`, `input_mask`, `segment_ids`, each (B, L) int32.
    rng: PRNG key for masking, sampling and dropout.
    deterministic: no dropout (evaluation).
    model: the `ElectraRTD` (its `objective` must equal `objective.name`).
    objective: an `ObjectiveConfig`.

  Returns:
    `(loss, metrics)`: the weighted total and a flat dict of scalars —
    `loss`, `generator_loss`, `generator_accuracy`, `num_masked`; for
    `electra`/`electra_15` also `discriminator_loss`,
    `discriminator_accuracy`, `replaced_precision`, `replaced_recall`,
    `sampled_replaced_fraction`; for `replace_mlm`/`all_tokens_mlm`
    `discriminator_loss`/`discriminator_accuracy` are the main model's MLM
    loss/accuracy, plus `sampled_replaced_fraction`.
  """
  fwd = rtd_forward(params, batch, rng, deterministic, model=model, objective=objective)
  masked = fwd["masked"]
  gen_loss, gen_acc = masked_lm_loss(
    fwd["generator_logits"], masked.masked_ids, masked.masked_weights
  )
  num_masked = jnp.sum(masked.masked_weights)
  metrics = {"generator_loss": gen_loss, "generator_accuracy": gen_acc, "num_masked": num_masked}
  loss = objective.gen_weight * gen_loss
  if objective.spec.has_discriminator:
    differs = (fwd["sampled_ids"] != masked.masked_ids) & (masked.masked_weights > 0)
    metrics["sampled_replaced_fraction"] = _ratio(jnp.sum(differs.astype(jnp.float32)), num_masked)
    main_loss, main_metrics = MAIN_LOSSES[objective.spec.main_loss](fwd, batch, objective)
    metrics.update(main_metrics)
    loss = loss + main_loss
  metrics["loss"] = loss
  return loss, metrics


# The main model's losses, by `objectives.Objective.main_loss`. Each maps
# `(rtd_forward output, batch, ObjectiveConfig)` to `(weighted loss, metrics)`;
# the metrics include `discriminator_loss` (unweighted) and
# `discriminator_accuracy`, whatever the main model is, so that runs of
# different objectives read alike.


def _replaced_token_detection(fwd, batch, objective, weights) -> tuple[Array, dict[str, Array]]:
  input_mask = batch["input_mask"].astype(jnp.int32)
  disc_loss = discriminator_loss(fwd["main_outputs"], fwd["labels"], weights)
  metrics = rtd_metrics(fwd["main_outputs"], fwd["labels"], input_mask)
  metrics["discriminator_loss"] = disc_loss
  return objective.disc_weight * disc_loss, metrics


def rtd_all_tokens_loss(fwd, batch, objective) -> tuple[Array, dict[str, Array]]:
  """`electra`: is each real token replaced? Weighted by `disc_weight`."""
  weights = batch["input_mask"].astype(jnp.int32)
  return _replaced_token_detection(fwd, batch, objective, weights)


def rtd_masked_loss(fwd, batch, objective) -> tuple[Array, dict[str, Array]]:
  """`electra_15`: as `rtd_all_tokens_loss`, over the masked positions only."""
  return _replaced_token_detection(fwd, batch, objective, fwd["masked_tokens"])


def main_masked_lm_loss(fwd, batch, objective) -> tuple[Array, dict[str, Array]]:
  """`replace_mlm`: the original tokens at the masked positions (weight 1)."""
  masked = fwd["masked"]
  loss, accuracy = masked_lm_loss(fwd["main_outputs"], masked.masked_ids, masked.masked_weights)
  return loss, {"discriminator_accuracy": accuracy, "discriminator_loss": loss}


def main_copy_mlm_loss(fwd, batch, objective) -> tuple[Array, dict[str, Array]]:
  """`all_tokens_mlm`: every real token, with the copy mechanism (weight 1)."""
  token_logits, copy_logits = fwd["main_outputs"]
  input_ids = batch["input_ids"].astype(jnp.int32)
  input_mask = batch["input_mask"].astype(jnp.int32)
  loss, accuracy = copy_mlm_loss(token_logits, copy_logits, fwd["fake_ids"], input_ids, input_mask)
  return loss, {"discriminator_accuracy": accuracy, "discriminator_loss": loss}


MAIN_LOSSES = {
  "rtd_all_tokens": rtd_all_tokens_loss,
  "rtd_masked": rtd_masked_loss,
  "masked_lm": main_masked_lm_loss,
  "copy_mlm": main_copy_mlm_loss,
}


def make_loss_fn(model: ElectraRTD, objective: ObjectiveConfig):
  """`rtd_loss_fn` bound to a model: `(params, batch, rng, deterministic)`."""
  return functools.partial(rtd_loss_fn, model=model, objective=objective)


# -- param trees ----------------------------------------------------------------


def _with_embeddings(sub: dict, embeddings: dict) -> dict:
  out = dict(sub)
  out["electra"] = {"embeddings": embeddings, **sub["electra"]}
  return out


def discriminator_params(params: PyTree) -> dict:
  """The main model as a standalone HF-layout tree (`electra/embeddings` added).

  For `electra`/`electra_15` this is an `ElectraForPreTraining` tree, for
  `replace_mlm` an `ElectraForMaskedLM` tree; ready for
  `convert.params_to_hf(..., "pretraining")` / `from_pretrained`.
  """
  if "discriminator" not in params:
    raise ElectraError("these params have no discriminator (objective 'mlm'): use generator_params")
  return _with_embeddings(params["discriminator"], params["embeddings"])


def generator_params(params: PyTree) -> dict:
  """The generator as a standalone HF `ElectraForMaskedLM` tree."""
  return _with_embeddings(params["generator"], params["embeddings"])


def combine_params(discriminator: dict | None, generator: dict | None) -> dict:
  """Inverse of `discriminator_params` / `generator_params` (e.g. `init_from`).

  The shared embeddings are taken from the discriminator when given (the
  released checkpoints hold the same tables in both), else from the generator.

  Args:
    discriminator: standalone main-model params (`electra/embeddings` inside),
      or None for `mlm`.
    generator: standalone generator params.

  Returns:
    `{embeddings, generator[, discriminator]}` for `ElectraRTD`.

  Raises:
    ElectraError: missing parts, or embedding tables of different shapes.
  """
  if generator is None:
    raise ElectraError("combine_params needs the generator params")
  parts = {"generator": generator}
  if discriminator is not None:
    parts["discriminator"] = discriminator
  for name, tree in parts.items():
    if "electra" not in tree or "embeddings" not in tree["electra"]:
      raise ElectraError(
        f"{name} params have no electra/embeddings: pass standalone (HF-layout) params"
      )
  source = discriminator if discriminator is not None else generator
  embeddings = source["electra"]["embeddings"]
  if discriminator is not None:
    a = jax.tree.map(jnp.shape, discriminator["electra"]["embeddings"])
    b = jax.tree.map(jnp.shape, generator["electra"]["embeddings"])
    if a != b:
      raise ElectraError(
        "generator and discriminator embeddings differ in shape; they must share one embedding table"
      )
  out = {"embeddings": embeddings}
  for name, tree in parts.items():
    rest = dict(tree)
    rest["electra"] = {k: v for k, v in tree["electra"].items() if k != "embeddings"}
    out[name] = rest
  return out
