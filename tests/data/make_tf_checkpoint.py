"""Regenerates tests/data/tf_electra_tiny/: a TensorFlow-written ELECTRA pretraining checkpoint.

Needs TensorFlow, which electra-jax does not depend on; run it from a throwaway
virtual environment at the repository root:

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu
    /tmp/tfvenv/bin/python tests/data/make_tf_checkpoint.py

What it writes, with TensorFlow's own TF1 `Saver` (V2 tensor bundle, the format
google-research/electra's `run_pretraining.py` leaves in its model_dir):
  model.ckpt-7.index, model.ckpt-7.data-00000-of-00001, checkpoint
      the variables of a tiny random ELECTRA pretraining run with the official
      names and shapes, Adam slots (`<var>/adam_m`, `<var>/adam_v`) and
      `global_step` (int64, 7) included;
  arrays.npz
      the model variables' values by TF name, as saved: the tests load them
      into HF transformers models independently of electra-jax's reader.

The variables are created in the scopes the official code creates them in
(`model/modeling.py` BertModel, `run_pretraining.py` PretrainingModel with the
default `untied_generator=True`, `untied_generator_embeddings=False`):
  electra/embeddings/{word,position,token_type}_embeddings, LayerNorm/{gamma,beta}
      shared by both networks (the generator looks them up under "electra/embeddings");
  electra/embeddings_project, electra/encoder/layer_N/...   the discriminator
  generator/embeddings_project, generator/encoder/layer_N/... the generator
      (its own BertModel, scope "generator": hidden = 1/4 of the
      discriminator's as in `get_generator_config`, intermediate = 4 x hidden,
      heads = max(1, hidden // 64) = 1);
  discriminator_predictions/dense, discriminator_predictions/dense_1
      (two unnamed `tf.layers.dense` in one scope: "dense", then "dense_1");
  generator_predictions/dense, generator_predictions/LayerNorm, generator_predictions/output_bias.
Sizes: vocab 50, embedding 12, max positions 24, 2 token types; discriminator
hidden 24 (2 heads of 12), intermediate 48, 2 layers; generator hidden 8,
intermediate 32, 2 layers. Values are seeded random: kernels and embeddings
N(0, 0.2), biases and LayerNorm betas N(0, 0.1), gammas 1 + N(0, 0.1), so a
mis-mapped bias or LayerNorm shows in the logits.

It then checks the reader and writer in electra_jax/tf_checkpoint.py against
TensorFlow both ways: electra-jax reads every variable TensorFlow wrote (bit for
bit), and TensorFlow reads a checkpoint electra-jax wrote (bit for bit).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tf_electra_tiny")
STEP = 7

VOCAB, EMBED, POSITIONS, TYPES = 50, 12, 24, 2
DISC = dict(hidden=24, intermediate=48, layers=2)
GEN = dict(hidden=8, intermediate=32, layers=2)


def main() -> None:
  rng = np.random.default_rng(20200323)  # the ELECTRA paper's arXiv date
  arrays: dict[str, np.ndarray] = {}

  def variable(name, shape, kind="kernel"):
    if kind == "gamma":
      value = 1.0 + 0.1 * rng.standard_normal(shape)
    elif kind in ("bias", "beta"):
      value = 0.1 * rng.standard_normal(shape)
    else:
      value = 0.2 * rng.standard_normal(shape)
    value = value.astype(np.float32)
    scope = tf.compat.v1.get_variable_scope().name
    arrays[f"{scope}/{name}" if scope else name] = value
    return tf.compat.v1.get_variable(name, initializer=tf.constant(value))

  def dense(name, n_in, n_out):  # tf.layers.dense
    with tf.compat.v1.variable_scope(name):
      variable("kernel", [n_in, n_out])
      variable("bias", [n_out], "bias")

  def layer_norm(width, name="LayerNorm"):  # contrib layer_norm, begin_norm_axis=-1
    with tf.compat.v1.variable_scope(name):
      variable("beta", [width], "beta")
      variable("gamma", [width], "gamma")

  def transformer(hidden, intermediate, layers):  # modeling.transformer_model
    with tf.compat.v1.variable_scope("encoder"):
      for i in range(layers):
        with tf.compat.v1.variable_scope(f"layer_{i}"):
          with tf.compat.v1.variable_scope("attention"):
            with tf.compat.v1.variable_scope("self"):
              for proj in ("query", "key", "value"):
                dense(proj, hidden, hidden)
            with tf.compat.v1.variable_scope("output"):
              dense("dense", hidden, hidden)
              layer_norm(hidden)
          with tf.compat.v1.variable_scope("intermediate"):
            dense("dense", hidden, intermediate)
          with tf.compat.v1.variable_scope("output"):
            dense("dense", intermediate, hidden)
            layer_norm(hidden)

  def bert_model(scope, hidden, intermediate, layers):  # modeling.BertModel
    with tf.compat.v1.variable_scope("electra/embeddings", reuse=tf.compat.v1.AUTO_REUSE):
      if "electra/embeddings/word_embeddings" not in arrays:  # the generator reuses them
        variable("word_embeddings", [VOCAB, EMBED])
        variable("token_type_embeddings", [TYPES, EMBED])
        variable("position_embeddings", [POSITIONS, EMBED])
        layer_norm(EMBED)
    with tf.compat.v1.variable_scope(scope):
      if EMBED != hidden:
        dense("embeddings_project", EMBED, hidden)
      transformer(hidden, intermediate, layers)

  graph = tf.Graph()
  with graph.as_default():
    # PretrainingModel: the generator first, then the discriminator.
    bert_model("generator", **GEN)
    with tf.compat.v1.variable_scope("generator_predictions"):  # get_token_logits
      dense("dense", GEN["hidden"], EMBED)
      layer_norm(EMBED)
      variable("output_bias", [VOCAB], "bias")
    bert_model("electra", **DISC)
    with tf.compat.v1.variable_scope("discriminator_predictions"):
      dense("dense", DISC["hidden"], DISC["hidden"])
      dense("dense_1", DISC["hidden"], 1)
    # AdamWeightDecayOptimizer's slots, and the step counter.
    for name in list(arrays):
      for slot in ("adam_m", "adam_v"):
        tf.compat.v1.get_variable(
          f"{name}/{slot}", initializer=tf.constant(rng.random(arrays[name].shape, np.float32))
        )
    global_step = tf.compat.v1.train.get_or_create_global_step()
    assign = global_step.assign(STEP)
    saver = tf.compat.v1.train.Saver()
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      sess.run(assign)
      prefix = saver.save(
        sess, os.path.join(OUT, "model.ckpt"), global_step=STEP, write_meta_graph=False
      )
  # The state file names the checkpoint by a path relative to its directory.
  with open(os.path.join(OUT, "checkpoint"), "w") as f:
    f.write(f'model_checkpoint_path: "{os.path.basename(prefix)}"\n')
    f.write(f'all_model_checkpoint_paths: "{os.path.basename(prefix)}"\n')
  np.savez_compressed(os.path.join(OUT, "arrays.npz"), **arrays)
  check_both_ways(prefix, arrays)
  for name in sorted(os.listdir(OUT)):
    print(f"{os.path.getsize(os.path.join(OUT, name)):>8}  {os.path.join(OUT, name)}")


def check_both_ways(prefix: str, arrays: dict[str, np.ndarray]) -> None:
  sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
  from electra_jax import tf_checkpoint

  # electra-jax reads what TensorFlow wrote.
  tf_reader = tf.train.load_checkpoint(prefix)
  ours = tf_checkpoint.TFCheckpoint(prefix)
  tf_shapes = tf_reader.get_variable_to_shape_map()
  assert {k: tuple(v) for k, v in tf_shapes.items()} == ours.shapes(), "variable lists differ"
  for name in tf_shapes:
    expected = tf_reader.get_tensor(name)
    got = ours.read(name)
    assert got.dtype == expected.dtype and np.array_equal(got, expected), name
  for name, value in arrays.items():
    assert np.array_equal(ours.read(name), value), name
  assert ours.read("global_step") == STEP
  # TensorFlow reads what electra-jax writes (the name set of a bigger bundle,
  # several dtypes, a scalar and an empty tensor included).
  extra = {
    "a/int32": np.arange(6, dtype=np.int32).reshape(2, 3),
    "a/int64_scalar": np.int64(-5),
    "b/float64": np.linspace(0, 1, 7),
    "b/empty": np.zeros((0, 3), np.float32),
    "c/big": np.random.default_rng(0).standard_normal((700, 500)).astype(np.float32),
  }
  with tempfile.TemporaryDirectory() as tmp:
    written = tf_checkpoint.write_checkpoint(os.path.join(tmp, "ours"), {**arrays, **extra})
    reader = tf.train.load_checkpoint(written)
    shapes = reader.get_variable_to_shape_map()
    assert set(shapes) == set(arrays) | set(extra)
    for name, value in {**arrays, **extra}.items():
      back = reader.get_tensor(name)
      assert back.dtype == np.asarray(value).dtype and np.array_equal(back, value), name
  print(
    f"checked: electra-jax reads the {len(tf_shapes)} variables TensorFlow wrote; "
    f"TensorFlow reads the {len(arrays) + len(extra)} electra-jax wrote"
  )


if __name__ == "__main__":
  main()
