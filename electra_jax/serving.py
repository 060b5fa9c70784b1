"""Serving runtime: batched classification with a live or an exported model.

`Predictor` turns texts into labels and probabilities (or regression scores)
given any `forward(input_ids, attention_mask, token_type_ids) -> logits`
function: the jitted Flax model (`electra_jax.predict.load_predictor`) or the
`jax.export` artifact written by `electra-jax export`, loaded here by
`load_exported`:

    predictor = electra_jax.serving.load_exported("exported/")
    predictor.predict(["a gripping film", "dull"])
    # [{"label": "1", "probabilities": {"0": 0.1, "1": 0.9}}, ...]

This module needs only jax, numpy, `electra_jax.tokenization` and
`electra_jax.inference` (jax and numpy only): it imports no model, training
or checkpoint code, so a serving image can ship without
flax, optax or orbax.

Shapes are fixed so that XLA compiles a handful of programs, not one per
batch: the batch is padded to `batch_size` rows and the sequence length to a
bucket (powers of two from 16 up to `max_seq_length`; an export made with
`--fixed-length` takes `max_seq_length` only). Rows are run sorted by length so
short texts are not padded to the longest one, and results come back in the
caller's order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from electra_jax.errors import ElectraError
from electra_jax.inference import bucket_length, microbatched  # noqa: F401 (bucket_length: public here too)

EXPORT_FILE = "model.jaxexport"
PARAMS_FILE = "params.npz"
SERVING_CONFIG = "serving_config.json"
EXPORT_FORMAT = "electra-jax-export"
EXPORT_VERSION = 1
EMPTY_INPUT = "empty input"

Forward = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class Encoded(NamedTuple):
  """One tokenized example, unpadded."""

  input_ids: np.ndarray  # (length,) int32
  token_type_ids: np.ndarray  # (length,) int32
  truncated: bool  # the text was longer than max_seq_length


def softmax(logits: np.ndarray) -> np.ndarray:
  """Row-wise softmax in float64 (stable; the same for live and exported)."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def is_export_dir(path: str | os.PathLike) -> bool:
  """Whether `path` holds an `electra-jax export` artifact."""
  path = os.fspath(path)
  return os.path.isfile(os.path.join(path, SERVING_CONFIG)) and os.path.isfile(
    os.path.join(path, EXPORT_FILE)
  )


