"""The official ELECTRA QA head against NumPy ports of google-research/electra.

TF is not installed, so `get_prediction_module` (finetune/qa/qa_tasks.py) and
`write_predictions` (finetune/qa/qa_metrics.py) are ported here line by line
into NumPy (float64), with the official line quoted in comments, and our JAX
head / post-processing are held against them on random hidden states and
beams, masked positions included.
"""

import collections

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from electra_jax import heads, qa_official
from electra_jax import model as model_lib
from electra_jax.errors import ElectraError
from electra_jax.tasks import squad

# --- NumPy port of QATask.get_prediction_module (joint_prediction=True) ------------


def _gelu(x):  # modeling.gelu: x * 0.5 * (1 + erf(x / sqrt(2)))
  return x * 0.5 * (1.0 + erf(x / np.sqrt(2.0)))


def _dense(x, p):  # tf.layers.dense
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _top_k(x, k):  # tf.nn.top_k: ties keep the lower index first
  index = np.argsort(-x, axis=-1, kind="stable")[..., :k]
  return np.take_along_axis(x, index, -1), index


def _one_hot(index, depth):
  return (np.asarray(index)[..., None] == np.arange(depth)).astype(np.float64)


def official_head(final_hidden, input_mask, segment_ids, p, beam_size, start_positions=None,
                  uses_start_logits=True):  # fmt: skip
  """`get_prediction_module`; `start_positions` given = is_training."""
  is_training = start_positions is not None
  final_hidden = np.asarray(final_hidden, np.float64)
  batch_size, seq_length, _ = final_hidden.shape
  # answer_mask = input_mask * segment_ids; answer_mask += tf.one_hot(0, seq_length)
  answer_mask = input_mask.astype(np.float64) * segment_ids.astype(np.float64)
  answer_mask = answer_mask + _one_hot(0, seq_length)
  # start_logits = tf.squeeze(tf.layers.dense(final_hidden, 1), -1)
  start_logits = _dense(final_hidden, p["dense"])[..., 0]
  # start_logits += 1000.0 * (answer_mask - 1)
  start_logits = start_logits + 1000.0 * (answer_mask - 1)
  start_log_probs = _log_softmax(start_logits)
  start_top_log_probs, start_top_index = _top_k(start_log_probs, beam_size)
  if not is_training:
    # end_features = tf.tile(tf.expand_dims(final_hidden, 1), [1, beam_size, 1, 1])
    end_features = np.tile(final_hidden[:, None], [1, beam_size, 1, 1])
    # start_index = tf.one_hot(start_top_index, depth=seq_length, axis=-1)
    start_index = _one_hot(start_top_index, seq_length)
    # start_features = reduce_sum(expand_dims(final_hidden, 1) * expand_dims(start_index, -1), -2)
    start_features = (final_hidden[:, None] * start_index[..., None]).sum(-2)
    # start_features = tf.tile(tf.expand_dims(start_features, 2), [1, 1, seq_length, 1])
    start_features = np.tile(start_features[:, :, None], [1, 1, seq_length, 1])
  else:
    start_index = _one_hot(start_positions, seq_length)
    # start_features = reduce_sum(expand_dims(start_index, -1) * final_hidden, axis=1)
    start_features = (start_index[..., None] * final_hidden).sum(1)
    start_features = np.tile(start_features[:, None], [1, seq_length, 1])
    end_features = final_hidden
  # final_repr = tf.concat([start_features, end_features], -1)
  final_repr = np.concatenate([start_features, end_features], -1)
  # tf.layers.dense(final_repr, 512, activation=modeling.gelu, name="qa_hidden")
  final_repr = _gelu(_dense(final_repr, p["qa_hidden"]))
  # end_logits = tf.squeeze(tf.layers.dense(final_repr, 1), -1, name="qa_logits")
  end_logits = _dense(final_repr, p["dense_1"])[..., 0]
  if is_training:
    end_logits = end_logits + 1000.0 * (answer_mask - 1)
  else:
    end_logits = end_logits + (1000.0 * (answer_mask - 1))[:, None]
  out = {}
  if not is_training:
    end_top_log_probs, end_top_index = _top_k(_log_softmax(end_logits), beam_size)
    out.update(
      start_top_log_probs=start_top_log_probs,
      start_top_index=start_top_index,
      end_top_log_probs=end_top_log_probs,
      end_top_index=end_top_index,
    )
  else:
    out.update(start_logits=start_logits, end_logits=end_logits)
  # answerable_classifier: final_repr = final_hidden[:, 0]
  final_repr = final_hidden[:, 0]
  if uses_start_logits:
    start_p = np.exp(_log_softmax(start_logits))  # tf.nn.softmax(start_logits)
    start_feature = (start_p[..., None] * final_hidden).sum(1)
    final_repr = np.concatenate([final_repr, start_feature], -1)
    final_repr = _gelu(_dense(final_repr, p["dense_2"]))
    out["answerable_logit"] = _dense(final_repr, p["dense_3"])[..., 0]
  else:
    out["answerable_logit"] = _dense(final_repr, p["dense_2"])[..., 0]
  del batch_size
  return out


