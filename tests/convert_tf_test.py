"""Tests for `electra-jax convert --from-tf` (electra_jax/convert_tf.py and the CLI).

The end-to-end tests convert tests/data/tf_electra_tiny, a checkpoint that
TensorFlow wrote with the official variable names (see
tests/data/make_tf_checkpoint.py), and compare the logits with HF
transformers models holding the same weights: those are copied from the
fixture's arrays.npz by `hf_state_dict` below, written from HF's own TF name
mapping (`load_tf_weights_in_electra`), not from ours. The rule tests build
variable lists in memory (`tf_to_params` is pure) or write small bundles with
`tf_checkpoint.write_checkpoint`.
"""

import os
import re

import numpy as np
import pytest
from hf_reference import batch, hf_output, jax_output, require_hf

import electra_jax
from electra_jax import cli, convert_tf, tf_checkpoint
from electra_jax.errors import ElectraError

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "tf_electra_tiny")

# The fixture's architecture, as make_tf_checkpoint.py builds it.
COMMON = dict(vocab_size=50, embedding_size=12, max_position_embeddings=24, type_vocab_size=2)
DISCRIMINATOR = dict(
  hidden_size=24, num_attention_heads=2, intermediate_size=48, num_hidden_layers=2
)
GENERATOR = dict(hidden_size=8, num_attention_heads=1, intermediate_size=32, num_hidden_layers=2)


@pytest.fixture(scope="module")
def arrays():
  with np.load(os.path.join(FIXTURE, "arrays.npz")) as f:
    return {k: f[k] for k in f.files}


def hf_state_dict(arrays, model):
  """TF name -> HF key, after HF's converter: the generator's own scope becomes `electra.`."""
  out = {}
  for name, value in arrays.items():
    if model == "generator":
      name = name.replace("electra/embeddings/", "generator/embeddings/")
      name = name.replace("electra/", "discriminator/").replace("generator/", "electra/")
    head = "discriminator_predictions" if model == "discriminator" else "generator_predictions"
    if name.split("/")[0] not in ("electra", head):
      continue  # the other network (HF's converter skips what its model lacks)
    name = name.replace("dense_1", "dense_prediction")
    name = name.replace("generator_predictions/output_bias", "generator_lm_head/bias")
    name = re.sub(r"layer_(\d+)", r"layer.\1", name)
    parts = name.split("/")
    leaf = parts[-1]
    if leaf.endswith("_embeddings"):
      parts.append("weight")
    elif leaf == "kernel":
      parts[-1], value = "weight", value.T
    elif leaf == "gamma":
      parts[-1] = "weight"
    elif leaf == "beta":
      parts[-1] = "bias"
    out[".".join(parts)] = value
  return out


def hf_from_fixture(arrays, model):
  torch, transformers = require_hf()
  sizes = DISCRIMINATOR if model == "discriminator" else GENERATOR
  config = transformers.ElectraConfig(**COMMON, **sizes, hidden_act="gelu")
  cls = (
    transformers.ElectraForPreTraining
    if model == "discriminator"
    else transformers.ElectraForMaskedLM
  )
  hf = cls(config).eval()
  state = {
    k: torch.tensor(np.ascontiguousarray(v)) for k, v in hf_state_dict(arrays, model).items()
  }
  missing, unexpected = hf.load_state_dict(state, strict=False)
  assert not unexpected, unexpected
  # Only the tied decoder weight is left, and it is the word embeddings.
  assert [k for k in missing if "position_ids" not in k] in ([], ["generator_lm_head.weight"])
  if model == "generator":
    np.testing.assert_array_equal(
      hf.generator_lm_head.weight.detach().numpy(), arrays["electra/embeddings/word_embeddings"]
    )
  return hf


