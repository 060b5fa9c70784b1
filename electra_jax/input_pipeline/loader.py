"""Streams prepared pretraining examples as fixed-shape numpy batches (grain).

Pipeline, per host (`process_index` of `process_count`):

  example indices 0..n_local-1            (host p owns global examples
    -> shuffle(seed)                       p, p + P, p + 2P, ...)
    -> repeat(num_epochs)                 (a new order each epoch)
    -> batch(batch_size, drop_remainder)
    -> read the batch's records from the array_record shards, decode, pad
    -> prefetch in threads

as a `grain.MapDataset` turned into an iterator. Everything is a function of
(seed, step), so the iterator position is one integer: `get_state()` returns
a small JSON-able dict for the checkpoint, and `set_state()` (or
`PretrainingDataset.iterator(state)`) resumes so that the next batch is
exactly the one that would have come next. As in the official ELECTRA input
function (repeat, then batch), a batch may straddle two epochs.

By default every host gets the same number of examples, floor(N / P), so
hosts stay in lockstep; the last N mod P examples are left out (at most
P - 1). `even_hosts=False` gives host p every example with index = p mod P
instead.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from electra_jax.errors import ElectraError
from electra_jax.input_pipeline import pretraining_data
from electra_jax.input_pipeline.prepare import load_manifest

FEATURES = ("input_ids", "input_mask", "segment_ids")


class PretrainingDataset:
  """Batches of a prepared pretraining dataset for one host."""

  def __init__(
    self,
    data_dir: str | os.PathLike,
    batch_size: int,
    seed: int = 0,
    *,
    shuffle: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    even_hosts: bool = True,
    num_threads: int = 2,
    prefetch_batches: int = 8,
  ):
    """Opens a directory written by `prepare_pretraining_data`.

    Args:
      data_dir: the prepared dataset.
      batch_size: examples per batch on this host.
      seed: shuffle seed (the same seed gives the same batches).
      shuffle: global shuffle; False reads examples in stored order.
      process_index: this host's index (default `jax.process_index()`).
      process_count: number of hosts (default `jax.process_count()`).
      num_epochs: passes over the data; None repeats forever.
      drop_remainder: drop a final partial batch (keeps shapes fixed).
      even_hosts: give every host floor(N / P) examples (see module doc).
      num_threads: reader threads.
      prefetch_batches: batches read ahead.
    """
    self.data_dir = os.fspath(data_dir)
    self.manifest = load_manifest(self.data_dir)
    if process_index is None or process_count is None:
      import jax

      process_index = jax.process_index() if process_index is None else process_index
      process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
      raise ElectraError(f"process_index={process_index} is not in [0, {process_count})")
    if batch_size < 1:
      raise ElectraError(f"batch_size must be >= 1, not {batch_size}")
    if not 0 <= seed < 2**32:
      raise ElectraError(f"seed must be in [0, 2**32), not {seed}")
    if num_epochs is not None and num_epochs < 1:
      raise ElectraError(f"num_epochs must be >= 1 or None, not {num_epochs}")
    self.batch_size = batch_size
    self.seed = seed
    self.shuffle = shuffle
    self.process_index = process_index
    self.process_count = process_count
    self.num_epochs = num_epochs
    self.drop_remainder = drop_remainder
    self.max_seq_length = self.manifest["max_seq_length"]
    self._dtype = np.dtype(self.manifest["token_dtype"])
    self._pad_id = self.manifest["tokenizer"]["special_ids"]["pad"]
    self._num_threads = num_threads
    self._prefetch = prefetch_batches
    total = self.manifest["num_examples"]
    if even_hosts:
      self.num_local_examples = total // process_count
    else:
      self.num_local_examples = len(range(process_index, total, process_count))
    if self.num_local_examples < batch_size and drop_remainder:
      raise ElectraError(
        f"{self.data_dir} gives host {process_index} only {self.num_local_examples} examples, fewer "
        f"than batch_size={batch_size}: use a smaller batch or more data"
      )
    self._source = None

  @property
  def steps_per_epoch(self) -> int:
    """Full batches in one pass over this host's examples."""
    return self.num_local_examples // self.batch_size

  @property
  def dataset_id(self) -> str:
    """Hash of what the batches depend on (data, order, batching)."""
    m = self.manifest
    key = (
      f"{m['tokenizer']['fingerprint']}|{m['num_examples']}|{m['seed']}|{m['max_seq_length']}|"
      f"{[s['num_examples'] for s in m['shards']]}"
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]

  def check_compatible(
    self,
    tokenizer=None,
    max_seq_length: int | None = None,
    max_position_embeddings: int | None = None,
    vocab_size: int | None = None,
  ) -> None:
    """Raises a one-line `ElectraError` when the data does not fit the run.

    Args:
      tokenizer: the configured tokenizer (its fingerprint must match).
      max_seq_length: the configured sequence length (must match).
      max_position_embeddings: the model's position table (must be >= the
        data's sequence length).
      vocab_size: the model's vocab size (must cover the tokenizer's ids).
    """
    m = self.manifest
    if tokenizer is not None and tokenizer.fingerprint != m["tokenizer"]["fingerprint"]:
      raise ElectraError(
        f"{self.data_dir} was prepared with tokenizer {m['tokenizer']['fingerprint']} but the "
        f"configured tokenizer is {tokenizer.fingerprint}: re-run prepare-pretraining with this "
        "tokenizer or configure the one the data was made with"
      )
    if max_seq_length is not None and max_seq_length != m["max_seq_length"]:
      raise ElectraError(
        f"{self.data_dir} holds examples of length {m['max_seq_length']} but max_seq_length="
        f"{max_seq_length} is configured: make them agree (or prepare the data again)"
      )
    if max_position_embeddings is not None and m["max_seq_length"] > max_position_embeddings:
      raise ElectraError(
        f"{self.data_dir} holds examples of length {m['max_seq_length']}, more than the model's "
        f"max_position_embeddings={max_position_embeddings}: prepare shorter examples"
      )
    if vocab_size is not None and m["tokenizer"]["vocab_size"] > vocab_size:
      raise ElectraError(
        f"{self.data_dir} uses {m['tokenizer']['vocab_size']} token ids but the model's vocab_size "
        f"is {vocab_size}: set vocab_size={m['tokenizer']['vocab_size']}"
      )

  def _data_source(self):
    if self._source is None:
      import grain

      paths = [os.path.join(self.data_dir, s["file"]) for s in self.manifest["shards"]]
      paths = [p for p, s in zip(paths, self.manifest["shards"]) if s["num_examples"]]
      self._source = grain.sources.ArrayRecordDataSource(paths)
      if len(self._source) != self.manifest["num_examples"]:
        raise ElectraError(
          f"{self.data_dir} holds {len(self._source)} examples but its manifest says "
          f"{self.manifest['num_examples']}: the dataset is damaged, prepare it again"
        )
    return self._source

  def _read_batch(self, local_indices) -> dict[str, np.ndarray]:
    source = self._data_source()
    # Host p owns the global examples p, p + P, p + 2P, ...
    keys = [int(i) * self.process_count + self.process_index for i in np.atleast_1d(local_indices)]
    getitems = getattr(source, "__getitems__", None)
    records = getitems(keys) if getitems is not None else [source[k] for k in keys]
    return pretraining_data.decode_batch(records, self.max_seq_length, self._dtype, self._pad_id)

  def _grain_dataset(self):
    import grain

    ds = grain.MapDataset.range(self.num_local_examples)
    if self.shuffle:
      ds = ds.shuffle(seed=self.seed)
    ds = ds.repeat(self.num_epochs)
    ds = ds.batch(self.batch_size, drop_remainder=self.drop_remainder)
    ds = ds.map(self._read_batch)
    options = grain.ReadOptions(num_threads=self._num_threads, prefetch_buffer_size=self._prefetch)
    return ds.to_iter_dataset(options)

  def iterator(self, state: dict | None = None) -> PretrainingIterator:
    """A fresh iterator, positioned at `state` (from `get_state`) if given."""
    it = PretrainingIterator(self, iter(self._grain_dataset()))
    if state is not None:
      it.set_state(state)
    return it

  def __iter__(self) -> PretrainingIterator:
    return self.iterator()