def official_losses(start_logits, end_logits, answerable_logit, start_positions, end_positions,
                    is_impossible, answerable_weight):  # fmt: skip
  """Per-example `losses` of `get_prediction_module`."""
  seq_length = start_logits.shape[-1]

  def compute_loss(logits, positions):
    one_hot_positions = _one_hot(positions, seq_length)
    log_probs = _log_softmax(np.asarray(logits, np.float64))
    return -(one_hot_positions * log_probs).sum(-1)

  losses = (
    compute_loss(start_logits, start_positions) + compute_loss(end_logits, end_positions)
  ) / 2.0
  # tf.nn.sigmoid_cross_entropy_with_logits: max(x, 0) - x * z + log(1 + exp(-|x|))
  x = np.asarray(answerable_logit, np.float64)
  z = np.asarray(is_impossible, np.float64)
  answerable_loss = np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))
  return losses + answerable_loss * answerable_weight


# --- Inputs ------------------------------------------------------------------------


def _random_params(params, seed):
  """Init params moved off their init (biases non-zero) so no term hides behind zeros."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(
    tree, [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
  )


def _masks(batch, length):
  """Rows: no padding; padded after 9; padded after 6 with a one-token context; all question."""
  input_mask = np.ones((batch, length), np.int32)
  segment_ids = np.zeros((batch, length), np.int32)
  segment_ids[0, 5:] = 1
  input_mask[1, 9:] = 0
  segment_ids[1, 4:] = 1  # second segment runs into the padding: masked by input_mask
  input_mask[2, 6:] = 0
  segment_ids[2, 5:6] = 1
  return input_mask, segment_ids  # row 3 (if any): only [CLS] may answer


def _head_and_params(beam_size, seed=0, hidden=8, uses_start_logits=True):
  head = qa_official.OfficialQAHead(
    beam_size, answerable_uses_start_logits=uses_start_logits, hidden_size=12
  )
  h = jnp.zeros((1, 4, hidden))
  params = nn.meta.unbox(head.init(jax.random.key(seed), h, jnp.ones((1, 4)))["params"])
  return head, _random_params(params, seed + 1)


BATCH, LENGTH, HIDDEN = 4, 16, 8


@pytest.fixture(scope="module")
def hidden():
  return np.random.RandomState(0).normal(size=(BATCH, LENGTH, HIDDEN)).astype(np.float32)


def _apply(head, params, hidden, input_mask, segment_ids, start_positions=None):
  mask = qa_official.answer_mask(jnp.asarray(input_mask), jnp.asarray(segment_ids))
  fn = jax.jit(lambda p, h, m, s: head.apply({"params": p}, h, m, s))
  sp = None if start_positions is None else jnp.asarray(start_positions)
  return jax.tree.map(np.asarray, fn(params, jnp.asarray(hidden), mask, sp))


# --- The head ----------------------------------------------------------------------


@pytest.mark.parametrize("beam_size", [3, LENGTH])  # inside the allowed tokens / all of them
@pytest.mark.parametrize("uses_start_logits", [True, False])
def test_beam_search_matches_the_official_graph(hidden, beam_size, uses_start_logits):
  head, params = _head_and_params(beam_size, uses_start_logits=uses_start_logits)
  input_mask, segment_ids = _masks(BATCH, LENGTH)
  ours = _apply(head, params, hidden, input_mask, segment_ids)
  want = official_head(
    hidden, input_mask, segment_ids, params, beam_size, uses_start_logits=uses_start_logits
  )
  assert set(ours) == set(qa_official.PREDICT_OUTPUTS)
  for key in ("start_top_index", "end_top_index"):
    np.testing.assert_array_equal(ours[key], want[key], err_msg=key)
  for key in ("start_top_log_probs", "end_top_log_probs", "answerable_logit"):
    np.testing.assert_allclose(ours[key], want[key], rtol=1e-5, atol=2e-4, err_msg=key)
  allowed = np.asarray(qa_official.answer_mask(jnp.asarray(input_mask), jnp.asarray(segment_ids)))
  n_allowed = allowed.sum(-1).astype(int)
  for b in range(BATCH):
    # The allowed positions come first in every beam; masked ones only after them.
    first = min(beam_size, n_allowed[b])
    assert allowed[b, ours["start_top_index"][b, :first]].all()
    assert not allowed[b, ours["start_top_index"][b, first:]].any()
    assert allowed[b, ours["end_top_index"][b, :, :first]].all()
  assert n_allowed[3] == 1 and ours["start_top_index"][3, 0] == 0  # only [CLS]


@pytest.mark.parametrize("uses_start_logits", [True, False])
def test_training_outputs_match_the_official_graph(hidden, uses_start_logits):
  head, params = _head_and_params(4, uses_start_logits=uses_start_logits)
  input_mask, segment_ids = _masks(BATCH, LENGTH)
  start_positions = np.array([7, 5, 0, 0])
  ours = _apply(head, params, hidden, input_mask, segment_ids, start_positions)
  want = official_head(
    hidden, input_mask, segment_ids, params, 4, start_positions, uses_start_logits
  )
  assert set(ours) == set(qa_official.TRAIN_OUTPUTS)
  for key in qa_official.TRAIN_OUTPUTS:
    np.testing.assert_allclose(ours[key], want[key], rtol=1e-5, atol=2e-4, err_msg=key)


def test_end_logits_depend_on_the_start(hidden):
  head, params = _head_and_params(4)
  input_mask, segment_ids = _masks(BATCH, LENGTH)
  a = _apply(head, params, hidden, input_mask, segment_ids, np.array([6, 5, 5, 0]))
  b = _apply(head, params, hidden, input_mask, segment_ids, np.array([9, 5, 5, 0]))
  np.testing.assert_array_equal(a["start_logits"], b["start_logits"])
  assert not np.allclose(a["end_logits"][0], b["end_logits"][0])
  np.testing.assert_array_equal(a["end_logits"][1:], b["end_logits"][1:])


# --- The loss ----------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_matches_the_official_sum(reduction):
  rng = np.random.RandomState(1)
  outputs = {
    "start_logits": rng.normal(size=(5, 11)).astype(np.float32),
    "end_logits": rng.normal(size=(5, 11)).astype(np.float32),
    "answerable_logit": 3 * rng.normal(size=5).astype(np.float32),
  }
  start, end = np.array([0, 3, 4, 10, 0]), np.array([0, 5, 4, 10, 0])
  impossible = np.array([1, 0, 0, 0, 1])
  loss, metrics = qa_official.official_qa_loss(
    jax.tree.map(jnp.asarray, outputs),
    jnp.asarray(start),
    jnp.asarray(end),
    jnp.asarray(impossible),
    answerable_weight=0.7,
    reduction=reduction,
  )
  per_example = official_losses(*outputs.values(), start, end, impossible, 0.7)
  # run_finetuning.py: self.loss = tf.reduce_sum(losses * one_hot(task_id)) -> the batch sum.
  want = per_example.sum() if reduction == "sum" else per_example.mean()
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  no_answerable = official_losses(*outputs.values(), start, end, impossible, 0.0)
  np.testing.assert_allclose(float(metrics["span_loss"]), no_answerable.mean(), rtol=1e-5)
  with pytest.raises(ElectraError, match="reduction"):
    qa_official.official_qa_loss(outputs, start, end, impossible, reduction="max")


# --- The model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def qa_model(tiny_config):
  model = model_lib.build_model(tiny_config, "question_answering_official", beam_size=5)
  params = _random_params(model_lib.init_params(model, jax.random.key(0)), 2)
  return model, params


def test_registered_not_hf_exportable_and_loads_hf_encoders(tiny_config, qa_model):
  model, params = qa_model
  assert isinstance(model, qa_official.ElectraForQuestionAnsweringOfficial)
  assert heads.HEADS["question_answering_official"].hf_architecture == ""
  with pytest.raises(ElectraError, match="no HF transformers equivalent"):
    heads.check_hf_exportable("question_answering_official")
  hf_head = model_lib.init_params(
    model_lib.build_model(tiny_config, "question_answering"), jax.random.key(0)
  )
  # The same encoder tree as HF's QA head, so HF encoders load into it.
  assert jax.tree.map(np.shape, params["electra"]) == jax.tree.map(np.shape, hf_head["electra"])
  h, q = tiny_config.hidden_size, qa_official.QA_HIDDEN_SIZE
  assert jax.tree.map(np.shape, params["task_specific"]) == {
    "dense": {"kernel": (h, 1), "bias": (1,)},  # start logits
    "qa_hidden": {"kernel": (2 * h, q), "bias": (q,)},
    "dense_1": {"kernel": (q, 1), "bias": (1,)},  # end logits
    "dense_2": {"kernel": (2 * h, q), "bias": (q,)},  # answerable hidden
    "dense_3": {"kernel": (q, 1), "bias": (1,)},  # answerable logit
  }
  fresh = model_lib.init_params(model, jax.random.key(0))["task_specific"]
  # tf.layers.dense defaults: Glorot-uniform kernels, zero biases.
  kernel = np.asarray(fresh["qa_hidden"]["kernel"])
  limit = np.sqrt(6 / (2 * h + q))
  assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.9 * limit
  assert not any(np.any(layer["bias"]) for layer in fresh.values())


def test_model_under_jit_is_encoder_then_head(tiny_config, qa_model):
  model, params = qa_model
  rng = np.random.RandomState(3)
  ids = rng.randint(1, tiny_config.vocab_size, size=(BATCH, LENGTH)).astype(np.int32)
  input_mask, segment_ids = _masks(BATCH, LENGTH)
  out = jax.jit(lambda p, i, m, t: model.apply({"params": p}, i, m, t))(
    params, ids, input_mask, segment_ids
  )
  k = 5
  assert {key: v.shape for key, v in out.items()} == {
    "start_top_log_probs": (BATCH, k),
    "start_top_index": (BATCH, k),
    "end_top_log_probs": (BATCH, k, k),
    "end_top_index": (BATCH, k, k),
    "answerable_logit": (BATCH,),
  }
  assert out["start_top_index"].dtype == jnp.int32
  encoder = model_lib.build_model(tiny_config, None)
  hidden = encoder.apply({"params": params["electra"]}, ids, input_mask, segment_ids)
  want = official_head(hidden, input_mask, segment_ids, params["task_specific"], k)
  np.testing.assert_array_equal(np.asarray(out["start_top_index"]), want["start_top_index"])
  np.testing.assert_array_equal(np.asarray(out["end_top_index"]), want["end_top_index"])
  np.testing.assert_allclose(out["answerable_logit"], want["answerable_logit"], atol=2e-4)
  # The beam is clipped to the sequence length.
  short = model.apply({"params": params}, ids[:, :4], input_mask[:, :4], segment_ids[:, :4])
  assert short["end_top_index"].shape == (BATCH, 4, 4)


def test_gradient_reaches_every_head_param(tiny_config, qa_model):
  model, params = qa_model
  rng = np.random.RandomState(4)
  ids = rng.randint(1, tiny_config.vocab_size, size=(BATCH, LENGTH)).astype(np.int32)
  input_mask, segment_ids = _masks(BATCH, LENGTH)
  start, end = np.array([6, 5, 5, 0]), np.array([8, 7, 5, 0])

  def loss(p):
    out = model.apply(
      {"params": p},
      ids,
      input_mask,
      segment_ids,
      start_positions=start,
      deterministic=False,
      rngs={"dropout": jax.random.key(0)},
    )
    return qa_official.official_qa_loss(out, start, end, np.array([0, 0, 0, 1]))[0]

  grads = jax.jit(jax.grad(loss))(params)
  norms = {
    "/".join(str(k.key) for k in path): float(jnp.abs(g).sum())
    for path, g in jax.tree_util.tree_leaves_with_path(grads)
  }
  head = {k: v for k, v in norms.items() if k.startswith("task_specific/")}
  # A softmax does not change when all its logits shift, so the biases of the
  # one-unit start and end layers get no gradient (in the official graph too).
  shift_only = {"task_specific/dense/bias", "task_specific/dense_1/bias"}
  assert len(head) == 10 and all(v > 0 for k, v in head.items() if k not in shift_only), head
  assert all(head[k] < 1e-5 for k in shift_only), head
  assert norms["electra/embeddings/word_embeddings/embedding"] > 0


# --- Post-processing: NumPy port of SpanBasedQAScorer.write_predictions ------------


def official_write_predictions(examples, features, outputs, n_best_size, max_answer_length):
  """`write_predictions` with joint_prediction, answerable_classifier and v2.

  The official per-feature data are rebuilt from ours: `_tokens` are the
  real tokens, `_token_to_orig_map` holds the context tokens, and
  `_token_is_max_context` their max-context flags. `get_final_text` is
  replaced by the context between the span's character offsets (what both of
  our heads use).
  """
  Prelim = collections.namedtuple(
    "PrelimPrediction", ["feature_index", "start_index", "end_index", "start_logit", "end_logit"]
  )
  all_predictions, scores_diff_json = {}, {}
  for index, example in enumerate(examples):
    feature_rows = [f for f, e in enumerate(features.example_index) if e == index]
    prelim_predictions = []
    score_null = 1000000  # large and positive
    for feature_index, f in enumerate(feature_rows):
      n_tokens = int(features.attention_mask[f].sum())
      token_to_orig_map = {t: t for t, o in enumerate(features.offsets[f]) if o is not None}
      token_is_max_context = {t: features.max_context[f][t] for t in token_to_orig_map}
      start_indexes = outputs["start_top_index"][f]
      end_indexes = outputs["end_top_index"][f]
      feature_null_score = outputs["answerable_logit"][f]
      if feature_null_score < score_null:
        score_null = feature_null_score
      for i, start_index in enumerate(start_indexes):
        for j, end_index in enumerate(end_indexes[i]):
          if start_index >= n_tokens:
            continue
          if end_index >= n_tokens:
            continue
          if start_index == 0:
            continue
          if start_index not in token_to_orig_map:
            continue
          if end_index not in token_to_orig_map:
            continue
          if not token_is_max_context.get(start_index, False):
            continue
          if end_index < start_index:
            continue
          length = end_index - start_index + 1
          if length > max_answer_length:
            continue
          prelim_predictions.append(
            Prelim(
              feature_index,
              start_index,
              end_index,
              outputs["start_top_log_probs"][f][i],
              outputs["end_top_log_probs"][f][i, j],
            )
          )
    prelim_predictions = sorted(
      prelim_predictions, key=lambda x: x.start_logit + x.end_logit, reverse=True
    )
    seen_predictions, nbest = {}, []
    for pred in prelim_predictions:
      if len(nbest) >= n_best_size:
        break
      offs = features.offsets[feature_rows[pred.feature_index]]
      final_text = example.context[offs[pred.start_index][0] : offs[pred.end_index][1]]
      if final_text in seen_predictions:
        continue
      seen_predictions[final_text] = True
      nbest.append((final_text, pred.start_logit, pred.end_logit))
    if not nbest:
      nbest.append(("empty", 0.0, 0.0))
    best_non_null_entry = next(entry for entry in nbest if entry[0])
    scores_diff_json[example.qas_id] = float(score_null)  # answerable_classifier: score_null
    all_predictions[example.qas_id] = best_non_null_entry[0]
  return all_predictions, scores_diff_json


@pytest.fixture(scope="module")
def squad_features():
  from electra_jax import job_setup, tokenization

  tokenizer = tokenization.load_tokenizer(job_setup.BUNDLED_VOCAB)
  long = " ".join(f"word{i} is here." for i in range(30))
  examples = [
    squad.SquadExample("long", "T", "where is it?", long, (), True),
    squad.SquadExample("short", "T", "who won?", "The Broncos beat the Panthers.", (), True),
    squad.SquadExample("tiny", "T", "what?", "Yes.", (), True),
  ]
  return examples, squad.featurize(
    examples, tokenizer, max_seq_length=48, doc_stride=12, max_query_length=8
  )


def _random_beams(features, k, seed):
  """Beams as the model makes them: sorted log-probs; indices anywhere in [0, L), padding included."""
  rng = np.random.RandomState(seed)
  n, length = features.input_ids.shape
  start_index = np.stack([rng.permutation(length)[:k] for _ in range(n)])
  end_index = np.stack([[rng.permutation(length)[:k] for _ in range(k)] for _ in range(n)])
  # Ends near their start, so that many pairs pass the length filter.
  near = np.clip(start_index[:, :, None] + rng.randint(-2, 6, size=(n, k, k)), 0, length - 1)
  end_index = np.where(rng.rand(n, k, k) < 0.7, near, end_index)
  start_lp = -np.sort(rng.exponential(size=(n, k)), -1)
  end_lp = -np.sort(rng.exponential(size=(n, k, k)), -1)
  return {
    "start_top_log_probs": start_lp.astype(np.float32),
    "start_top_index": start_index.astype(np.int32),
    "end_top_log_probs": end_lp.astype(np.float32),
    "end_top_index": end_index.astype(np.int32),
    "answerable_logit": rng.normal(size=n).astype(np.float32),
  }


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_best_size,max_answer_length", [(20, 30), (2, 3)])
def test_postprocess_matches_write_predictions(
  squad_features, seed, n_best_size, max_answer_length
):
  examples, features = squad_features
  assert len(features.example_index) > 4  # the long example has several windows
  outputs = _random_beams(features, 8, seed)
  ours = qa_official.postprocess_official(
    examples, features, outputs, n_best_size=n_best_size, max_answer_length=max_answer_length
  )
  want = official_write_predictions(examples, features, outputs, n_best_size, max_answer_length)
  assert ours == want


def test_equal_scores_keep_the_earlier_beam(squad_features):
  """`sorted(prelim_predictions, ...)` is stable: on a tie the earlier start beam wins."""
  examples, features = squad_features
  outputs = _random_beams(features, 2, 0)
  outputs["start_top_index"][:] = 0  # no candidate anywhere ...
  valid = [t for t, ok in enumerate(features.max_context[0]) if ok]
  first, second = valid[3], valid[1]  # ... but two one-token spans in feature 0
  text = [squad.span_text(examples[0], features, 0, t, t) for t in (first, second)]
  assert text[0] != text[1]
  outputs["start_top_index"][0] = [first, second]
  outputs["end_top_index"][0] = [[first, 0], [second, 0]]
  outputs["start_top_log_probs"][0] = [-0.5, -1.0]
  outputs["end_top_log_probs"][0] = [[-1.0, -9.0], [-0.5, -9.0]]  # both -1.5
  preds, _ = qa_official.postprocess_official(examples, features, outputs)
  assert preds["long"] == text[0]
  assert preds == official_write_predictions(examples, features, outputs, 20, 30)[0]
  outputs["start_top_index"][0] = [second, first]
  outputs["end_top_index"][0] = [[second, 0], [first, 0]]
  preds, _ = qa_official.postprocess_official(examples, features, outputs)
  assert preds["long"] == text[1]


def test_no_valid_span_gives_the_official_nonce(squad_features):
  examples, features = squad_features
  outputs = _random_beams(features, 4, 0)
  outputs["start_top_index"][:] = 0  # [CLS] never starts an answer
  preds, null_odds = qa_official.postprocess_official(examples, features, outputs)
  assert set(preds.values()) == {"empty"}
  for index, ex in enumerate(examples):
    rows = features.example_index == index
    assert null_odds[ex.qas_id] == pytest.approx(outputs["answerable_logit"][rows].min())


def test_answerability_decision_is_the_official_threshold():
  preds = {"a": "x", "b": "y", "c": "z"}
  null_odds = {"a": -3.0, "b": -2.75, "c": -2.0}
  # run_finetuning.py: if null_odds[q] > config.qa_na_threshold: preds[q] = ""
  assert qa_official.apply_null_threshold(preds, null_odds) == {"a": "x", "b": "y", "c": ""}
  assert qa_official.apply_null_threshold(preds, null_odds, -10) == dict.fromkeys(preds, "")


def test_postprocess_refuses_outputs_it_cannot_read(squad_features):
  examples, features = squad_features
  outputs = _random_beams(features, 4, 0)
  with pytest.raises(ElectraError, match="without start_positions"):
    qa_official.postprocess_official(examples, features, {"start_logits": 0})
  short = {k: v[1:] for k, v in outputs.items()}
  with pytest.raises(ElectraError, match="expected"):
    qa_official.postprocess_official(examples, features, short)