class Predictor:
  """Texts -> labels and probabilities, or regression scores.

  Attributes:
    tokenizer: an `electra_jax.tokenization` tokenizer.
    label_map: label strings in id order; None for regression.
    num_labels: width of the logits (1 for regression).
    max_seq_length: longer inputs are truncated to this many tokens.
    task: the task name stored with the model, if any.
    text_columns: the input field names the model was trained on (one, or
      two for sentence pairs), if known; input readers default to them.
    batch_size: rows per forward call (the last batch is padded).
    fixed_length: pad every batch to `max_seq_length` (what an exported
      function with a fixed sequence length needs) instead of bucketing.
  """

  def __init__(
    self,
    forward: Forward,
    tokenizer: Any,
    *,
    num_labels: int,
    max_seq_length: int,
    label_map: Sequence[str] | None = None,
    task: str | None = None,
    text_columns: Sequence[str] = (),
    batch_size: int = 64,
    fixed_length: bool = False,
    regression_range: Sequence[float] | None = None,
  ):
    if batch_size < 1:
      raise ElectraError(f"batch size must be a positive integer, got {batch_size}")
    if max_seq_length < 2:
      raise ElectraError(f"max_seq_length must be at least 2, got {max_seq_length}")
    if num_labels > 1:
      label_map = list(label_map) if label_map else [str(i) for i in range(num_labels)]
      if len(label_map) != num_labels:
        raise ElectraError(
          f"the label map has {len(label_map)} labels but the model outputs {num_labels}: "
          "the checkpoint's metadata is inconsistent"
        )
      label_map = [str(x) for x in label_map]
    else:
      label_map = None
    self.forward = forward
    # (min, max) when the model was trained on targets scaled to (y - min) / max
    # (the official recipe's STS-B); scores are mapped back to the label scale.
    self.regression_range = tuple(regression_range) if regression_range else None
    self.tokenizer = tokenizer
    self.num_labels = int(num_labels)
    self.label_map = label_map
    self.max_seq_length = int(max_seq_length)
    self.task = task
    self.text_columns = tuple(text_columns or ())
    self.batch_size = int(batch_size)
    self.fixed_length = fixed_length

  @property
  def is_regression(self) -> bool:
    return self.num_labels == 1

  # -- tokenization ------------------------------------------------------------

  def encode(
    self, texts: Sequence[str], pairs: Sequence[str | None] | None = None
  ) -> list[Encoded]:
    """Tokenizes `texts` (and `pairs`), truncating to `max_seq_length`.

    Each text is first encoded in full, so that truncation can be reported;
    only the over-long ones are encoded a second time, with the tokenizer's
    own truncation (longest-first for pairs, as in training). A `None` pair
    is a single-segment input.
    """
    texts = list(texts)
    if pairs is None:
      return self._encode_group(texts, None)
    pairs = list(pairs)
    if len(pairs) != len(texts):
      raise ElectraError(f"got {len(texts)} texts but {len(pairs)} text pairs")
    out: list[Encoded | None] = [None] * len(texts)
    single = [i for i, p in enumerate(pairs) if p is None]
    double = [i for i, p in enumerate(pairs) if p is not None]
    for group, group_pairs in (
      (single, None),
      (double, [pairs[i] for i in double]),
    ):
      for i, e in zip(group, self._encode_group([texts[i] for i in group], group_pairs)):
        out[i] = e
    return out

  def _encode_group(self, texts: list[str], pairs: list[str] | None) -> list[Encoded]:
    if not texts:
      return []
    full = self.tokenizer.encode_batch(texts, pairs)
    lengths = np.asarray(full["attention_mask"]).sum(axis=1)
    ids, types = np.asarray(full["input_ids"]), np.asarray(full["token_type_ids"])
    out = [Encoded(ids[i, :n], types[i, :n], False) for i, n in enumerate(lengths)]
    long_rows = [i for i, n in enumerate(lengths) if n > self.max_seq_length]
    if long_rows:
      cut = self.tokenizer.encode_batch(
        [texts[i] for i in long_rows],
        None if pairs is None else [pairs[i] for i in long_rows],
        max_length=self.max_seq_length,
      )
      cut_len = np.asarray(cut["attention_mask"]).sum(axis=1)
      cut_ids, cut_types = np.asarray(cut["input_ids"]), np.asarray(cut["token_type_ids"])
      for j, i in enumerate(long_rows):
        n = cut_len[j]
        out[i] = Encoded(cut_ids[j, :n], cut_types[j, :n], True)
    return out

  # -- forward -----------------------------------------------------------------

  def logits(self, encoded: Sequence[Encoded], progress: Any = None) -> np.ndarray:
    """Runs the model on tokenized rows; returns (N, num_labels) float32 logits.

    Args:
      encoded: rows from `encode`.
      progress: an optional tqdm-like object; `update(n)` is called per batch.
    """
    n = len(encoded)
    result = np.zeros((n, self.num_labels), np.float32)
    order = sorted(range(n), key=lambda i: len(encoded[i].input_ids))
    pad_id = int(getattr(self.tokenizer, "pad_id", 0) or 0)
    for start in range(0, n, self.batch_size):
      rows = order[start : start + self.batch_size]
      longest = max(len(encoded[i].input_ids) for i in rows)
      length = (
        self.max_seq_length if self.fixed_length else bucket_length(longest, self.max_seq_length)
      )
      ids = np.full((self.batch_size, length), pad_id, np.int32)
      mask = np.zeros((self.batch_size, length), np.int32)
      types = np.zeros((self.batch_size, length), np.int32)
      # Filler rows attend to one token so that no row is fully masked.
      mask[len(rows) :, 0] = 1
      for r, i in enumerate(rows):
        e = encoded[i]
        ids[r, : len(e.input_ids)] = e.input_ids
        types[r, : len(e.input_ids)] = e.token_type_ids
        mask[r, : len(e.input_ids)] = 1
      out = np.asarray(self.forward(ids, mask, types), np.float32)
      result[rows] = out[: len(rows)]
      if progress is not None:
        progress.update(len(rows))
    return result

  def rows_from_logits(self, logits: np.ndarray) -> list[dict[str, Any]]:
    """Labels and probabilities (or scores) for each row of `logits`."""
    if self.is_regression:
      low, high = self.regression_range or (0.0, 1.0)
      return [{"score": float(x * high + low)} for x in np.asarray(logits)[:, 0]]
    probs = softmax(logits)
    labels = self.label_map
    return [
      {
        "label": labels[int(np.argmax(p))],
        "probabilities": {label: float(q) for label, q in zip(labels, p)},
      }
      for p in probs
    ]

  def predict(
    self, texts: Sequence[str], pairs: Sequence[str] | None = None, progress: Any = None
  ) -> list[dict[str, Any]]:
    """Predicts each text (or text pair), in the order given.

    Args:
      texts: the inputs.
      pairs: second segments for sentence-pair models (same length as texts;
        a `None` entry is a single-segment input).
      progress: optional tqdm-like object, advanced per batch.

    Returns:
      One dict per input: `{"label", "probabilities": {label: p}}` for a
      classifier, `{"score"}` for regression; `"truncated": True` added when
      the input was cut to `max_seq_length`; an input that is empty or only
      whitespace (both segments, for a pair) gives `{"error": "empty input"}`.
    """
    texts = list(texts)
    pairs = None if pairs is None else list(pairs)
    if pairs is not None and len(pairs) != len(texts):
      raise ElectraError(f"got {len(texts)} texts but {len(pairs)} text pairs")
    keep = [
      i
      for i, t in enumerate(texts)
      if (t or "").strip() or (pairs is not None and (pairs[i] or "").strip())
    ]
    encoded = self.encode(
      [texts[i] or "" for i in keep], None if pairs is None else [pairs[i] for i in keep]
    )
    rows = self.rows_from_logits(self.logits(encoded, progress))
    out: list[dict[str, Any]] = [{"error": EMPTY_INPUT} for _ in texts]
    for i, e, row in zip(keep, encoded, rows):
      if e.truncated:
        row["truncated"] = True
      out[i] = row
    if progress is not None and len(keep) < len(texts):
      progress.update(len(texts) - len(keep))
    return out


