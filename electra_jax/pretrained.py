"""`from_pretrained` / `save_pretrained`: load and store ELECTRA models.

Two directory formats are read:
  - a HF `transformers` directory: `config.json` + `model.safetensors` (or
    `pytorch_model.bin`), read by `load_hf` and mapped by the rule table in
    `convert.py`; `save_hf` writes one;
  - an electra-jax checkpoint directory, as `save_pretrained` writes it:
      electra_jax.json   {"format": "electra-jax", "version": 1,
                          "config": {...}, "head": ..., "head_kwargs": {...},
                          "extra": {...}}   (extra: e.g. label maps)
      params/            the param pytree, Orbax (per-layer layout)
      vocab.txt, ...     tokenizer files, when there were any.

Loading with a head other than the checkpoint's keeps the encoder weights
and initialises the missing head params afresh (logged), unless `strict`.

`convert_from_hf` / `convert_to_hf` turn one format into the other (the
`electra-jax convert` subcommand).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from electra_jax import convert, hf_files, trees
from electra_jax.config import ElectraConfig
from electra_jax.errors import ElectraError
from electra_jax.heads import check_head

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "electra_jax.json"
PARAMS_DIR = "params"
FORMAT = "electra-jax"
VERSION = 1


class Checkpoint(NamedTuple):
  """An electra-jax checkpoint directory read into memory."""

  config: ElectraConfig
  head: str | None
  head_kwargs: dict[str, Any]
  params: dict  # nested numpy arrays, per-layer layout
  extra: dict[str, Any]


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
  """Whether `path` is an electra-jax checkpoint directory."""
  return os.path.isfile(os.path.join(os.fspath(path), CHECKPOINT_FILE))


def _this_process_checkpointer():
  """An Orbax PyTree checkpointer whose saves and restores involve this process only.

  electra-jax checkpoints hold host numpy arrays. In a multi-host run process 0
  alone writes them (after gathering the params) and reads them back for the
  HF export, while `init_from` has every process read them on its own; Orbax's
  default checkpointer would wait at barriers for processes that never come.
  """
  import jax
  import orbax.checkpoint as ocp

  if jax.process_count() == 1:
    return ocp.PyTreeCheckpointer()
  me = jax.process_index()
  options = ocp.options.MultiprocessingOptions(
    primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"save_pretrained_{me}"
  )
  return ocp.Checkpointer(
    ocp.PyTreeCheckpointHandler(multiprocessing_options=options), multiprocessing_options=options
  )


def save_pretrained(
  path: str | os.PathLike,
  config: ElectraConfig,
  params: Mapping,
  head: str | None = None,
  head_kwargs: Mapping[str, Any] | None = None,
  tokenizer_dir: str | os.PathLike | None = None,
  extra: Mapping[str, Any] | None = None,
) -> str:
  """Writes an electra-jax checkpoint directory.

  Args:
    path: new directory (must not exist, or be empty).
    config: the architecture.
    params: the param pytree of `build_model(config, head, **head_kwargs)`,
      per-layer or scanned (stored per-layer), on any devices.
    head: the head `params` belong to (see `heads.HEADS`).
    head_kwargs: the head's extra arguments, e.g. `{"num_labels": 3}`.
    tokenizer_dir: a directory whose tokenizer files (vocab.txt,
      tokenizer.json, ...) are copied along.
    extra: JSON-serialisable metadata kept with the model (label maps, ...).

  Returns:
    The absolute path written.

  Raises:
    ElectraError: the params do not fit the config/head, or `path` is taken.
  """
  import jax

  head_kwargs = dict(head_kwargs or {})
  extra = dict(extra or {})
  check_head(head)
  out = hf_files.prepare_output_dir(path)
  # Gather to host numpy: the stored tree must not depend on the device layout.
  host = jax.tree.map(np.asarray, jax.device_get(trees.unrolled(params, config)))
  trees.check_shapes(trees.flatten(host), trees.expected_shapes(config, head, **head_kwargs), head)
  meta = {
    "format": FORMAT,
    "version": VERSION,
    "config": config.to_dict(),
    "head": head,
    "head_kwargs": head_kwargs,
    "extra": extra,
  }
  try:
    meta_text = json.dumps(meta, indent=2, sort_keys=True)
  except TypeError as e:
    raise ElectraError(f"head_kwargs / extra must be JSON-serialisable: {e}") from None
  with hf_files.staged_dir(out) as tmp:
    _this_process_checkpointer().save(os.path.join(tmp, PARAMS_DIR), host)
    if tokenizer_dir is not None and os.path.isdir(tokenizer_dir):
      hf_files.copy_tokenizer_files(tokenizer_dir, tmp)
    # Written last: its presence marks a complete checkpoint.
    with open(os.path.join(tmp, CHECKPOINT_FILE), "w", encoding="utf-8") as f:
      f.write(meta_text + "\n")
  return out


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
  """The parsed and validated `electra_jax.json` of a checkpoint directory."""
  file = os.path.join(os.fspath(path), CHECKPOINT_FILE)
  try:
    with open(file, encoding="utf-8") as f:
      meta = json.load(f)
  except FileNotFoundError:
    raise ElectraError(f"no {CHECKPOINT_FILE} in {path}: not an electra-jax checkpoint") from None
  except (OSError, json.JSONDecodeError) as e:
    raise ElectraError(f"cannot read {file}: {hf_files.one_line(e)}") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    raise ElectraError(f"{file} is not an electra-jax checkpoint description")
  if meta.get("version") != VERSION:
    raise ElectraError(
      f"{file} has format version {meta.get('version')!r}; this electra-jax reads version {VERSION}"
    )
  check_head(meta.get("head"), where=file)
  return meta


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
  """Reads an electra-jax checkpoint directory into host numpy arrays.

  Restores without the shardings it was saved with, so a checkpoint written
  on a TPU pod slice loads on one CPU.
  """
  import jax
  import orbax.checkpoint as ocp

  path = os.path.abspath(os.fspath(path))
  if not os.path.isdir(path):
    raise ElectraError(f"{path} does not exist or is not a directory")
  meta = read_checkpoint_meta(path)
  config = ElectraConfig.from_dict(meta["config"])
  params_dir = os.path.join(path, PARAMS_DIR)
  if not os.path.isdir(params_dir):
    raise ElectraError(f"{path} has no {PARAMS_DIR}/ directory: the checkpoint is incomplete")
  checkpointer = _this_process_checkpointer()
  try:
    tree = checkpointer.metadata(params_dir).item_metadata.tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    params = checkpointer.restore(params_dir, restore_args=restore_args)
  except Exception as e:  # Orbax raises a variety of types for a damaged directory
    raise ElectraError(f"cannot restore {params_dir}: {hf_files.one_line(e)}") from None
  head = meta["head"]
  head_kwargs = dict(meta.get("head_kwargs") or {})
  trees.check_shapes(
    trees.flatten(params), trees.expected_shapes(config, head, **head_kwargs), head
  )
  return Checkpoint(config, head, head_kwargs, params, dict(meta.get("extra") or {}))


def _fit_head(
  ckpt_params: Mapping,
  config: ElectraConfig,
  ckpt_head: str | None,
  head: str | None,
  head_kwargs: Mapping[str, Any],
  strict: bool,
):
  """Re-targets params saved for `ckpt_head` to `head` via the HF key space."""
  state_dict = convert.params_to_hf(ckpt_params, config, ckpt_head)
  return convert.hf_to_params(state_dict, config, head, strict=strict, head_kwargs=head_kwargs)


def from_pretrained(
  path: str | os.PathLike,
  head: str | None = "auto",
  *,
  dtype: Any = None,
  param_dtype: Any = None,
  scan_layers: bool = False,
  remat: bool = False,
  strict: bool = False,
  seed: int = 0,
  **head_kwargs,
):
  """Loads an ELECTRA model from a HF directory or an electra-jax checkpoint.

  Args:
    path: HF directory (`config.json` + `model.safetensors` or
      `pytorch_model.bin`) or electra-jax checkpoint directory.
    head: `"auto"` (the checkpoint's own head), `None` (bare encoder),
      `"pretraining"`, `"masked_lm"`, `"sequence_classification"`,
      `"question_answering"`, `"token_classification"` or
      `"multiple_choice"`.
    dtype: compute dtype (default float32; `jnp.bfloat16` for bf16 compute).
    param_dtype: dtype the params are stored in (default float32).
    scan_layers: build the scanned encoder and return stacked params.
    remat: rematerialise layers in the backward pass.
    strict: refuse a head mismatch instead of initialising missing head params.
    seed: PRNG seed for head params initialised afresh.
    **head_kwargs: head arguments (e.g. `num_labels=3`), overriding the
      checkpoint's.

  Returns:
    `(model, params)`: the Linen module and its param pytree (jax arrays), so
    that `model.apply({"params": params}, input_ids, ...)` gives the logits.

  Raises:
    ElectraError: missing path or config, unsupported config, weights that do
      not fit the config, or (strict) a head mismatch.
  """
  import jax
  import jax.numpy as jnp

  from electra_jax import model as model_lib

  dtype = jnp.float32 if dtype is None else dtype
  param_dtype = jnp.float32 if param_dtype is None else param_dtype
  path = os.fspath(path)
  loaded = _load_for_head(path, head, strict, head_kwargs)
  config, head, kwargs, params = loaded.config, loaded.head, loaded.head_kwargs, loaded.params
  model = model_lib.build_model(
    config, head, dtype=dtype, param_dtype=param_dtype, scan_layers=False, remat=remat, **kwargs
  )
  if loaded.missing:
    params = _init_missing(model, loaded, path, seed)
  params = jax.tree.map(lambda a: jnp.asarray(a, dtype=param_dtype), params)
  if scan_layers:
    params = model_lib.layers_to_scan(params, config.num_hidden_layers)
    model = model_lib.build_model(
      config, head, dtype=dtype, param_dtype=param_dtype, scan_layers=True, remat=remat, **kwargs
    )
  return model, params


class _Loaded(NamedTuple):
  """Host params for the head `from_pretrained` was asked for, before a model is built."""

  config: ElectraConfig
  head: str | None
  head_kwargs: dict[str, Any]
  params: dict
  missing: list[str]  # head params the checkpoint lacks, to initialise afresh
  asked_for: bool  # whether the caller asked for a head other than the checkpoint's own


def _load_for_head(
  path: str, head: str | None, strict: bool, head_kwargs: Mapping[str, Any]
) -> _Loaded:
  """Reads either directory format and fits its params to `head` (see `from_pretrained`)."""
  if not os.path.exists(path):
    raise ElectraError(
      f"{path} does not exist: pass a HF model directory or an electra-jax checkpoint"
    )
  if not os.path.isdir(path):
    raise ElectraError(
      f"{path} is not a directory: pass a HF model directory or an electra-jax checkpoint"
    )
  if is_checkpoint_dir(path):
    ckpt = load_checkpoint(path)
    head = ckpt.head if head == "auto" else head
    kwargs = dict(ckpt.head_kwargs) if head == ckpt.head else {}
    kwargs.update(head_kwargs)
    if head == ckpt.head and kwargs == ckpt.head_kwargs:
      return _Loaded(ckpt.config, head, kwargs, ckpt.params, [], True)
    params, report = _fit_head(ckpt.params, ckpt.config, ckpt.head, head, kwargs, strict)
    # Reached only for a head or head size other than the saved one: asked for.
    _log_dropped(report.unexpected, path, head, asked_for=True)
    return _Loaded(ckpt.config, head, kwargs, params, report.missing, True)
  if os.path.isfile(os.path.join(path, "config.json")):
    hf = load_hf(path, head, strict=strict, head_kwargs=head_kwargs)
    asked_for = bool(head_kwargs) or (head != "auto" and hf.head != _own_hf_head(path))
    _log_dropped(hf.report.unexpected, path, hf.head, asked_for=asked_for)
    return _Loaded(hf.config, hf.head, hf.head_kwargs, hf.params, hf.report.missing, asked_for)
  raise ElectraError(
    f"no config.json or {CHECKPOINT_FILE} in {path}: pass a HF model directory or an electra-jax checkpoint"
  )


def _init_missing(model, loaded: _Loaded, path: str, seed: int) -> dict:
  """`loaded.params` with the head params it lacks initialised afresh from `seed`."""
  import jax

  from electra_jax import model as model_lib

  # Expected when fine-tuning starts from a discriminator (INFO); a warning
  # when the checkpoint's own head lacks weights.
  log.log(
    logging.INFO if loaded.asked_for else logging.WARNING,
    "%s has no weights for %d params of head %r; initialised them afresh (fine-tune before use): %s",
    path,
    len(loaded.missing),
    loaded.head,
    trees.format_keys(loaded.missing),
  )
  fresh = trees.flatten(model_lib.init_params(model, jax.random.key(seed)))
  flat = trees.flatten(loaded.params)
  flat.update({p: fresh[p] for p in loaded.missing})
  return trees.unflatten(flat)


def _own_hf_head(path: str) -> str | None:
  """The head a HF directory's `architectures` names (None if it names none we know)."""
  try:
    return convert.detect_head(hf_files.read_hf_config(path))
  except ElectraError:
    return None


def _log_dropped(unexpected, path, head, *, asked_for: bool) -> None:
  """Reports checkpoint weights the model does not use.

  Dropping the old head is what a head change (e.g. a discriminator loaded for
  fine-tuning) means, so that is INFO; unused weights when the checkpoint's
  own head was asked for point at a damaged or foreign checkpoint: WARNING.
  """
  if unexpected:
    log.log(
      logging.INFO if asked_for else logging.WARNING,
      "%s: dropped %d weights that head %r does not use: %s",
      path,
      len(unexpected),
      head,
      trees.format_keys(unexpected),
    )


# -- HF directories ---------------------------------------------------------------


class HFCheckpoint(NamedTuple):
  """A HF directory read into our terms."""

  config: ElectraConfig
  head: str | None
  head_kwargs: dict[str, Any]
  params: dict  # nested numpy arrays, unrolled layers
  extra: dict[str, Any]  # label maps
  report: convert.ConversionReport


def load_hf(
  path: str | os.PathLike,
  head: str | None = "auto",
  *,
  strict: bool = True,
  head_kwargs: Mapping[str, Any] | None = None,
) -> HFCheckpoint:
  """Reads a HF ELECTRA directory (config + weights) into our config and params.

  Args:
    path: HF directory (`config.json` + `model.safetensors` / `pytorch_model.bin`).
    head: our head name, or "auto" for the one `architectures` names.
    strict: see `convert.hf_to_params`.
    head_kwargs: overrides of what the HF config implies (e.g. `num_labels`).

  Returns:
    An `HFCheckpoint`.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise ElectraError(f"{path} does not exist: point at a HF model directory")
  if not os.path.isdir(path):
    raise ElectraError(f"{path} is not a directory: point at a HF model directory")
  hf_config = hf_files.read_hf_config(path)
  config = ElectraConfig.from_hf(hf_config)
  state_dict = hf_files.load_hf_state_dict(path)
  if head == "auto":
    head = convert.detect_head(hf_config, state_dict.keys())
  kwargs = convert.head_kwargs_from_hf(hf_config, head)
  kwargs.update(head_kwargs or {})
  params, report = convert.hf_to_params(state_dict, config, head, strict=strict, head_kwargs=kwargs)
  extra = convert.label_maps(hf_config) if check_head(head).labeled else {}
  if extra.get("id2label") and len(extra["id2label"]) != kwargs.get("num_labels"):
    extra = {}  # the caller asked for another label count; the names no longer apply
  return HFCheckpoint(config, head, kwargs, params, extra, report)


def save_hf(
  out: str | os.PathLike,
  config: ElectraConfig,
  params: Mapping,
  head: str | None,
  *,
  head_kwargs: Mapping[str, Any] | None = None,
  extra: Mapping[str, Any] | None = None,
  tokenizer_dir: str | os.PathLike | None = None,
) -> str:
  """Writes a HF directory: `config.json` + `model.safetensors` (+ tokenizer files).

  Written to a temporary sibling and renamed at the end, so a failure leaves
  nothing half-written.

  Returns:
    The output directory.
  """
  from safetensors.numpy import save_file

  out = hf_files.prepare_output_dir(out)
  # Validate before writing anything: the params must be what the head expects.
  flat = trees.flatten(trees.unrolled(params, config))
  trees.check_shapes(flat, trees.expected_shapes(config, head, **dict(head_kwargs or {})), head)
  state_dict = convert.params_to_hf(params, config, head)
  hf_config = convert.hf_config_dict(config, head, head_kwargs, extra)
  with hf_files.staged_dir(out) as tmp:
    with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
      json.dump(hf_config, f, indent=2, sort_keys=True)
    save_file(state_dict, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    hf_files.copy_tokenizer_files(tokenizer_dir, tmp)
  return out


def convert_from_hf(
  src: str | os.PathLike, out: str | os.PathLike, head: str | None = "auto"
) -> str:
  """HF directory -> electra-jax checkpoint directory (config, Orbax params, tokenizer).

  Args:
    src: HF directory.
    out: new electra-jax checkpoint directory (must not exist or be empty).
    head: our head name, or "auto" (from `architectures`); `None` keeps the
      encoder of any checkpoint and drops its head.

  Returns:
    The output directory.
  """
  out = hf_files.prepare_output_dir(out)
  # Asking for the bare encoder drops a head on purpose; any other mismatch is an error.
  ckpt = load_hf(src, head, strict=head is not None)
  for key in ckpt.report.skipped:
    log.info("skipped %s (buffer or tied weight)", key)
  if ckpt.report.unexpected:  # only with head=None (strict otherwise): asked for
    log.info("dropped head weights: %s", trees.format_keys(ckpt.report.unexpected))
  return save_pretrained(
    out,
    ckpt.config,
    ckpt.params,
    head=ckpt.head,
    head_kwargs=ckpt.head_kwargs,
    tokenizer_dir=src,
    extra=ckpt.extra,
  )


def convert_to_hf(src: str | os.PathLike, out: str | os.PathLike) -> str:
  """electra-jax checkpoint directory -> HF directory (`config.json` + `model.safetensors`).

  Args:
    src: electra-jax checkpoint directory (as `save_pretrained` writes).
    out: new HF directory (must not exist or be empty).

  Returns:
    The output directory.
  """
  out = hf_files.prepare_output_dir(out)
  ckpt = load_checkpoint(src)
  return save_hf(
    out,
    ckpt.config,
    ckpt.params,
    ckpt.head,
    head_kwargs=ckpt.head_kwargs,
    extra=ckpt.extra,
    tokenizer_dir=src,
  )
