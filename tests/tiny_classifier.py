"""A tiny saved classifier for the predict, export and serving tests, and its reference.

`save_tiny` writes a randomly initialised sequence classifier with
`save_pretrained` (the bundled BERT vocabulary); `reference_logits` runs one
unpadded `model.apply` per example, so comparing a predictor against it
covers bucketing, batch padding, sorting and re-ordering. The `classifier`
and `regressor` fixtures in conftest.py are built with these.
"""

import json
import pathlib

import jax
import numpy as np

from electra_jax import tokenization
from electra_jax.model import build_model, init_params
from electra_jax.pretrained import from_pretrained, save_pretrained

REPO = pathlib.Path(__file__).resolve().parent.parent
VOCAB_DIR = REPO / "electra_jax" / "sample_data"
LABELS = ["neg", "neu", "pos"]
MAX_LEN = 24
LONG = " ".join(["wonderful"] * 60)  # > MAX_LEN tokens


def save_tiny(path, config, num_labels, extra, seed=0):
  """Saves a random classifier of `config`'s shape (vocabulary: the bundled one) at `path`."""
  vocab_size = len(open(VOCAB_DIR / "vocab.txt", encoding="utf-8").read().splitlines())
  config = config.replace(vocab_size=vocab_size, max_position_embeddings=64)
  model = build_model(config, "sequence_classification", num_labels=num_labels)
  params = init_params(model, jax.random.key(seed))
  # Random init gives near-uniform outputs; scale the output layer so labels differ.
  out_proj = params["classifier"]["out_proj"]
  out_proj["kernel"] = out_proj["kernel"] * 50.0
  save_pretrained(
    path,
    config,
    params,
    head="sequence_classification",
    head_kwargs={"num_labels": num_labels},
    tokenizer_dir=VOCAB_DIR,
    extra=extra,
  )
  return str(path)


def reference_logits(path, texts, pairs=None, max_len=MAX_LEN):
  """One unpadded forward per example: no batching, bucketing or sorting."""
  model, params = from_pretrained(path)
  tok = tokenization.load_tokenizer(path)
  out = []
  for i, text in enumerate(texts):
    enc = tok.encode(text, None if pairs is None else pairs[i], max_length=max_len)
    ids = np.array([enc.ids], np.int32)
    logits = model.apply({"params": params}, ids, token_type_ids=np.array([enc.type_ids]))
    out.append(np.asarray(logits)[0])
  return np.stack(out)


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def read_jsonl(path):
  return [json.loads(line) for line in open(path, encoding="utf-8")]