@pytest.mark.parametrize(
  "model,flags,cls",
  [
    ("discriminator", ["--num-heads", "2"], "ElectraForPreTraining"),
    # The generator's head count comes from the default rule: max(1, 8 // 64) = 1.
    ("generator", ["--model", "generator"], "ElectraForMaskedLM"),
  ],
)
def test_fixture_converts_to_hf_logits(arrays, tmp_path, capsys, model, flags, cls):
  hf = hf_from_fixture(arrays, model)
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("".join(f"tok{i}\n" for i in range(50)))
  out = tmp_path / "ej"
  rc = cli.main(["convert", "--from-tf", FIXTURE, *flags, "--vocab", str(vocab), "--out", str(out)])
  printed = capsys.readouterr().out
  assert rc == 0
  assert f"wrote {out}" in printed
  assert "skipped on purpose 165 optimizer variables (global_step, Adam slots" in printed
  assert f"left out {38 if model == 'generator' else 39} variables of the" in printed
  assert sorted(os.listdir(out)) == ["electra_jax.json", "params", "vocab.txt"]
  loaded, params = electra_jax.from_pretrained(out)
  assert type(loaded).__name__ == cls
  sizes = DISCRIMINATOR if model == "discriminator" else GENERATOR
  for k, v in {**COMMON, **sizes}.items():
    assert getattr(loaded.config, k) == v, k
  head = convert_tf.MODELS[model]
  inputs = batch(head, 50, length=9)
  ours = jax_output(loaded, params, head, inputs)
  ref = hf_output(hf, head, inputs)
  assert ours.shape == ref.shape
  assert np.max(np.abs(ours - ref)) <= 1e-5


def test_converted_checkpoint_records_its_source(tmp_path):
  out = convert_tf.convert_from_tf(FIXTURE, tmp_path / "ej", "generator")
  meta = electra_jax.pretrained.read_checkpoint_meta(out)
  assert meta["head"] == "masked_lm"
  assert meta["extra"]["converted_from"] == {
    "tensorflow_checkpoint": os.path.join(FIXTURE, "model.ckpt-7"),
    "model": "generator",
    "global_step": 7,
  }


def _fixture_with(tmp_path, **changes):
  """The fixture's variables (slots and step included) with `changes` (None deletes), rewritten."""
  ckpt = tf_checkpoint.TFCheckpoint(FIXTURE)
  variables = {name: ckpt.read(name) for name in ckpt.entries}
  for name, value in changes.items():
    name = name.replace("__", "/")
    if value is None:
      del variables[name]
    else:
      variables[name] = value
  return tf_checkpoint.write_checkpoint(tmp_path / "model.ckpt-7", variables)


def test_unknown_variable_is_refused_by_name(tmp_path, capsys):
  src = _fixture_with(
    tmp_path,
    task_specific__classifier__kernel=np.zeros((24, 2), np.float32),
    electra__encoder__layer_0__attention__self__query__kernel__adam_q=np.zeros(1, np.float32),
  )
  out = tmp_path / "out"
  rc = cli.main(["convert", "--from-tf", src, "--num-heads", "2", "--out", str(out)])
  err = capsys.readouterr().err
  assert rc == 2 and err.count("\n") == 1
  assert err.startswith("electra-jax: error: 2 variables are not part of an ELECTRA pretraining")
  assert "task_specific/classifier/kernel" in err
  assert "electra/encoder/layer_0/attention/self/query/kernel/adam_q" in err
  assert not out.exists()


def test_adam_slot_of_an_unknown_variable_is_unknown(tmp_path):
  src = _fixture_with(tmp_path, mystery__w__adam_m=np.zeros(3, np.float32))
  with pytest.raises(ElectraError, match=r"1 variable is .*: mystery/w/adam_m$"):
    convert_tf.convert_from_tf(src, tmp_path / "out", num_heads=2)


def test_missing_and_misshaped_variables_are_listed(tmp_path):
  src = _fixture_with(tmp_path, electra__embeddings__LayerNorm__gamma=None)
  with pytest.raises(ElectraError, match="lacks .*electra/embeddings/LayerNorm/scale"):
    convert_tf.convert_from_tf(src, tmp_path / "a", num_heads=2)
  src = _fixture_with(
    tmp_path / "b", electra__encoder__layer_1__output__dense__kernel=np.zeros((48, 23), np.float32)
  )
  with pytest.raises(
    ElectraError, match=r"wrong shape: electra/encoder/layer_1/output/dense/kernel \(48, 23\)"
  ):
    convert_tf.convert_from_tf(src, tmp_path / "c", num_heads=2)


