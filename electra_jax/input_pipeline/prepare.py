"""Prepare once, stream many times: text -> sharded array_record examples.

`prepare_pretraining_data` reads documents from the sources, tokenizes them
and packs them with the official ELECTRA example builder, in parallel worker
processes, and writes

  OUT/pretrain-00000-of-0000N.array_record ...   one record per example
  OUT/tokenizer/                                 the tokenizer (load_tokenizer reads it)
  OUT/manifest.json                              what is in there (below)

Work is cut into *units*: consecutive documents totalling at least
`UNIT_CHARS` characters. Each unit is built by its own `ExampleBuilder` seeded
with (seed, unit index), so the examples depend on the corpus and the seed
only, never on the number of worker processes. Example i goes to shard
i mod num_shards (round-robin, as the official script does).

Everything is written into a hidden temporary directory next to OUT and
renamed to OUT at the very end, manifest last: an interrupted run leaves no
directory that looks finished (the loader requires manifest.json).
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence

from electra_jax import fileio
from electra_jax.errors import ElectraError
from electra_jax.input_pipeline import pretraining_data, sources

MANIFEST = "manifest.json"
FORMAT = "electra-jax-pretraining"
VERSION = 1
UNIT_CHARS = 200_000
AUTO_INLINE_BYTES = 8 * 2**20
SHARD_PATTERN = "pretrain-{:05d}-of-{:05d}.array_record"

_worker_state = {}


def _init_worker(tokenizer, max_length, seed, dtype_str, ignore_sigint=False):
  if ignore_sigint:
    # Ctrl-C is handled once, by the parent (which stops the pool and cleans
    # up), not as a traceback from every worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
  # Worker processes each use one core; the Rust thread pool would fight them.
  os.environ["TOKENIZERS_PARALLELISM"] = "false"
  _worker_state.update(tokenizer=tokenizer, max_length=max_length, seed=seed, dtype=dtype_str)


def _process_unit(unit_index: int, documents: list[list[str]]) -> dict:
  """Tokenizes and packs one unit of documents (runs in a worker)."""
  tokenizer = _worker_state["tokenizer"]
  lines = [line for doc in documents for line in doc]
  ids = tokenizer.encode_ids_batch(lines)
  tokenized, pos = [], 0
  for doc in documents:
    tokenized.append(ids[pos : pos + len(doc)])
    pos += len(doc)
  # An int seed from (seed, unit): distinct streams, stable across runs.
  rng = random.Random(_worker_state["seed"] * 1_000_003 + unit_index)
  examples = pretraining_data.build_examples(
    tokenized, _worker_state["max_length"], tokenizer.cls_id, tokenizer.sep_id, rng
  )
  dtype = _worker_state["dtype"]
  records = [pretraining_data.encode_record(e, n_a, dtype) for e, n_a in examples]
  return {
    "records": records,
    "num_documents": len(documents),
    "num_sentences": len(lines),
    "num_text_tokens": sum(len(x) for x in ids),
    "num_tokens": sum(len(e) for e, _ in examples),
    "num_single_segment": sum(n_a == len(e) for e, n_a in examples),
  }


def _units(docs: Iterable[list[str]], unit_chars: int) -> Iterator[list[list[str]]]:
  unit, size = [], 0
  for doc in docs:
    unit.append(doc)
    size += sum(len(line) for line in doc)
    if size >= unit_chars:
      yield unit
      unit, size = [], 0
  if unit:
    yield unit


def _run_units(units, num_workers, init_args, window):
  """Yields unit results in order, from a bounded pool of spawned workers."""
  if num_workers <= 1:
    _init_worker(*init_args)
    os.environ.pop("TOKENIZERS_PARALLELISM", None)  # inline: let Rust use all cores
    for i, unit in enumerate(units):
      yield _process_unit(i, unit)
    return
  # spawn, not fork: the caller may be a JAX process (fork after threads is unsafe).
  ctx = multiprocessing.get_context("spawn")
  pool = ctx.Pool(num_workers, initializer=_init_worker, initargs=(*init_args, True))
  try:
    pending = collections.deque()
    for i, unit in enumerate(units):
      pending.append(pool.apply_async(_process_unit, (i, unit)))
      if len(pending) >= window:
        yield pending.popleft().get()
    while pending:
      yield pending.popleft().get()
    pool.close()
  finally:
    pool.terminate()
    pool.join()


def _auto_workers(srcs) -> int:
  """Worker processes for `num_workers=None`.

  Starting spawned workers costs 1-2 s; below ~8 MB of local text
  one process is faster (the Rust tokenizer still uses every core).
  """
  local_bytes = 0
  for src in srcs:
    if not isinstance(src, sources.LocalTextSource):
      return os.cpu_count() or 1
    local_bytes += sum(os.path.getsize(f) for f in src.files)
  return 1 if local_bytes < AUTO_INLINE_BYTES else (os.cpu_count() or 1)


def _check_out_dir(out_dir: str, overwrite: bool) -> None:
  if os.path.exists(out_dir):
    if not os.path.isdir(out_dir):
      raise ElectraError(f"output {out_dir} exists and is not a directory")
    if os.listdir(out_dir) and not overwrite:
      raise ElectraError(
        f"output {out_dir} already exists and is not empty: choose a new directory or pass --overwrite"
      )
  parent = os.path.dirname(out_dir) or "."
  if not os.path.isdir(parent):
    raise ElectraError(f"parent directory of {out_dir} does not exist")


def prepare_pretraining_data(
  inputs: Sequence[str] | Sequence[object],
  tokenizer,
  max_seq_length: int,
  out_dir: str | os.PathLike,
  *,
  seed: int = 0,
  num_shards: int = 4,
  num_workers: int | None = None,
  overwrite: bool = False,
  max_position_embeddings: int | None = None,
  tfds_data_dir: str | None = None,
  layout: str = "auto",
  sentences: str = "auto",
  encoding_errors: str = "strict",
  progress: bool = True,
) -> dict:
  """Tokenizes and packs a corpus into sharded array_record files + manifest.

  Args:
    inputs: local files/globs/directories and "tfds:NAME[:SPLIT]" specs, or
      source objects (`sources.LocalTextSource`, `sources.TfdsSource`).
    tokenizer: a `tokenization.Tokenizer` or a path for `load_tokenizer`.
    max_seq_length: example length (128 for small, 512 for base/large).
    out_dir: output directory (must not exist, or be empty, unless
      `overwrite`).
    seed: seed of the example builder's random draws.
    num_shards: number of array_record files.
    num_workers: worker processes; 1 runs inline. None: inline for less
      than 8 MB of local text (start-up would dominate), else one per core.
    overwrite: replace an existing `out_dir` (only once the new one is done).
    max_position_embeddings: the model's position table size; a longer
      `max_seq_length` is an error.
    tfds_data_dir: data_dir for tfds inputs.
    layout: local-file layout: "auto", "plain" or "wikitext".
    sentences: "auto", "split" or "lines" (see `sources.LocalTextSource`).
    encoding_errors: "strict" or "replace" for invalid UTF-8.
    progress: show a tqdm progress bar and print a summary.

  Returns:
    the manifest (also written to `out_dir/manifest.json`).
  """
  from electra_jax import tokenization

  if not isinstance(tokenizer, tokenization.Tokenizer):
    tokenizer = tokenization.load_tokenizer(tokenizer)
  _check_sizes(max_seq_length, max_position_embeddings, num_shards)
  out_dir = os.path.abspath(os.fspath(out_dir))
  _check_out_dir(out_dir, overwrite)
  srcs = _sources(inputs, tfds_data_dir, layout, sentences, encoding_errors)
  if num_workers is None:
    num_workers = _auto_workers(srcs)
  dtype = pretraining_data.token_dtype(tokenizer.vocab_size, max_seq_length)

  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=os.path.dirname(out_dir))
  start = time.perf_counter()
  try:
    names = [SHARD_PATTERN.format(i, num_shards) for i in range(num_shards)]
    docs = (doc for src in srcs for doc in src)
    init_args = (tokenizer, max_seq_length, seed, dtype.str)
    results = _run_units(_units(docs, UNIT_CHARS), num_workers, init_args, 3 * num_workers)
    shard_counts, totals = _write_shards(results, [os.path.join(tmp, n) for n in names], progress)
    n_written = sum(shard_counts)
    elapsed = time.perf_counter() - start
    if n_written == 0:
      described = ", ".join(json.dumps(s.describe()) for s in srcs)
      raise ElectraError(f"the corpus is empty: no text found in {described}")
    manifest = {
      **_manifest_head(tokenizer, dtype, max_seq_length, seed),
      "sources": [s.describe() for s in srcs],
      "num_examples": n_written,
      **{key: totals[key] for key in _TOTALS},
      "shards": [{"file": n, "num_examples": c} for n, c in zip(names, shard_counts)],
      "prepare_seconds": round(elapsed, 3),
      "num_workers": num_workers,
    }
    # The tokenizer travels with the data, so `pretrain` can use the data
    # alone (its fingerprint is also in the manifest).
    tokenizer.save(os.path.join(tmp, "tokenizer"))
    with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
      json.dump(manifest, f, indent=2)
    _publish(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if progress:
    print(
      f"wrote {n_written:,} examples ({totals['num_tokens']:,} tokens, "
      f"{totals['num_documents']:,} documents) to {out_dir} in {elapsed:.1f} s: "
      f"{n_written / elapsed:,.0f} examples/s, {totals['num_text_tokens'] / elapsed:,.0f} tokens/s"
    )
  return manifest


def _manifest_head(tokenizer, dtype, max_seq_length: int, seed: int) -> dict:
  """The manifest's fields that describe the format, before the counts."""
  return {
    "format": FORMAT,
    "version": VERSION,
    "record_format": "little-endian [n_a, token ids...] without padding, one record per example",
    "token_dtype": dtype.str,
    "max_seq_length": max_seq_length,
    "seed": seed,
    "tokenizer": {
      "kind": tokenizer.kind,
      "fingerprint": tokenizer.fingerprint,
      "vocab_size": tokenizer.vocab_size,
      "special_ids": tokenizer.special_ids,
    },
    "builder": {
      "single_segment_prob": pretraining_data.SINGLE_SEGMENT_PROB,
      "short_target_prob": pretraining_data.SHORT_TARGET_PROB,
      "unit_chars": UNIT_CHARS,
    },
  }