# -- the exported artifact ------------------------------------------------------


def read_serving_config(path: str | os.PathLike) -> dict[str, Any]:
  """The validated `serving_config.json` of an export directory."""
  file = os.path.join(os.fspath(path), SERVING_CONFIG)
  try:
    with open(file, encoding="utf-8") as f:
      cfg = json.load(f)
  except FileNotFoundError:
    raise ElectraError(
      f"no {SERVING_CONFIG} in {path}: not an `electra-jax export` directory"
    ) from None
  except (OSError, json.JSONDecodeError) as e:
    raise ElectraError(f"cannot read {file}: {e}") from None
  if not isinstance(cfg, dict) or cfg.get("format") != EXPORT_FORMAT:
    raise ElectraError(f"{file} is not an electra-jax export description")
  if cfg.get("version") != EXPORT_VERSION:
    raise ElectraError(
      f"{file} has version {cfg.get('version')!r}; this electra-jax reads version {EXPORT_VERSION}"
    )
  for key in ("num_labels", "max_seq_length"):
    if not isinstance(cfg.get(key), int):
      raise ElectraError(f"{file} lacks an integer {key!r}: re-run `electra-jax export`")
  return cfg


def load_params_npz(file: str) -> dict[str, np.ndarray]:
  """Reads the flat `{"a/b/c": array}` params written by export."""
  try:
    with np.load(file, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except (OSError, ValueError) as e:
    raise ElectraError(f"cannot read {file}: {e}") from None


def load_exported_call(path: str | os.PathLike) -> tuple[Callable, dict[str, Any]]:
  """`(call, serving_config)` of an export directory: `call(ids, mask, types)` returns every output.

  The outputs are the exported function's dict (`logits`, `probabilities`
  for classifiers; `start_logits`, `end_logits` or the official QA head's
  beams for question answering), computed by a jit around `Exported.call`
  (one compilation per input shape).

  Raises:
    ElectraError: the directory is incomplete or was written for another
      platform or an incompatible jax.
  """
  import jax

  path = os.fspath(path)
  if not os.path.isdir(path):
    raise ElectraError(f"{path} does not exist or is not a directory")
  cfg = read_serving_config(path)
  try:
    with open(os.path.join(path, EXPORT_FILE), "rb") as f:
      exported = jax.export.deserialize(bytearray(f.read()))
  except FileNotFoundError:
    raise ElectraError(f"no {EXPORT_FILE} in {path}: the export is incomplete") from None
  except Exception as e:  # flatbuffer / version errors come in several types
    raise ElectraError(f"cannot deserialize {os.path.join(path, EXPORT_FILE)}: {e}") from None
  platform = jax.default_backend()
  if platform not in exported.platforms and not (
    platform == "gpu" and {"cuda", "rocm"} & set(exported.platforms)
  ):
    raise ElectraError(
      f"{path} was exported for {', '.join(exported.platforms)} but this machine runs {platform}: "
      "re-export with `--platforms` including it"
    )
  # On CPU a large batch runs as cache-sized micro-batches, as the live model's
  # predict does (electra_jax.inference; the batch dimension is symbolic).
  if not cfg.get("params_file"):
    run = jax.jit(microbatched(lambda _, *inputs: exported.call(*inputs)))
    return (lambda ids, mask, types: run((), ids, mask, types)), cfg
  params = load_params_npz(os.path.join(path, cfg["params_file"]))
  params = {k: jax.device_put(v) for k, v in params.items()}
  run = jax.jit(microbatched(exported.call))
  return (lambda ids, mask, types: run(params, ids, mask, types)), cfg


def load_exported(path: str | os.PathLike, batch_size: int = 64) -> Predictor:
  """Loads an `electra-jax export` directory as a `Predictor`.

  Uses only jax, numpy and the tokenizer: the model's code is not needed,
  the computation comes from the serialized StableHLO in `model.jaxexport`.

  Args:
    path: the directory `electra-jax export --out` wrote.
    batch_size: rows per call (any size works: the batch is symbolic; one
      compilation per length bucket).

  Returns:
    A `Predictor` whose outputs equal the live model's.

  Raises:
    ElectraError: the directory is incomplete or was written for another
      platform or an incompatible jax.
  """
  from electra_jax import tokenization

  call, cfg = load_exported_call(path)

  def forward(ids, mask, types):
    return call(ids, mask, types)["logits"]

  return Predictor(
    forward,
    tokenization.load_tokenizer(os.fspath(path)),
    num_labels=cfg["num_labels"],
    max_seq_length=cfg["max_seq_length"],
    label_map=cfg.get("label_map"),
    task=cfg.get("task"),
    text_columns=cfg.get("text_columns") or (),
    batch_size=batch_size,
    fixed_length=bool(cfg.get("fixed_length")),
    regression_range=cfg.get("regression_range"),
  )