# -- the rules, on variable lists in memory --------------------------------------------


def _shapes(hidden, embedding=12, layers=1, intermediate=None, vocab=50, scope="electra"):
  intermediate = intermediate or 4 * hidden
  shapes = {}
  if scope == "electra":
    shapes.update(
      {
        "electra/embeddings/word_embeddings": (vocab, embedding),
        "electra/embeddings/position_embeddings": (16, embedding),
        "electra/embeddings/token_type_embeddings": (2, embedding),
        "electra/embeddings/LayerNorm/gamma": (embedding,),
        "electra/embeddings/LayerNorm/beta": (embedding,),
      }
    )
  if embedding != hidden:
    shapes[f"{scope}/embeddings_project/kernel"] = (embedding, hidden)
    shapes[f"{scope}/embeddings_project/bias"] = (hidden,)
  for i in range(layers):
    p = f"{scope}/encoder/layer_{i}/"
    for proj in ("query", "key", "value"):
      shapes[p + f"attention/self/{proj}/kernel"] = (hidden, hidden)
      shapes[p + f"attention/self/{proj}/bias"] = (hidden,)
    shapes[p + "attention/output/dense/kernel"] = (hidden, hidden)
    shapes[p + "intermediate/dense/kernel"] = (hidden, intermediate)
    shapes[p + "output/dense/kernel"] = (intermediate, hidden)
    for module, width in (
      ("attention/output/dense", hidden),
      ("intermediate/dense", intermediate),
      ("output/dense", hidden),
    ):
      shapes[p + module + "/bias"] = (width,)
    for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
      shapes[p + norm + "/gamma"] = (hidden,)
      shapes[p + norm + "/beta"] = (hidden,)
  return shapes


def _disc_head(hidden):
  return {
    "discriminator_predictions/dense/kernel": (hidden, hidden),
    "discriminator_predictions/dense/bias": (hidden,),
    "discriminator_predictions/dense_1/kernel": (hidden, 1),
    "discriminator_predictions/dense_1/bias": (1,),
  }


def _gen_head(hidden, embedding=12, vocab=50):
  return {
    "generator_predictions/dense/kernel": (hidden, embedding),
    "generator_predictions/dense/bias": (embedding,),
    "generator_predictions/LayerNorm/gamma": (embedding,),
    "generator_predictions/LayerNorm/beta": (embedding,),
    "generator_predictions/output_bias": (vocab,),
  }


def _convert(shapes, model="discriminator", num_heads=None):
  return convert_tf.tf_to_params(
    shapes, lambda n: np.zeros(shapes[n], np.float32), model, num_heads
  )


@pytest.mark.parametrize(
  "hidden,heads", [(256, 4), (768, 12), (1024, 16), (64, 1), (32, 1), (320, 5)]
)
def test_default_heads_are_the_official_rule(hidden, heads):
  done = _convert({**_shapes(hidden, embedding=hidden), **_disc_head(hidden)})
  assert done.config.num_attention_heads == heads
  assert "official code's default; pass --num-heads" in done.heads_from


def test_num_heads_must_divide_hidden():
  shapes = {**_shapes(24), **_disc_head(24)}
  assert _convert(shapes, num_heads=3).config.num_attention_heads == 3
  with pytest.raises(ElectraError, match="5 attention heads do not divide hidden_size 24"):
    _convert(shapes, num_heads=5)


def test_square_model_has_no_projection_and_refuses_one():
  shapes = {**_shapes(32, embedding=32), **_disc_head(32)}
  done = _convert(shapes)
  assert done.config.embedding_size == done.config.hidden_size == 32
  assert "embeddings_project" not in done.params["electra"]
  shapes["electra/embeddings_project/kernel"] = (32, 32)
  with pytest.raises(ElectraError, match="no place for: electra/embeddings_project/kernel"):
    _convert(shapes)