# The per-unit counts summed into the manifest, in its order.
_TOTALS = (
  "num_tokens",
  "num_text_tokens",
  "num_documents",
  "num_sentences",
  "num_single_segment",
)


def _check_sizes(max_seq_length: int, max_position_embeddings: int | None, num_shards: int):
  if max_seq_length < pretraining_data.MIN_TARGET_LENGTH:
    raise ElectraError(
      f"max_seq_length={max_seq_length} is too short: use at least 5 (128 is usual)"
    )
  if max_position_embeddings is not None and max_seq_length > max_position_embeddings:
    raise ElectraError(
      f"max_seq_length={max_seq_length} exceeds the model's max_position_embeddings="
      f"{max_position_embeddings}: lower --max-seq-length"
    )
  if num_shards < 1:
    raise ElectraError(f"num_shards must be >= 1, not {num_shards}")


def _sources(inputs, tfds_data_dir, layout, sentences, encoding_errors) -> list:
  """Source objects for `inputs` (path/spec strings, or source objects as they are)."""
  if inputs and all(isinstance(x, str | os.PathLike) for x in inputs):
    return sources.make_sources(
      [os.fspath(x) for x in inputs],
      tfds_data_dir=tfds_data_dir,
      layout=layout,
      sentences=sentences,
      errors=encoding_errors,
    )
  srcs = list(inputs)
  if not srcs:
    raise ElectraError("no input given: pass text files, globs or tfds:NAME[:SPLIT]")
  return srcs