class PretrainingIterator:
  """Iterator over batches with a JSON-able, restorable position."""

  def __init__(self, dataset: PretrainingDataset, grain_iterator):
    self._dataset = dataset
    self._it = grain_iterator

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._it)

  def _identity(self) -> dict:
    d = self._dataset
    return {
      "dataset_id": d.dataset_id,
      "batch_size": d.batch_size,
      "seed": d.seed,
      "shuffle": d.shuffle,
      "process_index": d.process_index,
      "process_count": d.process_count,
      "num_epochs": d.num_epochs,
      "num_local_examples": d.num_local_examples,
      "drop_remainder": d.drop_remainder,
    }

  def get_state(self) -> dict:
    """Position of the iterator: a small dict of ints and strings (JSON-able)."""
    return {**self._identity(), "grain": self._it.get_state()}

  def set_state(self, state: dict) -> None:
    """Moves to a position from `get_state` (of the same data and settings)."""
    expected = self._identity()
    for key, value in expected.items():
      if key in state and state[key] != value:
        raise ElectraError(
          f"cannot resume the data iterator: the checkpoint has {key}={state[key]!r} but this run "
          f"has {key}={value!r}; use the same data and input settings to resume"
        )
    if "grain" not in state:
      raise ElectraError("cannot resume the data iterator: the saved state has no 'grain' entry")
    self._it.set_state(state["grain"])
