"""The official ELECTRA question-answering head, its loss and its post-processing.

A port of google-research/electra `finetune/qa/qa_tasks.py`
(`QATask.get_prediction_module`) and `finetune/qa/qa_metrics.py`
(`SpanBasedQAScorer.write_predictions`) with the official defaults
(`configure_finetuning.py`): `joint_prediction`, `answerable_classifier` and
`answerable_uses_start_logits` on, `beam_size` 20, `answerable_weight` 0.5,
`n_best_size` 20, `max_answer_length` 30, `qa_na_threshold` -2.75.

The model (`ElectraForQuestionAnsweringOfficial`, head
`question_answering_official` in `heads.py`; HF has no such class, so it does
not export to HF):

  answer_mask    input_mask * segment_ids + one_hot(0): [CLS] and the real
                 second-segment tokens (the context window and its closing
                 [SEP]) may start or end an answer; other logits get -1000
  start logits   dense(hidden, 1)                          `task_specific/dense`
  end logits     dense(gelu(dense([h_start; h_end], 512)), 1)
                                     `task_specific/qa_hidden`, `task_specific/dense_1`
                 h_start is the hidden state at the gold start when training,
                 at each of the top `beam_size` starts when predicting
  answerable     dense(gelu(dense([h_[CLS]; sum_t softmax(start)_t h_t], 512)), 1)
                                     `task_specific/dense_2`, `task_specific/dense_3`
                 (without `answerable_uses_start_logits`: dense(h_[CLS], 1),
                 `task_specific/dense_2`). Trained towards `is_impossible`,
                 so it is a logit of "no answer".

Param names are the TF variable names under the official
`task_specific/<task>/` scope (less the task name, as the official
classification head's are), every dense layer with TF's defaults
(Glorot-uniform kernel, zero bias); the encoder is `electra`, as in every
other head, so HF encoders load into it. The head has no dropout (the
official code has none outside the encoder).

Prediction runs the beam search in the model (as the official TF graph does):
the top `beam_size` starts by log-probability, and for each of them the top
`beam_size` ends. `postprocess_official` turns those beams into answer text
and no-answer scores as `write_predictions` does; the answer text is the
context between the span's character offsets, as `squad.postprocess` (the HF
head's post-processing) makes it (`squad.span_text`), instead of the
official whitespace-token alignment (`get_final_text`).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from electra_jax import cpu_kernels
from electra_jax.errors import ElectraError
from electra_jax.model import Dtype, _Base, gelu_erf
from electra_jax.tasks import squad

Array = jax.Array

# configure_finetuning.py defaults.
BEAM_SIZE = 20
ANSWERABLE_WEIGHT = 0.5
N_BEST_SIZE = 20
MAX_ANSWER_LENGTH = 30
# `qa_na_threshold`: a question is answered "" when its null odds exceed this
# (the official dev scoring and test predictions).
QA_NA_THRESHOLD = -2.75
# The width of the official `qa_hidden` and answerable hidden layers.
QA_HIDDEN_SIZE = 512
# The official masking constant: `logits += 1000.0 * (answer_mask - 1)`.
MASK_PENALTY = 1000.0

# What the model returns when training (with `start_positions`) and when predicting.
TRAIN_OUTPUTS = ("start_logits", "end_logits", "answerable_logit")
PREDICT_OUTPUTS = (
  "start_top_log_probs",
  "start_top_index",
  "end_top_log_probs",
  "end_top_index",
  "answerable_logit",
)


def answer_mask(attention_mask: Array, token_type_ids: Array) -> Array:
  """1.0 where an answer may start or end: [CLS] and the real second-segment tokens.

  `input_mask * segment_ids + one_hot(0, seq_length)`, as `get_prediction_module`.
  """
  mask = attention_mask.astype(jnp.float32) * token_type_ids.astype(jnp.float32)
  return mask + jax.nn.one_hot(0, mask.shape[-1], dtype=jnp.float32)


def _tf_dense(features: int, axes, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.Dense:
  # `tf.layers.dense` defaults: Glorot-uniform kernel, zero bias.
  return nn.Dense(
    features,
    dtype=dtype,
    param_dtype=param_dtype,
    kernel_init=nn.with_logical_partitioning(nn.initializers.glorot_uniform(), axes),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)),
    dot_general=cpu_kernels.dot_general_for_dense(),
    name=name,
  )


class PairDense(nn.Module):
  """`dense(concat([a, b], -1))` computed as `a @ K[:H] + b @ K[H:] + bias`.

  The kernel is the official (2H, features) `qa_hidden` kernel; splitting it
  lets the start half be applied once per beam and the end half once per
  token, instead of on a (B, beam, L, 2H) concatenation. `a` and `b` only
  need to broadcast against each other after projection.
  """

  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, a: Array, b: Array) -> Array:
    h = a.shape[-1]
    if b.shape[-1] != h:
      raise ValueError(f"PairDense halves differ: {a.shape} vs {b.shape}")
    kernel = self.param(
      "kernel",
      nn.with_logical_partitioning(nn.initializers.glorot_uniform(), (None, "mlp")),
      (2 * h, self.features),
      self.param_dtype,
    )
    bias = self.param(
      "bias",
      nn.with_logical_partitioning(nn.initializers.zeros_init(), ("mlp",)),
      (self.features,),
      self.param_dtype,
    )
    kernel = kernel.astype(self.dtype)
    a_part = jnp.dot(a.astype(self.dtype), kernel[:h])
    b_part = jnp.dot(b.astype(self.dtype), kernel[h:])
    return a_part + b_part + bias.astype(self.dtype)


class OfficialQAHead(nn.Module):
  """The official QA layers on the encoder's last hidden states (see the module docstring).

  Attributes:
    beam_size: starts kept, and ends kept per start, when predicting
      (clipped to the sequence length).
    answerable_classifier: have the answerability classifier (else its logit
      is zeros, as the official code returns).
    answerable_uses_start_logits: the classifier also reads the
      start-probability-weighted hidden state, through a 512-wide layer.
    hidden_size: width of `qa_hidden` and of the answerable hidden layer.
  """

  beam_size: int = BEAM_SIZE
  answerable_classifier: bool = True
  answerable_uses_start_logits: bool = True
  hidden_size: int = QA_HIDDEN_SIZE
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _dense(self, features, axes, name):
    return _tf_dense(features, axes, self.dtype, self.param_dtype, name)

  @nn.compact
  def __call__(
    self, hidden: Array, mask: Array, start_positions: Array | None = None
  ) -> dict[str, Array]:
    """Args: hidden (B, L, H); mask (B, L) from `answer_mask`; start_positions (B,) or None."""
    length = hidden.shape[1]
    penalty = MASK_PENALTY * (mask - 1.0)  # 0 where allowed, -1000 elsewhere
    start_logits = self._dense(1, ("embed", None), "dense")(hidden)[..., 0].astype(jnp.float32)
    start_logits = start_logits + penalty
    qa_hidden = PairDense(self.hidden_size, self.dtype, self.param_dtype, name="qa_hidden")
    qa_logits = self._dense(1, ("mlp", None), "dense_1")
    answerable_logit = self._answerable_logit(hidden, start_logits)
    if start_positions is not None:
      # Teacher forcing: the end is conditioned on the gold start.
      start_index = start_positions.astype(jnp.int32)
      start_features = jnp.take_along_axis(hidden, start_index[:, None, None], axis=1)  # (B, 1, H)
      end_logits = qa_logits(gelu_erf(qa_hidden(start_features, hidden)))[..., 0]
      end_logits = end_logits.astype(jnp.float32) + penalty
      return {
        "start_logits": start_logits,
        "end_logits": end_logits,
        "answerable_logit": answerable_logit,
      }
    k = min(self.beam_size, length)
    start_log_probs = jax.nn.log_softmax(start_logits, axis=-1)
    start_top_log_probs, start_top_index = jax.lax.top_k(start_log_probs, k)  # (B, k)
    start_features = jnp.take_along_axis(hidden, start_top_index[..., None], axis=1)  # (B, k, H)
    # (B, k, 1, H') + (B, 1, L, H') -> (B, k, L, 512) -> (B, k, L)
    pair = qa_hidden(start_features[:, :, None, :], hidden[:, None, :, :])
    end_logits = qa_logits(gelu_erf(pair))[..., 0].astype(jnp.float32) + penalty[:, None, :]
    end_log_probs = jax.nn.log_softmax(end_logits, axis=-1)
    end_top_log_probs, end_top_index = jax.lax.top_k(end_log_probs, k)  # (B, k, k)
    return {
      "start_top_log_probs": start_top_log_probs,
      "start_top_index": start_top_index,
      "end_top_log_probs": end_top_log_probs,
      "end_top_index": end_top_index,
      "answerable_logit": answerable_logit,
    }

  def _answerable_logit(self, hidden: Array, start_logits: Array) -> Array:
    if not self.answerable_classifier:
      return jnp.zeros(hidden.shape[:1], jnp.float32)
    cls = hidden[:, 0]
    if self.answerable_uses_start_logits:
      start_p = jax.nn.softmax(start_logits, axis=-1).astype(hidden.dtype)
      start_feature = jnp.einsum("bl,blh->bh", start_p, hidden)
      x = PairDense(self.hidden_size, self.dtype, self.param_dtype, name="dense_2")(
        cls, start_feature
      )
      x = gelu_erf(x)
      name, axes = "dense_3", ("mlp", None)
    else:
      x, name, axes = cls, "dense_2", ("embed", None)
    return self._dense(1, axes, name)(x)[..., 0].astype(jnp.float32)


class ElectraForQuestionAnsweringOfficial(_Base):
  """The ELECTRA encoder (`electra`) and the official QA head (`task_specific`).

  Called as `(input_ids, attention_mask, token_type_ids, start_positions=None,
  deterministic=True)`, all (B, L) int arrays but `start_positions` (B,).

  Returns a dict of float32 / int32 arrays:
    with `start_positions` (training; the end is conditioned on the gold start):
      `start_logits` (B, L), `end_logits` (B, L), both with -1000 added where
      no answer may start/end, and `answerable_logit` (B,);
    without (prediction, k = min(beam_size, L)):
      `start_top_log_probs` (B, k), `start_top_index` (B, k),
      `end_top_log_probs` (B, k, k), `end_top_index` (B, k, k) (row i: the
      ends for start i), `answerable_logit` (B,).
  A missing `attention_mask` means all ones and a missing `token_type_ids`
  all zeros, so then only [CLS] may hold an answer.

  Attributes: see `OfficialQAHead` (`beam_size`, `answerable_classifier`,
  `answerable_uses_start_logits`).
  """

  beam_size: int = BEAM_SIZE
  answerable_classifier: bool = True
  answerable_uses_start_logits: bool = True

  @nn.compact
  def __call__(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    start_positions=None,
    deterministic=True,
  ) -> dict[str, Array]:
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    h = self._encoder()(input_ids, attention_mask, token_type_ids, None, deterministic)
    head = OfficialQAHead(
      self.beam_size,
      self.answerable_classifier,
      self.answerable_uses_start_logits,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="task_specific",
    )
    return head(h, answer_mask(attention_mask, token_type_ids), start_positions)


def official_qa_loss(
  outputs: Mapping[str, Array],
  start_positions: Array,
  end_positions: Array,
  is_impossible: Array,
  *,
  answerable_weight: float = ANSWERABLE_WEIGHT,
  reduction: str = "sum",
) -> tuple[Array, dict[str, Array]]:
  """The official QA loss of a training forward pass (`outputs` with `start_logits`).

  Per example, as `get_prediction_module`: the mean of the start and end
  cross-entropies (over the masked logits) plus `answerable_weight` times the
  sigmoid cross-entropy of `answerable_logit` against `is_impossible`. The
  official job then sums the batch's losses (`run_finetuning.py`:
  `tf.reduce_sum`), which `reduction="sum"` does; `"mean"` averages them.
  Pass `answerable_weight=0` for a head built without the classifier.

  Args:
    outputs: the model's training outputs.
    start_positions, end_positions: (B,) gold token indices (0 = [CLS] when
      the window holds no answer).
    is_impossible: (B,) 1 for a question without an answer.

  Returns:
    (loss, metrics): the scalar loss, and the batch means of the `span_loss`
    and `answerable_loss` parts.
  """
  if reduction not in ("sum", "mean"):
    raise ElectraError(f"loss reduction {reduction!r}: choose 'sum' or 'mean'")
  start_loss = optax.softmax_cross_entropy_with_integer_labels(
    outputs["start_logits"], start_positions.astype(jnp.int32)
  )
  end_loss = optax.softmax_cross_entropy_with_integer_labels(
    outputs["end_logits"], end_positions.astype(jnp.int32)
  )
  span_loss = (start_loss + end_loss) / 2.0
  answerable_loss = optax.sigmoid_binary_cross_entropy(
    outputs["answerable_logit"], is_impossible.astype(jnp.float32)
  )
  losses = span_loss + answerable_weight * answerable_loss
  reduce = jnp.sum if reduction == "sum" else jnp.mean
  metrics = {"span_loss": jnp.mean(span_loss), "answerable_loss": jnp.mean(answerable_loss)}
  return reduce(losses), metrics


def _features_by_example(features: squad.SquadFeatures) -> dict[int, list[int]]:
  by_example = collections.defaultdict(list)
  for f, index in enumerate(features.example_index):
    by_example[int(index)].append(f)
  return by_example


def _check_outputs(outputs: Mapping[str, Any], num_features: int) -> dict[str, np.ndarray]:
  missing = [k for k in PREDICT_OUTPUTS if k not in outputs]
  if missing:
    raise ElectraError(
      f"official QA outputs lack {', '.join(missing)}: run the model without start_positions"
    )
  arrays = {k: np.asarray(outputs[k]) for k in PREDICT_OUTPUTS}
  k = arrays["start_top_index"].shape[-1]
  want = {
    "start_top_log_probs": (num_features, k),
    "start_top_index": (num_features, k),
    "end_top_log_probs": (num_features, k, k),
    "end_top_index": (num_features, k, k),
    "answerable_logit": (num_features,),
  }
  for key, shape in want.items():
    if arrays[key].shape != shape:
      raise ElectraError(
        f"official QA output {key} has shape {arrays[key].shape}, expected {shape} "
        f"for {num_features} features"
      )
  return arrays


def _prelim_predictions(features, arrays, feature_ids, max_answer_length):
  """Every valid (score, feature, start, end) among the beams of one example's features."""
  prelim = []
  for f in feature_ids:
    starts, ends = arrays["start_top_index"][f], arrays["end_top_index"][f]
    start_lp, end_lp = arrays["start_top_log_probs"][f], arrays["end_top_log_probs"][f]
    for i, s in enumerate(starts):
      for j, e in enumerate(ends[i]):
        if squad.is_valid_span(features, f, int(s), int(e), max_answer_length):
          prelim.append((float(start_lp[i]) + float(end_lp[i, j]), f, int(s), int(e)))
  # Python's sort is stable: ties keep feature, start-beam, end-beam order, as the official.
  prelim.sort(key=lambda p: p[0], reverse=True)
  return prelim