def test_tied_generator_is_the_electra_encoder_with_its_head():
  # untied_generator=False (or the MLM/BERT objective): no generator/ scope.
  shapes = {**_shapes(16, layers=2), **_disc_head(16), **_gen_head(16)}
  gen = _convert(shapes, "generator")
  assert gen.head == "masked_lm" and gen.config.hidden_size == 16
  assert (
    gen.sources["electra/encoder/layer_1/output/dense/kernel"]
    == "electra/encoder/layer_1/output/dense/kernel"
  )
  assert gen.other_network == sorted(_disc_head(16))
  disc = _convert(shapes)
  assert disc.other_network == sorted(_gen_head(16))


def test_generator_scope_and_untied_generator_embeddings():
  shapes = {**_shapes(32), **_disc_head(32), **_shapes(8, scope="generator"), **_gen_head(8)}
  # untied_generator_embeddings: the generator's own tables under generator/embeddings/.
  own = {
    k.replace("electra/", "generator/", 1): v
    for k, v in shapes.items()
    if k.startswith("electra/embeddings/")
  }
  gen = _convert({**shapes, **own}, "generator")
  assert (
    gen.sources["electra/embeddings/word_embeddings/embedding"]
    == "generator/embeddings/word_embeddings"
  )
  assert gen.sources["electra/embeddings_project/kernel"] == "generator/embeddings_project/kernel"
  assert "electra/embeddings/word_embeddings" in gen.other_network
  disc = _convert({**shapes, **own})
  assert (
    disc.sources["electra/embeddings/word_embeddings/embedding"]
    == "electra/embeddings/word_embeddings"
  )
  assert "generator/embeddings/word_embeddings" in disc.other_network


def test_a_network_the_checkpoint_lacks_is_named():
  mlm_only = {**_shapes(16), **_gen_head(16)}
  with pytest.raises(ElectraError, match="no discriminator .*convert --model generator"):
    _convert(mlm_only)


def test_gaps_in_the_layers_are_refused():
  shapes = {**_shapes(16, layers=3), **_disc_head(16)}
  shapes = {k: v for k, v in shapes.items() if "/layer_1/" not in k}
  with pytest.raises(ElectraError, match=r"lacks layers \[1\] of 0..2"):
    _convert(shapes)


# -- the command line ----------------------------------------------------------------


def test_convert_help_documents_from_tf(capsys):
  with pytest.raises(SystemExit):
    cli.main(["convert", "--help"])
  out = capsys.readouterr().out
  for text in ("--from-tf", "--model", "--num-heads", "--vocab", "max(1, hidden // 64)", "adam_m"):
    assert text in out


@pytest.mark.parametrize(
  "argv,message",
  [
    (["--from-hf", "x", "--model", "generator"], "--model applies to --from-tf only"),
    (
      ["--to-hf", "x", "--vocab", "v", "--num-heads", "2"],
      "--num-heads, --vocab apply to --from-tf only",
    ),
    (
      ["--from-tf", FIXTURE, "--head", "masked_lm"],
      "--head applies to --from-hf; --from-tf takes --model discriminator|generator",
    ),
  ],
)
def test_flag_misuse_is_one_line(argv, message, tmp_path, capsys):
  assert cli.main(["convert", *argv, "--out", str(tmp_path / "o")]) == 2
  assert capsys.readouterr().err == f"electra-jax: error: {message}\n"


def test_vocab_larger_than_the_embeddings_is_refused(tmp_path, capsys):
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("".join(f"t{i}\n" for i in range(51)))
  rc = cli.main(
    [
      "convert",
      "--from-tf",
      FIXTURE,
      "--num-heads",
      "2",
      "--vocab",
      str(vocab),
      "--out",
      str(tmp_path / "o"),
    ]
  )
  assert rc == 2
  assert (
    "has 51 tokens but the checkpoint's word embeddings have 50 rows" in capsys.readouterr().err
  )
