"""Official TF ELECTRA checkpoints (google-research/electra) -> electra-jax: the name rules.

A pretraining checkpoint of the official code holds both networks, in TF1
variable scopes (`model/modeling.py` BertModel, `run_pretraining.py`):

  electra/embeddings/{word,position,token_type}_embeddings, .../LayerNorm/{gamma,beta}
      the token embeddings, shared by both networks (the generator looks them
      up under "electra/" unless `untied_generator_embeddings`, which puts its
      own under generator/embeddings/);
  electra/embeddings_project/{kernel,bias}           when embedding_size != hidden_size
  electra/encoder/layer_N/attention/self/{query,key,value}/{kernel,bias}
  electra/encoder/layer_N/attention/output/{dense/...,LayerNorm/...}
  electra/encoder/layer_N/intermediate/dense/...  electra/encoder/layer_N/output/{dense,LayerNorm}/...
      the discriminator's encoder;
  generator/embeddings_project/..., generator/encoder/layer_N/...
      the generator's own encoder (`untied_generator`, the default); without
      it the generator *is* the "electra/" encoder with its own head;
  discriminator_predictions/dense/..., discriminator_predictions/dense_1/...
      the discriminator head (two unnamed `tf.layers.dense`: dense, dense_1);
  generator_predictions/dense/..., generator_predictions/LayerNorm/...,
  generator_predictions/output_bias
      the generator head (its decoder is the word embeddings, transposed);
  global_step, <variable>/adam_m, <variable>/adam_v
      the step counter and AdamWeightDecayOptimizer's slots: skipped on
      purpose (the released checkpoints have none, a run's own model_dir has).

Our param tree uses the same module names under `electra/` (a TF1 dense
kernel is [in, out] like Flax's, so nothing is transposed); only the leaves
differ: LayerNorm gamma/beta -> scale/bias, an embedding table gains
`/embedding`, `dense_1` -> `dense_prediction`, `generator_predictions/output_bias`
-> `generator_lm_head/bias`. Strict: a variable no rule knows aborts with the
list; so does a param the model needs but the checkpoint lacks, or a tensor
of the wrong shape. The other network's variables are recognised and left
out (reported).

The checkpoints carry no config, so the architecture comes from the tensor
shapes (vocabulary, embedding, hidden and intermediate sizes, layer count,
max positions, token types), except the number of attention heads, which no
shape shows: it is `--num-heads` if given, else `max(1, hidden_size // 64)`,
the official code's own default (`util/training_utils.get_bert_config` for
the discriminator, `get_generator_config` for the generator): right for the
released small (4 heads), base (12) and large (16) models and every
generator, wrong only for a run that overrode `num_attention_heads`.

`tf_to_params` is pure (names, shapes and a read function in, params out);
`convert_from_tf` reads the checkpoint (`tf_checkpoint.py`, no TensorFlow
needed) and writes an electra-jax checkpoint directory.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np

from electra_jax.config import ElectraConfig
from electra_jax.errors import ElectraError
from electra_jax.trees import expected_shapes, format_keys, unflatten

log = logging.getLogger(__name__)

# The two networks of a pretraining checkpoint, and our head for each.
MODELS = {"discriminator": "pretraining", "generator": "masked_lm"}

OPTIMIZER_SLOTS = ("adam_m", "adam_v")
STEP_VARIABLE = "global_step"

# Leaf kinds: TF leaf -> our leaf ("" = the TF variable is the module itself).
_DENSE = {"kernel": "kernel", "bias": "bias"}
_NORM = {"gamma": "scale", "beta": "bias"}
_TABLE = {"": "embedding"}
_VECTOR = {"": ""}

# (TF module, our module, leaves). Encoder modules are relative to the scope
# ("electra" or "generator"), ours to `electra/`.
_EMBEDDING_RULES = (
  ("embeddings/{emb}_embeddings", "embeddings/{emb}_embeddings", _TABLE),
  ("embeddings/LayerNorm", "embeddings/LayerNorm", _NORM),
)
_ENCODER_RULES = (
  ("embeddings_project", "embeddings_project", _DENSE),
  ("encoder/layer_{i}/attention/self/{proj}", "encoder/layer_{i}/attention/self/{proj}", _DENSE),
  ("encoder/layer_{i}/attention/output/dense", "encoder/layer_{i}/attention/output/dense", _DENSE),
  (
    "encoder/layer_{i}/attention/output/LayerNorm",
    "encoder/layer_{i}/attention/output/LayerNorm",
    _NORM,
  ),
  ("encoder/layer_{i}/intermediate/dense", "encoder/layer_{i}/intermediate/dense", _DENSE),
  ("encoder/layer_{i}/output/dense", "encoder/layer_{i}/output/dense", _DENSE),
  ("encoder/layer_{i}/output/LayerNorm", "encoder/layer_{i}/output/LayerNorm", _NORM),
)
_HEAD_RULES = {
  "discriminator": (
    ("discriminator_predictions/dense", "discriminator_predictions/dense", _DENSE),
    ("discriminator_predictions/dense_1", "discriminator_predictions/dense_prediction", _DENSE),
  ),
  "generator": (
    ("generator_predictions/dense", "generator_predictions/dense", _DENSE),
    ("generator_predictions/LayerNorm", "generator_predictions/LayerNorm", _NORM),
    ("generator_predictions/output_bias", "generator_lm_head/bias", _VECTOR),
  ),
}
_SCOPES = ("electra", "generator")
_PLACEHOLDERS = {"i": r"\d+", "emb": "word|position|token_type", "proj": "query|key|value"}


class _Rule(NamedTuple):
  pattern: re.Pattern  # the full TF variable name
  ours: str  # our param path, with the placeholders to fill
  part: tuple[str, str]  # ("embeddings" | "encoder", scope) or ("head", network)


def _regex(template: str) -> str:
  return re.sub(
    r"\\\{(\w+)\\\}",
    lambda m: f"(?P<{m.group(1)}>{_PLACEHOLDERS[m.group(1)]})",
    re.escape(template),
  )


def _build_rules() -> tuple[_Rule, ...]:
  rules = []

  def add(tf_module, our_module, leaves, part):
    for tf_leaf, our_leaf in leaves.items():
      tf_name = f"{tf_module}/{tf_leaf}" if tf_leaf else tf_module
      our_path = f"{our_module}/{our_leaf}" if our_leaf else our_module
      rules.append(_Rule(re.compile(_regex(tf_name)), our_path, part))

  for scope in _SCOPES:
    for tf_module, ours, leaves in _EMBEDDING_RULES:
      add(f"{scope}/{tf_module}", f"electra/{ours}", leaves, ("embeddings", scope))
    for tf_module, ours, leaves in _ENCODER_RULES:
      add(f"{scope}/{tf_module}", f"electra/{ours}", leaves, ("encoder", scope))
  for network, table in _HEAD_RULES.items():
    for tf_module, ours, leaves in table:
      add(tf_module, ours, leaves, ("head", network))
  return tuple(rules)


_RULES = _build_rules()


def _match(name: str) -> tuple[str, tuple[str, str]] | None:
  """(our param path, part) for a TF model variable, None if no rule knows it."""
  for rule in _RULES:
    m = rule.pattern.fullmatch(name)
    if m:
      return rule.ours.format(**m.groupdict()), rule.part
  return None


class TFConversion(NamedTuple):
  """What `tf_to_params` made of a checkpoint."""

  config: ElectraConfig
  head: str  # "pretraining" (discriminator) or "masked_lm" (generator)
  params: dict  # nested numpy arrays, unrolled layers
  sources: dict[str, str]  # our param path -> TF variable
  other_network: list[str]  # the other network's variables, left out
  optimizer: list[str]  # global_step and Adam slots, skipped on purpose
  heads_from: str  # how num_attention_heads was chosen


def _parts(model: str, matched: Mapping[str, tuple[str, tuple[str, str]]]) -> set:
  """The parts of the checkpoint that make up `model`."""
  if model == "discriminator":
    return {("embeddings", "electra"), ("encoder", "electra"), ("head", "discriminator")}
  present = {part for _, part in matched.values()}
  # The generator's own scope when the run had one (untied_generator, the
  # default), else the shared "electra/" weights (a tied or MLM-only run).
  embeddings = "generator" if ("embeddings", "generator") in present else "electra"
  encoder = "generator" if ("encoder", "generator") in present else "electra"
  return {("embeddings", embeddings), ("encoder", encoder), ("head", "generator")}


def _sort_variables(shapes: Mapping[str, tuple], model: str):
  """Sorts the variable names: (our path -> TF name for `model`, the other network's, the optimizer's).

  Raises for names no rule knows.
  """
  matched, optimizer, unknown = {}, [], []
  for name in shapes:
    found = _match(name)
    base, _, slot = name.rpartition("/")
    if found is not None:
      matched[name] = found
    elif name == STEP_VARIABLE or (slot in OPTIMIZER_SLOTS and _match(base) is not None):
      optimizer.append(name)  # the step, or a slot of a model variable
    else:
      unknown.append(name)  # a slot of anything else is as unknown as its variable
  if unknown:
    raise ElectraError(
      f"{len(unknown)} variable{'s are' if len(unknown) > 1 else ' is'} not part of an ELECTRA pretraining checkpoint of "
      f"google-research/electra (no rule maps them): {format_keys(unknown)}"
    )
  parts = _parts(model, matched)
  wanted, other, seen = {}, [], set()
  for name, (path, part) in sorted(matched.items()):
    if part not in parts:
      other.append(name)
      continue
    if path in wanted:
      raise ElectraError(f"{wanted[path]} and {name} both map to {path}")
    wanted[path] = name
    seen.add(part)
  if ("head", model) not in seen:
    other_model = "generator" if model == "discriminator" else "discriminator"
    raise ElectraError(
      f"the checkpoint has no {model} (no {_HEAD_RULES[model][0][0].split('/')[0]}/ variables); "
      f"convert --model {other_model}"
    )
  return wanted, sorted(other), sorted(optimizer)


def infer_config(
  shapes: Mapping[str, tuple], num_heads: int | None = None
) -> tuple[ElectraConfig, str]:
  """The architecture our param shapes (our path -> shape) imply, and how the head count was chosen.

  Args:
    shapes: our param path -> shape, for the encoder of one network.
    num_heads: the number of attention heads, when known.
  """
  prefix = "electra/embeddings/"

  def shape(path):
    if path not in shapes:
      raise ElectraError(f"the checkpoint lacks {path} (a TF variable of this network)")
    return tuple(shapes[path])

  vocab_size, embedding_size = shape(prefix + "word_embeddings/embedding")
  max_positions = shape(prefix + "position_embeddings/embedding")[0]
  type_vocab_size = shape(prefix + "token_type_embeddings/embedding")[0]
  layers = sorted(
    {int(m.group(1)) for p in shapes for m in [re.match(r"electra/encoder/layer_(\d+)/", p)] if m}
  )
  if not layers:
    raise ElectraError("the checkpoint has no encoder layers (encoder/layer_N/) for this network")
  if layers != list(range(len(layers))):
    missing = sorted(set(range(layers[-1] + 1)) - set(layers))
    raise ElectraError(f"the checkpoint's encoder lacks layers {missing} of 0..{layers[-1]}")
  layer = "electra/encoder/layer_0/"
  hidden_size = shape(layer + "attention/self/query/kernel")[1]
  intermediate_size = shape(layer + "intermediate/dense/kernel")[1]
  if num_heads is not None:
    heads_from = f"{_heads(num_heads)} (--num-heads)"
  else:
    num_heads = max(1, hidden_size // 64)
    heads_from = (
      f"{_heads(num_heads)}: max(1, hidden_size {hidden_size} // 64), the official "
      "code's default; pass --num-heads if the run set num_attention_heads"
    )
  if num_heads <= 0 or hidden_size % num_heads:
    raise ElectraError(
      f"{_heads(num_heads)} do not divide hidden_size {hidden_size}: pass --num-heads "
      f"with a divisor of {hidden_size}"
    )
  config = ElectraConfig(
    vocab_size=vocab_size,
    embedding_size=embedding_size,
    hidden_size=hidden_size,
    num_hidden_layers=len(layers),
    num_attention_heads=num_heads,
    intermediate_size=intermediate_size,
    hidden_act="gelu",  # modeling.BertConfig's default; no released model changes it
    max_position_embeddings=max_positions,
    type_vocab_size=type_vocab_size,
    layer_norm_eps=1e-12,  # tf.contrib.layers.layer_norm's
  )
  return config, heads_from


def tf_to_params(
  shapes: Mapping[str, tuple],
  read: Callable[[str], np.ndarray],
  model: str = "discriminator",
  num_heads: int | None = None,
) -> TFConversion:
  """Maps the variables of an official ELECTRA checkpoint onto our params for one network.

  Args:
    shapes: every TF variable name -> shape (the whole checkpoint).
    read: TF variable name -> its value (called only for the variables used).
    model: "discriminator" (head "pretraining") or "generator" (head "masked_lm").
    num_heads: attention heads; default `max(1, hidden_size // 64)` (see the module docstring).

  Returns:
    A `TFConversion`.

  Raises:
    ElectraError: unknown variables (listed), a network the checkpoint lacks,
      missing params or mis-shaped tensors.
  """
  if model not in MODELS:
    raise ElectraError(f"unknown model {model!r}: choose discriminator or generator")
  wanted, other, optimizer = _sort_variables(shapes, model)
  our_shapes = {path: tuple(shapes[name]) for path, name in wanted.items()}
  config, heads_from = infer_config(our_shapes, num_heads)
  head = MODELS[model]
  expected = expected_shapes(config, head)
  unexpected = sorted(wanted[p] for p in set(wanted) - set(expected))
  missing = sorted(set(expected) - set(wanted))
  misshaped = [
    f"{wanted[p]} {our_shapes[p]} (expected {expected[p]})"
    for p in sorted(set(wanted) & set(expected))
    if our_shapes[p] != tuple(expected[p])
  ]
  problems = []
  if unexpected:
    problems.append(
      f"variables the inferred architecture has no place for: {format_keys(unexpected)}"
    )
  if missing:
    problems.append(f"params the checkpoint lacks (electra-jax names): {format_keys(missing)}")
  if misshaped:
    problems.append(f"tensors of the wrong shape: {format_keys(misshaped, 6)}")
  if problems:
    raise ElectraError(
      f"the checkpoint's {model} does not fit one ELECTRA architecture "
      f"(inferred: {_describe(config)}): {'; '.join(problems)}"
    )
  flat = {path: _as_float32(read(name), name) for path, name in wanted.items()}
  return TFConversion(config, head, unflatten(flat), wanted, other, optimizer, heads_from)


def _as_float32(value: np.ndarray, name: str) -> np.ndarray:
  value = np.asarray(value)
  if not np.issubdtype(value.dtype, np.floating) and value.dtype.name != "bfloat16":
    raise ElectraError(f"{name} holds {value.dtype} values, not floats")
  return np.ascontiguousarray(value, dtype=np.float32)


def _heads(n: int) -> str:
  return f"{n} attention head{'' if n == 1 else 's'}"


def _describe(c: ElectraConfig) -> str:
  return (
    f"vocab {c.vocab_size}, embedding {c.embedding_size}, hidden {c.hidden_size}, "
    f"{c.num_hidden_layers} layers, {_heads(c.num_attention_heads)}, intermediate "
    f"{c.intermediate_size}, {c.max_position_embeddings} positions, {c.type_vocab_size} token types"
  )


# -- files -----------------------------------------------------------------------


def convert_from_tf(
  src: str | os.PathLike,
  out: str | os.PathLike,
  model: str = "discriminator",
  *,
  num_heads: int | None = None,
  vocab: str | os.PathLike | None = None,
) -> str:
  """Official TF ELECTRA checkpoint -> electra-jax checkpoint directory.

  Args:
    src: the checkpoint prefix (`dir/model.ckpt-1000000`), its `.index` file,
      or its directory (the `checkpoint` file's latest, else the only one).
    out: new electra-jax checkpoint directory (must not exist or be empty).
    model: "discriminator" or "generator".
    num_heads: attention heads; default `max(1, hidden_size // 64)`.
    vocab: a WordPiece `vocab.txt`, copied along as the tokenizer.

  Returns:
    The output directory.
  """
  from electra_jax import hf_files, pretrained, tf_checkpoint

  out = hf_files.prepare_output_dir(out)
  if vocab is not None and not os.path.isfile(vocab):
    raise ElectraError(f"--vocab {vocab} is not a file: pass the run's vocab.txt")
  ckpt = tf_checkpoint.TFCheckpoint(src)
  done = tf_to_params(ckpt.shapes(), ckpt.read, model, num_heads)
  log.info("%s: the %s, %s", ckpt.prefix, model, _describe(done.config))
  log.info("%s", done.heads_from)
  if done.optimizer:
    log.info(
      "skipped on purpose %d optimizer variables (global_step, Adam slots adam_m/adam_v)",
      len(done.optimizer),
    )
  if done.other_network:
    other = "generator" if model == "discriminator" else "discriminator"
    log.info(
      "left out %d variables of the %s (convert it with --model %s)",
      len(done.other_network),
      other,
      other,
    )
  extra = {
    "converted_from": {"tensorflow_checkpoint": os.path.abspath(ckpt.prefix), "model": model}
  }
  if STEP_VARIABLE in ckpt.entries and not ckpt.entries[STEP_VARIABLE].shape:
    extra["converted_from"]["global_step"] = int(ckpt.read(STEP_VARIABLE))
  with tempfile.TemporaryDirectory() as tokenizer_dir:
    if vocab is not None:
      _check_vocab(vocab, done.config.vocab_size)
      shutil.copyfile(vocab, os.path.join(tokenizer_dir, "vocab.txt"))
    else:
      log.info("no --vocab given: the checkpoint has no tokenizer files")
    return pretrained.save_pretrained(
      out, done.config, done.params, head=done.head, tokenizer_dir=tokenizer_dir, extra=extra
    )


def _check_vocab(vocab, vocab_size: int) -> None:
  with open(vocab, encoding="utf-8") as f:
    lines = sum(1 for _ in f)
  if lines > vocab_size:
    raise ElectraError(
      f"{vocab} has {lines} tokens but the checkpoint's word embeddings have {vocab_size} rows: "
      "not this model's vocabulary"
    )
  if lines < vocab_size:
    log.warning(
      "%s has %d tokens for %d word embeddings; the last %d ids have no token",
      vocab,
      lines,
      vocab_size,
      vocab_size - lines,
    )