def _write_shards(
  results: Iterable[dict], paths: Sequence[str], progress: bool
) -> tuple[list[int], collections.Counter]:
  """Writes the units' records round-robin over `paths` (example i to shard i mod n).

  Returns:
    the examples written to each shard, and the units' other counts summed.
  """
  from array_record.python.array_record_module import ArrayRecordWriter
  from tqdm.auto import tqdm

  writers = [ArrayRecordWriter(path, "group_size:1") for path in paths]
  shard_counts = [0] * len(paths)
  totals = collections.Counter()
  bar = tqdm(unit="doc", desc="prepare-pretraining", disable=not progress, dynamic_ncols=True)
  n_written = 0
  try:
    for result in results:
      for record in result.pop("records"):
        shard = n_written % len(paths)
        writers[shard].write(record)
        shard_counts[shard] += 1
        n_written += 1
      totals.update(result)
      bar.update(result["num_documents"])
      bar.set_postfix(examples=n_written, refresh=False)
    bar.close()
  except BaseException:
    bar.leave = False  # erase the bar: the error must be the line the user sees
    bar.close()
    raise
  for w in writers:
    w.close()
  return shard_counts, totals


def _publish(tmp: str, out_dir: str) -> None:
  """Renames the finished temp dir to `out_dir` (replacing an old one last)."""
  # mkdtemp makes 0700 directories; give the result the usual permissions.
  fileio.fix_tree_permissions(tmp)
  if os.path.exists(out_dir):
    old = tempfile.mkdtemp(
      prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(out_dir)
    )
    os.rename(out_dir, os.path.join(old, "data"))
    os.rename(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.rename(tmp, out_dir)


def load_manifest(data_dir: str | os.PathLike) -> dict:
  """Reads and checks `data_dir/manifest.json`.

  Args:
    data_dir: a directory written by `prepare_pretraining_data`.

  Returns:
    the manifest dict.
  """
  data_dir = os.fspath(data_dir)
  path = os.path.join(data_dir, MANIFEST)
  if not os.path.exists(path):
    raise ElectraError(
      f"{data_dir} has no {MANIFEST}: it is not a prepared pretraining dataset (or its preparation "
      "did not finish); run `electra-jax prepare-pretraining`"
    )
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise ElectraError(f"cannot read {path}: {e}") from None
  if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
    raise ElectraError(
      f"{path} is not an {FORMAT} v{VERSION} manifest (format={manifest.get('format')!r}, "
      f"version={manifest.get('version')!r})"
    )
  for shard in manifest["shards"]:
    if not os.path.exists(os.path.join(data_dir, shard["file"])):
      raise ElectraError(f"{data_dir} lacks shard {shard['file']} listed in its manifest")
  return manifest


def prepare_if_needed(
  inputs: Sequence[str],
  tokenizer,
  max_seq_length: int,
  out_dir: str | os.PathLike,
  *,
  seed: int = 0,
  **kwargs,
) -> dict:
  """Returns the manifest of `out_dir`, preparing it first when needed.

  For a train loop given raw text: the first run prepares the data, later
  runs (and resumes) reuse it. An existing dataset is reused only when it was
  made from the same inputs, tokenizer, length and seed; otherwise this is an
  `ElectraError` (pass `overwrite=True` to rebuild it).

  Args:
    inputs: as for `prepare_pretraining_data` (path/spec strings).
    tokenizer: a `Tokenizer` or a path.
    max_seq_length: example length.
    out_dir: where the prepared data lives.
    seed: builder seed.
    **kwargs: more `prepare_pretraining_data` options.

  Returns:
    the manifest.
  """
  from electra_jax import tokenization

  if not isinstance(tokenizer, tokenization.Tokenizer):
    tokenizer = tokenization.load_tokenizer(tokenizer)
  out_dir = os.fspath(out_dir)
  if os.path.exists(os.path.join(out_dir, MANIFEST)) and not kwargs.get("overwrite"):
    manifest = load_manifest(out_dir)
    wanted = {
      "tokenizer": tokenizer.fingerprint,
      "max_seq_length": max_seq_length,
      "seed": seed,
      "sources": [
        s.describe()
        for s in sources.make_sources(
          [os.fspath(x) for x in inputs],
          tfds_data_dir=kwargs.get("tfds_data_dir"),
          layout=kwargs.get("layout", "auto"),
          sentences=kwargs.get("sentences", "auto"),
          errors=kwargs.get("encoding_errors", "strict"),
        )
      ],
    }
    found = {
      "tokenizer": manifest["tokenizer"]["fingerprint"],
      "max_seq_length": manifest["max_seq_length"],
      "seed": manifest["seed"],
      "sources": manifest["sources"],
    }
    # tfds data_dir / local layout options are part of describe(); compare all.
    for key in wanted:
      if json.dumps(wanted[key], sort_keys=True) != json.dumps(found[key], sort_keys=True):
        raise ElectraError(
          f"{out_dir} holds data prepared with a different {key} ({found[key]!r}, wanted "
          f"{wanted[key]!r}): use another directory or rebuild it with overwrite"
        )
    return manifest
  return prepare_pretraining_data(inputs, tokenizer, max_seq_length, out_dir, seed=seed, **kwargs)
