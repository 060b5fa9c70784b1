"""Up-front checks of a run's config and workdir: one line per mistake, nothing written.

`run_pretraining.run` and `run_finetuning.run` call `check_pretrain_config` /
`check_finetune_config` before they create a directory, read data or build a
model, so a typo costs a second instead of a compile (or an epoch) and leaves
no half-made workdir behind. Each message names the `--config.KEY` to change
and what it must be.

The checks only read: the config, whether paths exist, and (for fine-tuning
data, which is read whole anyway) whether its files are UTF-8. Keys a config
lacks are skipped, so a user's own config file with fewer keys still works.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Sequence
from numbers import Integral, Real

from electra_jax import job_setup, objectives, recipes, textfiles
from electra_jax.errors import ElectraError
from electra_jax.tasks import glue

# Tasks read from the user's files by an adapter of their own (electra_jax/tasks/<task>.py).
FILE_TASKS = ("token_classification", "multiple_choice")
FINETUNE_TASKS = (*glue.GLUE_TASK_NAMES, "custom", *FILE_TASKS, "squad")
COMPUTE_DTYPES = job_setup.COMPUTE_DTYPES
# Kept here rather than imported from `sharding`, which pulls in jax;
# `tests/bad_inputs_test.py` checks they agree.
SHARDING_PRESETS = ("dp", "fsdp", "fsdp_tp")
OBJECTIVES = objectives.NAMES
# Shortest sequences: pretraining needs [CLS] A [SEP] B [SEP] (prepare's
# MIN_TARGET_LENGTH); fine-tuning [CLS] text [SEP], plus [SEP] for pairs.
MIN_PRETRAIN_LENGTH = 5
_MODEL_INT_KEYS = (
  "embedding_size",
  "hidden_size",
  "num_hidden_layers",
  "num_attention_heads",
  "intermediate_size",
  "max_position_embeddings",
)
_MISSING = object()


# -- helpers ----------------------------------------------------------------------


def _get(cfg, key: str):
  node = cfg
  for part in key.split("."):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      return _MISSING
  return node


def _is_int(value) -> bool:
  return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _int_at_least(cfg, key: str, minimum: int, label: str | None = None) -> None:
  value = _get(cfg, key)
  if value is _MISSING:
    return
  if not _is_int(value) or value < minimum:
    what = "a positive integer (>= 1)" if minimum == 1 else f"an integer >= {minimum}"
    raise ElectraError(f"{label or '--config.' + key} must be {what}, got {value!r}")


def _number_in(
  cfg, key: str, low: float, high: float, *, low_open=False, high_open=False, hint: str = ""
) -> None:
  value = _get(cfg, key)
  if value is _MISSING:
    return
  ok = _is_number(value)
  if ok:
    ok = (value > low if low_open else value >= low) and (
      value < high if high_open else value <= high
    )
  if not ok:
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    bounds = (
      f"> {low}"
      if high == math.inf and low_open
      else f">= {low}"
      if high == math.inf
      else f"in {left}{low}, {high}{right}"
    )
    raise ElectraError(f"--config.{key} must be a number {bounds}, got {value!r}{hint}")


def _one_of(cfg, key: str, choices: Sequence[str]) -> None:
  value = _get(cfg, key)
  if value is not _MISSING and value not in choices:
    raise ElectraError(f"--config.{key}={value!r} is not one of {', '.join(choices)}")


def _mesh(cfg) -> None:
  mesh = _get(cfg, "mesh")
  if mesh is _MISSING:
    return
  for axis, size in dict(mesh).items():
    if not _is_int(size) or (size != -1 and size < 1):
      raise ElectraError(
        f"--config.mesh.{axis} must be a device count >= 1, or -1 for all remaining devices; got {size!r}"
      )


def _model(cfg) -> None:
  for name in _MODEL_INT_KEYS:
    _int_at_least(cfg, f"model.{name}", 1)
  hidden, heads = _get(cfg, "model.hidden_size"), _get(cfg, "model.num_attention_heads")
  if _is_int(hidden) and _is_int(heads) and hidden % heads:
    raise ElectraError(
      f"--config.model.hidden_size={hidden} is not a multiple of "
      f"--config.model.num_attention_heads={heads}"
    )
  for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
    _number_in(cfg, f"model.{name}", 0.0, 1.0, high_open=True)


def _max_seq_length(cfg, minimum: int, *, against_model: bool) -> None:
  _int_at_least(cfg, "max_seq_length", minimum)
  length = _get(cfg, "max_seq_length")
  positions = _get(cfg, "model.max_position_embeddings")
  if against_model and _is_int(positions) and length > positions:
    raise ElectraError(
      f"--config.max_seq_length={length} exceeds --config.model.max_position_embeddings="
      f"{positions}: lower max_seq_length or raise max_position_embeddings"
    )


def _path_exists(cfg, key: str, what: str) -> str:
  """The path under `key` ("" when unset); an error when set but absent."""
  value = _get(cfg, key)
  path = "" if value is _MISSING or value is None else str(value)
  if path and not os.path.exists(path):
    raise ElectraError(f"--config.{key}: {what} {path} does not exist")
  return path


def _read_json(path: str):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def is_pretraining_workdir(path: str) -> bool:
  """Whether `path` is the workdir of `electra-jax pretrain` rather than a model.

  A finished run has `final/discriminator`; one still running (or stopped)
  has `checkpoints/` and a record of a pretraining config (with an
  `objective`) in results.json, run_config.json or model_signature.json.
  """
  if not os.path.isdir(path):
    return False
  if os.path.isdir(os.path.join(path, "final", "discriminator")):
    return True
  if not os.path.isdir(os.path.join(path, "checkpoints")):
    return False
  for name in ("results.json", "run_config.json", "model_signature.json"):
    data = _read_json(os.path.join(path, name))
    if isinstance(data, dict):
      config = data.get("config") if isinstance(data.get("config"), dict) else data
      if "objective" in config:
        return True
  return False


def check_model_dir(cfg, key: str, part: str = "discriminator") -> None:
  """`--config.KEY` must exist and must not be a pretraining workdir.

  A pretraining workdir holds its models under `final/`; pointing at the
  workdir itself otherwise fails later with "no config.json", which does not
  say where the model is.
  """
  path = _path_exists(cfg, key, "model directory")
  if path:
    check_not_pretraining_workdir(path, key, part)


def check_not_pretraining_workdir(path: str, key: str = "init_from", part: str = "discriminator"):
  """Refuses a pretraining workdir where a model directory is expected, naming the model."""
  if is_pretraining_workdir(path):
    model = os.path.join(path, "final", part)
    later = "" if os.path.isdir(model) else " (written when that run completes)"
    raise ElectraError(
      f"--config.{key}={path} is a pretraining workdir, not a model: use "
      f"--config.{key}={model}{later}"
    )


def check_workdir(path: str) -> None:
  """Refuses a `--workdir` that exists as a file (or lies under one)."""
  path = os.fspath(path)
  if not path:
    raise ElectraError("--workdir is empty: give an output directory")
  if os.path.exists(path) and not os.path.isdir(path):
    raise ElectraError(
      f"--workdir {path} exists and is not a directory: give a new path or an existing run's workdir"
    )
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise ElectraError(f"--workdir {path}: {parent} is a file, so the directory cannot be created")


def _common(cfg) -> None:
  """Keys pretraining and fine-tuning share, same rules."""
  _int_at_least(cfg, "seed", 0)
  _int_at_least(cfg, "batch_size", 1)
  _int_at_least(cfg, "log_every", 1)
  _int_at_least(cfg, "checkpoint_every", 1)
  # 0 is allowed: a step that leaves the weights as they are is a useful check.
  _number_in(cfg, "learning_rate", 0.0, math.inf)
  _number_in(cfg, "weight_decay", 0.0, math.inf)
  _number_in(cfg, "adam_eps", 0.0, math.inf, low_open=True)
  _number_in(cfg, "clip_norm", 0.0, math.inf, hint=" (0 turns clipping off)")
  _one_of(cfg, "compute_dtype", COMPUTE_DTYPES)
  _one_of(cfg, "sharding_rules", SHARDING_PRESETS)
  _mesh(cfg)


# -- pretraining ------------------------------------------------------------------


def check_pretrain_config(cfg, workdir: str | None = None) -> None:
  """Checks a pretraining config (and `workdir`) before anything is created.

  Raises:
    ElectraError: naming the `--config.KEY` (or `--workdir`) at fault.
  """
  if workdir is not None:
    check_workdir(workdir)
  _one_of(cfg, "objective", OBJECTIVES)
  _int_at_least(cfg, "total_steps", 1)
  _int_at_least(cfg, "warmup_steps", 0)
  total, warmup = _get(cfg, "total_steps"), _get(cfg, "warmup_steps")
  if _is_int(total) and _is_int(warmup) and warmup > total:
    raise ElectraError(
      f"--config.warmup_steps={warmup} is more than --config.total_steps={total}: "
      f"set --config.warmup_steps to at most {total} (e.g. --config.warmup_steps={max(1, total // 10)})"
    )
  _common(cfg)
  _int_at_least(cfg, "grad_accum_steps", 1)
  batch, accum = _get(cfg, "batch_size"), _get(cfg, "grad_accum_steps")
  if _is_int(batch) and _is_int(accum) and batch % accum:
    raise ElectraError(
      f"--config.batch_size={batch} must be divisible by --config.grad_accum_steps={accum}"
    )
  _int_at_least(cfg, "keep_checkpoints", 1)
  _int_at_least(cfg, "max_predictions_per_seq", 0)
  _number_in(cfg, "mask_prob", 0.0, 1.0, low_open=True, high_open=True)
  _number_in(cfg, "temperature", 0.0, math.inf, low_open=True)
  _number_in(cfg, "generator_hidden_size", 0.0, math.inf, low_open=True)
  _number_in(cfg, "disc_weight", 0.0, math.inf)
  _number_in(cfg, "gen_weight", 0.0, math.inf)
  for name in ("adam_b1", "adam_b2"):
    _number_in(cfg, name, 0.0, 1.0, high_open=True)
  _model(cfg)
  _max_seq_length(cfg, MIN_PRETRAIN_LENGTH, against_model=True)
  _pretrain_paths(cfg)


def _pretrain_paths(cfg) -> None:
  data = _get(cfg, "data")
  if data is not _MISSING:
    specs = [s.strip() for s in str(data or "").split(",") if s.strip()]
    if not specs:
      raise ElectraError(
        "--config.data is empty: give a prepared dataset directory or raw text files "
        "(--config.data=path/to/*.txt)"
      )
    import glob

    for spec in specs:
      if not spec.startswith("tfds:") and not os.path.isdir(spec) and not glob.glob(spec):
        raise ElectraError(
          f"--config.data: {spec} matches no file (and is not a prepared dataset directory)"
        )
  _path_exists(cfg, "tokenizer", "tokenizer")
  check_model_dir(cfg, "init_from", "discriminator")
  check_model_dir(cfg, "init_from_generator", "generator")


# -- fine-tuning ------------------------------------------------------------------


def check_task_name(name) -> str:
  """`name` if `finetune` knows the task by exactly that name, else an error.

  `glue.get_task` forgives spellings (`SST-2`, `sst_2`); a config does not:
  the task name also picks the epochs (10 for rte/stsb) and names the
  results, so a near miss is answered with the exact name to use.
  """
  if name in FINETUNE_TASKS:
    return name
  try:
    suggestion = glue.get_task(str(name)).name
  except ElectraError:
    close = difflib.get_close_matches(str(name).lower(), FINETUNE_TASKS, n=1)
    suggestion = close[0] if close else None
  hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
  raise ElectraError(f"unknown task {name!r}{hint}; tasks: {', '.join(FINETUNE_TASKS)}")


def check_finetune_config(cfg, workdir: str | None = None) -> None:
  """Checks a fine-tuning config (and `workdir`) before anything is created.

  Raises:
    ElectraError: naming the `--config.KEY` (or `--workdir`) at fault.
  """
  if workdir is not None:
    check_workdir(workdir)
  task = check_task_name(_get(cfg, "task"))
  if task in glue.TASKS and glue.TASKS[task].train_split is None:
    raise ElectraError(
      f"task {task} has no training split: predict it with an MNLI model (electra-jax predict)"
    )
  _int_at_least(cfg, "epochs", 1)
  _common(cfg)
  if _get(cfg, "recipe") is not _MISSING:
    recipes.resolve(cfg)  # an unknown recipe or switch value
  _int_at_least(cfg, "eval_batch_size", 1)
  _int_at_least(
    cfg, "microbatch_tokens", -1, label="--config.microbatch_tokens (-1 = auto, 0 = off)"
  )
  _int_at_least(cfg, "seeds", 1, label="--config.seeds (--seeds)")
  _int_at_least(cfg, "max_train_examples", 0, label="--config.max_train_examples (0 = all)")
  _number_in(cfg, "warmup_fraction", 0.0, 1.0)
  _number_in(cfg, "layerwise_lr_decay", 0.0, 1.0, low_open=True, hint=" (1.0 turns it off)")
  _number_in(cfg, "dropout", 0.0, 1.0, high_open=True)
  for name in ("token_dropout", "local_shuffle", "random_token"):
    _number_in(cfg, f"augment.{name}", 0.0, 1.0)
  _class_weights(_get(cfg, "class_weights"))
  init_from = _get(cfg, "init_from")
  scratch = init_from is _MISSING or not init_from
  if scratch:
    _model(cfg)  # with init_from the checkpoint's architecture is used
  if task == "custom":
    pair = bool(_get(cfg, "text_pair_column") not in (_MISSING, None, ""))
  elif task in FILE_TASKS or task == "squad":
    pair = task != "token_classification"
  else:
    pair = len(glue.TASKS[task].text_columns) == 2
  _max_seq_length(cfg, 4 if pair else 3, against_model=scratch)
  _path_exists(cfg, "tokenizer", "tokenizer")
  check_model_dir(cfg, "init_from", "discriminator")
  _finetune_data(cfg, task)


def _class_weights(spec) -> None:
  if spec is _MISSING or not isinstance(spec, str):
    return
  text = spec.strip()
  if text.lower() in ("", "none", "balanced"):
    return
  if text.startswith("{"):
    try:
      if isinstance(json.loads(text), dict):
        return
    except json.JSONDecodeError as e:
      raise ElectraError(f"--config.class_weights is not valid JSON ({e.msg})") from None
  raise ElectraError(
    f"--config.class_weights must be empty, 'balanced' or a JSON dict {{label: weight}}, got {spec!r}"
  )


def _finetune_data(cfg, task: str) -> None:
  """The data files exist and are UTF-8 (checked before the workdir is made)."""
  if task in FILE_TASKS:
    _file_task_data(cfg, task)
    return
  if task == "squad":
    _squad_data(cfg)
    return
  if task == "custom":
    if not _get(cfg, "train_file"):
      raise ElectraError("task=custom needs --config.train_file (and usually --config.dev_file)")
    files = [("train_file", "training")]
    files += [(k, w) for k, w in (("dev_file", "dev"), ("test_file", "test")) if _get(cfg, k)]
    for key, what in files:
      path = str(_get(cfg, key))
      if not os.path.isfile(path):
        raise ElectraError(f"--config.{key}: {what} file {path} not found")
      textfiles.check_utf8(path)
    return
  data_dir = str(_get(cfg, "data_dir") or "") or job_setup.DEFAULT_GLUE_DIR
  if not os.path.isdir(data_dir):
    raise ElectraError(
      f"GLUE data_dir {data_dir} not found: set --config.data_dir to a download_glue_data.py directory"
    )
  spec = glue.TASKS[task]
  train = glue.split_path(spec, data_dir, spec.train_split)
  if not os.path.isfile(train):
    raise ElectraError(
      f"--config.data_dir {data_dir} has no {task} training file {train} (download_glue_data.py layout)"
    )
  splits = [spec.train_split, *spec.dev_splits]
  if _get(cfg, "write_test_predictions"):
    splits += list(spec.test_splits)
  for split in splits:
    path = glue.split_path(spec, data_dir, split)
    if os.path.isfile(path):  # a missing dev split is reported by the reader
      textfiles.check_utf8(path)


def _file_task_data(cfg, task: str) -> None:
  """Token classification / multiple choice: options, files exist and are UTF-8, columns present."""
  own_key = "tag_column" if task == "token_classification" else "ending_columns"
  if _get(cfg, own_key) is _MISSING:
    raise ElectraError(
      f"task={task} takes its own config: --config experiments/configs/{task}.py:size=..."
    )
  if not _get(cfg, "train_file"):
    raise ElectraError(f"task={task} needs --config.train_file (and usually --config.dev_file)")
  files = [("train_file", "training")]
  files += [(k, w) for k, w in (("dev_file", "dev"), ("test_file", "test")) if _get(cfg, k)]
  for key, what in files:
    path = str(_get(cfg, key))
    if not os.path.isfile(path):
      raise ElectraError(f"--config.{key}: {what} file {path} not found")
    textfiles.check_utf8(path)
  if task == "token_classification":
    _one_of(cfg, "unseen_tags", ("error", "keep"))
    column = _get(cfg, "tag_column")
    if column is not _MISSING and not _is_int(column):
      raise ElectraError(f"--config.tag_column must be a column index (-1 = last), got {column!r}")
    return
  from electra_jax.tasks import custom, multiple_choice

  columns = multiple_choice.Columns.from_config(cfg)
  for key, _ in files:
    path = str(_get(cfg, key))
    present, _ = custom.read_table(path)
    multiple_choice.check_columns(path, present, columns, need_label=key != "test_file")


def _squad_data(cfg) -> None:
  """SQuAD: version and lengths, and the JSON files exist and parse as SQuAD files."""
  if _get(cfg, "doc_stride") is _MISSING:
    raise ElectraError(
      "task=squad takes its own config: --config experiments/configs/squad.py:version=1.1"
    )
  _one_of(cfg, "version", ("1.1", "2.0"))
  for key in ("doc_stride", "max_query_length", "max_answer_length", "n_best_size"):
    _int_at_least(cfg, key, 1)
  threshold = _get(cfg, "na_threshold")
  if threshold not in (_MISSING, None) and not _is_number(threshold):
    raise ElectraError(f"--config.na_threshold must be a number (or unset), got {threshold!r}")
  length, query = _get(cfg, "max_seq_length"), _get(cfg, "max_query_length")
  if _is_int(length) and _is_int(query) and length < query + 4:
    raise ElectraError(
      f"--config.max_seq_length={length} leaves no room for context after a {query}-token "
      f"question: raise it to at least {query + 4} or lower --config.max_query_length"
    )
  if not _get(cfg, "train_file"):
    raise ElectraError("task=squad needs --config.train_file (and usually --config.dev_file)")
  for key, what in (("train_file", "training"), ("dev_file", "dev"), ("test_file", "test")):
    path = _get(cfg, key)
    if path in (_MISSING, None, ""):
      continue
    if str(path).startswith("tfds:"):
      if not re.fullmatch(r"tfds:squad/v(1\.1|2\.0):(train|validation|dev)", str(path)):
        raise ElectraError(
          f"--config.{key}={path!r}: a tfds source is tfds:squad/v1.1:SPLIT or "
          "tfds:squad/v2.0:SPLIT with SPLIT train or validation"
        )
      continue
    if not os.path.isfile(str(path)):
      raise ElectraError(f"--config.{key}: {what} file {path} not found")
    textfiles.check_utf8(str(path))
    try:
      with open(str(path), encoding="utf-8") as f:
        blob = json.load(f)
    except json.JSONDecodeError as e:
      raise ElectraError(f"--config.{key}: {path} is not valid JSON ({e})") from None
    if not isinstance(blob, dict) or not isinstance(blob.get("data"), list):
      raise ElectraError(f"--config.{key}: {path} has no 'data' list; is it a SQuAD JSON file?")