def postprocess_official(
  examples: Sequence[squad.SquadExample],
  features: squad.SquadFeatures,
  outputs: Mapping[str, Any],
  n_best_size: int = N_BEST_SIZE,
  max_answer_length: int = MAX_ANSWER_LENGTH,
) -> tuple[dict[str, str], dict[str, float]]:
  """Answer text and null odds per question from the official head's beams.

  As `SpanBasedQAScorer.write_predictions` with joint prediction and the
  answerability classifier: over every feature of an example, each (start
  beam i, end beam j) pair is a candidate scored
  `start_top_log_probs[i] + end_top_log_probs[i, j]` if both ends are context
  tokens, the start is in its max-context window, start <= end and the span
  has at most `max_answer_length` tokens. Candidates are sorted by score, the
  first `n_best_size` distinct texts are the n-best, and the prediction is
  the best non-empty one ("empty" when there is no candidate, as the official
  nonce). The null odds are the lowest `answerable_logit` over the example's
  features. The official scorer answers "" when the null odds exceed a
  threshold (`apply_null_threshold`); predictions here are always the best span.

  Args:
    examples: the examples `features` were made from.
    features: `squad.featurize` output (offsets and max-context flags).
    outputs: the model's prediction outputs (`PREDICT_OUTPUTS`), stacked
      over the features (row f is feature f).
    n_best_size: candidates kept per question.
    max_answer_length: longest answer, in tokens.

  Returns:
    (predictions, null_odds): question id -> answer text, question id ->
    float (higher: more likely unanswerable).

  Raises:
    ElectraError: outputs missing or not shaped like the features.
  """
  arrays = _check_outputs(outputs, len(features.example_index))
  by_example = _features_by_example(features)
  predictions, null_odds = {}, {}
  for index, ex in enumerate(examples):
    feature_ids = by_example.get(index, [])
    null_odds[ex.qas_id] = min(
      (float(arrays["answerable_logit"][f]) for f in feature_ids), default=1000000.0
    )
    nbest: list[str] = []
    for _, f, s, e in _prelim_predictions(features, arrays, feature_ids, max_answer_length):
      if len(nbest) >= n_best_size:
        break
      text = squad.span_text(ex, features, f, s, e)
      if text not in nbest:
        nbest.append(text)
    # The official v2 branch takes the best non-empty text; v1 the best. Spans cut
    # from the context are never empty, so both are the first entry.
    predictions[ex.qas_id] = next((t for t in nbest if t), "empty")
  return predictions, null_odds


def apply_null_threshold(
  predictions: Mapping[str, str],
  null_odds: Mapping[str, float],
  threshold: float = QA_NA_THRESHOLD,
) -> dict[str, str]:
  """Predictions with "" where the null odds exceed `threshold` (official `qa_na_threshold`)."""
  return {q: "" if null_odds[q] > threshold else text for q, text in predictions.items()}
