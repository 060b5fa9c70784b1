"""Fine-tuning: GLUE or the user's data → classifier/regressor, via the shared `train_loop`.

Per seed `k` (config `seed`, `seed + 1`, ...), in `WORKDIR/seed_<k>/`:
  checkpoints/   Orbax train state (a rerun resumes)
  best/          electra-jax checkpoint with the best dev score (primary metric)
  last/          electra-jax checkpoint at the end
  metrics.jsonl, results.json
and in `WORKDIR/`:
  results.json        per-seed dev metrics, and median / mean / std per metric
  test_predictions/   GLUE leaderboard files from the best seed's best model

`electra-jax predict --model WORKDIR` picks the best seed's `best/`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from electra_jax import faults, job_setup, optim, preemption, pretrained, train, validate
from electra_jax import model as model_lib
from electra_jax import workdir as workdir_lib
from electra_jax.errors import ElectraError
from electra_jax.job_setup import DEFAULT_GLUE_DIR, resolve_tokenizer

HEAD = "sequence_classification"


# -- data -------------------------------------------------------------------------


class EpochBatches:
  """Shuffled fixed-size batches of in-memory features, resumable.

  The order of epoch `e` is a permutation seeded by `(seed, e)`, so the state
  is just `(epoch, position)`; the last partial batch of an epoch is dropped
  (fixed shapes, one compilation). Optional noise injection is seeded by
  `(seed, epoch, position)` as well.
  """

  def __init__(self, features: dict, batch_size: int, seed: int, augment=None, tokenizer=None):
    self.features = {k: v for k, v in features.items() if k != "example_index"}
    self.n = len(self.features["input_ids"])
    if self.n < batch_size:
      raise ElectraError(f"only {self.n} training examples, fewer than batch_size={batch_size}")
    self.batch_size, self.seed = batch_size, seed
    self.steps_per_epoch = self.n // batch_size
    self.epoch, self.position = 0, 0
    self.augment, self.tokenizer = augment, tokenizer
    self._order = None

  def _perm(self):
    if self._order is None or self._order[0] != self.epoch:
      rng = np.random.default_rng([self.seed, self.epoch])
      self._order = (self.epoch, rng.permutation(self.n))
    return self._order[1]

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self.position >= self.steps_per_epoch:
      self.epoch, self.position = self.epoch + 1, 0
    idx = self._perm()[self.position * self.batch_size : (self.position + 1) * self.batch_size]
    batch = {k: v[idx] for k, v in self.features.items()}
    if self.augment is not None and self.augment.enabled:
      from electra_jax.tasks import augment as augment_lib

      t = self.tokenizer
      batch = augment_lib.augment_batch(
        batch,
        self.augment,
        np.random.default_rng([self.seed, self.epoch, self.position]),
        vocab_size=t.vocab_size,
        special_ids=(t.cls_id, t.sep_id, t.pad_id, t.mask_id),
        pad_id=t.pad_id,
      )
    self.position += 1
    return batch

  def get_state(self) -> dict:
    return {"epoch": self.epoch, "position": self.position}

  def set_state(self, state: dict) -> None:
    self.epoch, self.position = int(state["epoch"]), int(state["position"])


def load_task_data(cfg: ml_collections.ConfigDict):
  """Returns `(task, label_list or None, {split: [Example]}, dev split names, test split names)`."""
  from electra_jax.tasks import custom, glue

  limit = int(cfg.max_train_examples) or None
  if cfg.task == "custom":
    if not cfg.train_file:
      raise ElectraError("task=custom needs --config.train_file (and usually --config.dev_file)")
    task, label_map, splits = custom.load_custom_task(
      custom.CustomDataConfig.from_mapping(cfg),
      cfg.train_file,
      cfg.dev_file or None,
      cfg.test_file or None,
    )
    if limit:
      splits["train"] = splits["train"][:limit]
    labels = None if label_map.regression else list(label_map.labels)
    return (
      task,
      labels,
      splits,
      [s for s in ("dev",) if s in splits],
      [s for s in ("test",) if s in splits],
    )
  task = glue.get_task(cfg.task)
  if task.train_split is None:
    raise ElectraError(f"task {task.name} has no training split (predict it with an MNLI model)")
  data_dir = cfg.data_dir or DEFAULT_GLUE_DIR
  if not os.path.isdir(data_dir):
    raise ElectraError(
      f"GLUE data_dir {data_dir} not found: set --config.data_dir to a download_glue_data.py directory"
    )
  splits = {"train": glue.read_split(task, data_dir, task.train_split, limit=limit)}
  for split in task.dev_splits:
    splits[split] = glue.read_split(task, data_dir, split)
  tests = []
  if cfg.write_test_predictions:
    for split in task.test_splits:
      try:
        splits[split] = glue.read_split(task, data_dir, split)
        tests.append(split)
      except ElectraError as e:
        print(f"no test predictions for {split}: {e}", flush=True)
  labels = None if task.is_regression else list(task.label_list)
  return task, labels, splits, list(task.dev_splits), tests


# -- model ------------------------------------------------------------------------


def build(cfg, tokenizer, num_labels: int, seed: int):
  """`(model, params or None, config)`: from `init_from`, or a config for scratch init."""
  dtype = job_setup.compute_dtype(cfg.compute_dtype)
  if cfg.init_from:
    if not os.path.exists(cfg.init_from):
      raise ElectraError(f"init_from {cfg.init_from} does not exist")
    _check_init_head(cfg.init_from, num_labels)
    loaded, params = pretrained.from_pretrained(
      cfg.init_from, head=HEAD, num_labels=num_labels, seed=seed
    )
    config = loaded.config
    if config.vocab_size < tokenizer.vocab_size:
      raise ElectraError(
        f"init_from {cfg.init_from} has vocab_size {config.vocab_size} < the tokenizer's {tokenizer.vocab_size}: "
        "use the tokenizer the model was trained with"
      )
  else:
    params = None
    config = job_setup.model_config(cfg, tokenizer)
  config = config.replace(
    hidden_dropout_prob=float(cfg.dropout), attention_probs_dropout_prob=float(cfg.dropout)
  )
  if cfg.max_seq_length > config.max_position_embeddings:
    raise ElectraError(
      f"max_seq_length {cfg.max_seq_length} exceeds the model's max_position_embeddings {config.max_position_embeddings}"
    )
  model = model_lib.build_model(config, HEAD, dtype=dtype, num_labels=num_labels)
  return model, params, config


def _check_init_head(path: str, num_labels: int) -> None:
  """Refuses a checkpoint whose task head does not fit this task.

  Encoders, discriminators and generators are fine (a new head is
  initialised); a classifier with another number of labels, or another task
  head, almost always means the wrong `init_from`.
  """
  from electra_jax import convert, hf_files

  validate.check_not_pretraining_workdir(path)  # else "no config.json" hides where the model is
  if pretrained.is_checkpoint_dir(path):
    meta = pretrained.read_checkpoint_meta(path)
    head, kwargs = meta.get("head"), meta.get("head_kwargs") or {}
  else:
    hf_config = hf_files.read_hf_config(path)
    head = convert.detect_head(hf_config)
    kwargs = convert.head_kwargs_from_hf(hf_config, head)
  if head in (None, "pretraining", "masked_lm"):
    return
  if head != HEAD:
    raise ElectraError(
      f"init_from {path} is a {head} model, not a sequence classifier; convert its encoder with "
      "`electra-jax convert --head none` first if you mean to reuse it"
    )
  if int(kwargs.get("num_labels", 2)) != num_labels:
    raise ElectraError(
      f"init_from {path} classifies {kwargs.get('num_labels')} labels but this task has {num_labels}: "
      "init from the pretrained discriminator instead"
    )


def make_loss_fn(model, num_labels: int, weights: np.ndarray | None):
  regression = num_labels == 1
  w = None if weights is None else jnp.asarray(weights, jnp.float32)

  def loss_fn(params, batch, rng, deterministic):
    logits = model.apply(
      {"params": params},
      batch["input_ids"],
      attention_mask=batch["input_mask"],
      token_type_ids=batch["segment_ids"],
      deterministic=deterministic,
      rngs={"dropout": rng},
    )
    labels = batch["labels"]
    if regression:
      loss = jnp.mean(jnp.square(logits[:, 0] - labels))
      return loss, {}
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if w is not None:
      ex_w = w[labels]
      loss = jnp.sum(per_example * ex_w) / jnp.sum(ex_w)
    else:
      loss = jnp.mean(per_example)
    return loss, {"accuracy": jnp.mean(logits.argmax(-1) == labels)}

  return loss_fn


def make_predict_fn(model, eval_batch_size: int):
  """`(params, features) -> logits` (numpy), in fixed-size padded batches."""

  @jax.jit
  def forward(params, ids, mask, types):
    return model.apply(
      {"params": params}, ids, attention_mask=mask, token_type_ids=types, deterministic=True
    )

  def predict(params, features: dict) -> np.ndarray:
    n = len(features["input_ids"])
    out = []
    for start in range(0, n, eval_batch_size):
      chunk = {
        k: features[k][start : start + eval_batch_size]
        for k in ("input_ids", "input_mask", "segment_ids")
      }
      m = len(chunk["input_ids"])
      if m < eval_batch_size:  # pad to the fixed shape; padded rows are dropped below
        chunk = {
          k: np.concatenate([v, np.zeros((eval_batch_size - m, v.shape[1]), v.dtype)])
          for k, v in chunk.items()
        }
      logits = forward(params, chunk["input_ids"], chunk["input_mask"], chunk["segment_ids"])
      out.append(np.asarray(logits)[:m])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)

  return predict


def _predictions(logits: np.ndarray, regression: bool) -> np.ndarray:
  return logits[:, 0] if regression else logits.argmax(-1)


# -- the run ----------------------------------------------------------------------


def run(
  cfg: ml_collections.ConfigDict,
  workdir: str,
  *,
  progress: bool = True,
  stop_after: int | None = None,
) -> dict:
  """Fine-tunes `cfg.seeds` seeds in `workdir` and summarises them.

  Resumable at any point: each seed resumes from its checkpoint with its
  evaluation history (so `best/` and the best score survive), finished seeds
  are not touched again, and a re-run of a finished job changes nothing.
  SIGTERM / SIGINT save the running seed and stop the whole job.

  Args:
    cfg: a config from `experiments/configs/glue.py`.
    workdir: output directory (resumed if it holds checkpoints).
    progress: show progress bars.
    stop_after: stop each invocation after this many train steps (tests).

  Returns:
    The summary written to `WORKDIR/results.json`; its `status` is
    `complete`, or `stopped` (with `stopped`, `seed` and `step`).
  """
  validate.check_finetune_config(cfg, workdir)  # before anything is created or compiled
  config = cfg.to_dict()
  seeds = [int(cfg.seed) + k for k in range(int(cfg.seeds))]
  changed = workdir_lib.check_config(workdir, config, resuming=_has_progress(workdir))
  stored = workdir_lib.read_results(workdir)
  if (
    stored is not None
    and stored.get("status") == "complete"
    and not workdir_lib.math_changes(changed)
    and sorted(int(s) for s in stored.get("seeds", {})) == seeds
  ):
    print(f"{workdir}: fine-tuning already complete ({len(seeds)} seed(s)); nothing to do")
    return stored
  with preemption.handle_stop_signals():
    job = _prepare_job(cfg, workdir, progress=progress, stop_after=stop_after)
    os.makedirs(workdir, exist_ok=True)  # only now: bad data leaves nothing behind
    if jax.process_index() == 0:
      workdir_lib.record_config(workdir, config, changed)
    per_seed = {}
    for seed in seeds:
      stop = preemption.requested()
      entry = _stopped_entry(stop, 0) if stop else _run_seed(job, seed)
      if entry["status"] != "complete":
        summary = {
          "status": "stopped",
          "stopped": entry["stopped"],
          "seed": seed,
          "step": entry["step"],
          "task": job.task.name,
          "config": config,
          "seeds": per_seed,
        }
        train.write_results(workdir, summary)
        return summary
      per_seed[seed] = entry
      faults.point("between_seeds")

  summary = _summarise(job.task, per_seed, job.dev_splits)
  summary.update(
    status="complete",
    config=config,
    config_history=workdir_lib.config_history(workdir),
    task=job.task.name,
    seeds=per_seed,
  )
  if job.test_splits and jax.process_index() == 0 and summary.get("best_seed") is not None:
    summary["test_predictions"] = _write_test_predictions(
      cfg,
      workdir,
      job.task,
      summary["best_seed"],
      job.feats,
      job.test_splits,
      job.label_list,
      job.regression,
    )
  train.write_results(workdir, summary)
  return summary


def _has_progress(workdir: str) -> bool:
  if not os.path.isdir(workdir):
    return False
  return any(
    workdir_lib.has_checkpoint(os.path.join(workdir, d))
    for d in os.listdir(workdir)
    if d.startswith("seed_")
  )


def _stopped_entry(reason: str, step: int) -> dict:
  return {"status": "stopped", "stopped": reason, "step": step}


@dataclasses.dataclass
class _Job:
  """Everything the seeds of one fine-tuning job share."""

  cfg: ml_collections.ConfigDict
  workdir: str
  task: Any
  label_list: list | None
  dev_splits: list
  test_splits: list
  feats: dict
  tokenizer: Any
  weights: np.ndarray | None
  noise: Any
  extra: dict
  progress: bool
  stop_after: int | None

  @property
  def num_labels(self) -> int:
    return 1 if self.label_list is None else len(self.label_list)

  @property
  def regression(self) -> bool:
    return self.num_labels == 1

  def primary(self, metrics_by_name: dict):
    """The task's primary dev metric in an evaluation's metrics (None without dev data)."""
    if not self.dev_splits:
      return None
    name = self.task.primary_metric
    return metrics_by_name.get(name, metrics_by_name.get(f"{self.dev_splits[0]}/{name}"))


def _prepare_job(cfg, workdir, *, progress, stop_after) -> _Job:
  """Reads and featurises the task's data once for all seeds."""
  from electra_jax.tasks import augment as augment_lib
  from electra_jax.tasks import custom, features

  task, label_list, splits, dev_splits, test_splits = load_task_data(cfg)
  tokenizer = resolve_tokenizer(cfg)
  label_map = None if label_list is None else {label: i for i, label in enumerate(label_list)}
  length = int(cfg.max_seq_length)
  source = cfg.train_file if task.name == "custom" else (cfg.data_dir or DEFAULT_GLUE_DIR)
  sizes = ", ".join(f"{name} {len(examples):,}" for name, examples in splits.items())
  labels = (
    "regression"
    if label_list is None
    else f"{len(label_list)} labels ({', '.join(map(str, label_list))})"
  )
  print(f"task {task.name} from {os.path.abspath(source)}: {sizes} examples; {labels}", flush=True)
  feats = {
    name: features.featurize(examples, tokenizer, length, label_map)
    for name, examples in splits.items()
  }
  weights = None
  if cfg.class_weights and label_list is not None:
    spec = cfg.class_weights
    if spec.strip().startswith("{"):
      spec = json.loads(spec)
    weights = custom.class_weights(spec, feats["train"]["labels"], label_list)
  return _Job(
    cfg=cfg,
    workdir=workdir,
    task=task,
    label_list=label_list,
    dev_splits=dev_splits,
    test_splits=test_splits,
    feats=feats,
    tokenizer=tokenizer,
    weights=weights,
    noise=augment_lib.NoiseConfig.from_mapping(cfg.augment.to_dict()),
    extra={
      "task": task.name,
      "label_map": label_list,
      "max_seq_length": length,
      "text_columns": list(task.text_columns),
    },
    progress=progress,
    stop_after=stop_after,
  )


def _run_seed(job: _Job, seed: int) -> dict:
  """Trains (or resumes, or skips when finished) one seed; returns its summary entry."""
  cfg = job.cfg
  seed_dir = os.path.join(job.workdir, f"seed_{seed}")
  stored = workdir_lib.read_results(seed_dir)
  if stored is not None and stored.get("status") == "complete" and "summary" in stored:
    return stored["summary"]
  _recover_swap(os.path.join(seed_dir, "best"))
  model, init_params, config = build(cfg, job.tokenizer, job.num_labels, seed)
  data = EpochBatches(job.feats["train"], int(cfg.batch_size), seed, job.noise, job.tokenizer)
  total = int(cfg.epochs) * data.steps_per_epoch
  warmup = int(float(cfg.warmup_fraction) * total)
  decay = float(cfg.layerwise_lr_decay)
  optimizer = optim.make_optimizer(
    learning_rate=float(cfg.learning_rate),
    total_steps=total,
    warmup_steps=warmup,
    weight_decay=float(cfg.weight_decay),
    eps=float(cfg.adam_eps),
    clip_norm=float(cfg.clip_norm),
    layerwise_lr_decay=decay if decay != 1.0 else None,
    num_layers=config.num_hidden_layers,
    llrd_official_off_by_one=bool(cfg.llrd_official_off_by_one),
  )
  length = int(cfg.max_seq_length)

  def init_boxed(rng):
    return model.init(rng, jnp.zeros((1, length), jnp.int32))["params"]

  results = train.train_loop(
    workdir=seed_dir,
    total_steps=total,
    init_boxed_params=init_boxed,
    loss_fn=make_loss_fn(model, job.num_labels, job.weights),
    optimizer=optimizer,
    data_iter=data,
    seed=seed,
    mesh_shape=dict(cfg.mesh),
    sharding_rules=str(cfg.sharding_rules),
    log_every=int(cfg.log_every),
    checkpoint_every=int(cfg.checkpoint_every),
    init_params=(lambda p=init_params: p) if init_params is not None else None,
    signature={
      "model": config.to_dict(),
      "task": job.task.name,
      "num_labels": job.num_labels,
      "max_seq_length": length,
    },
    tokens_per_batch=int(cfg.batch_size) * length,
    learning_rate_fn=optim.make_schedule(float(cfg.learning_rate), warmup, total),
    eval_fn=_make_eval_fn(job, model, config, seed, seed_dir) if job.dev_splits else None,
    eval_every=data.steps_per_epoch,
    extra_results={"config": cfg.to_dict(), "seed": seed},
    progress=job.progress,
    stop_after=job.stop_after,
  )
  state = results.pop("state")
  if results["status"] != "complete":
    return _stopped_entry(results["stopped"], results["step"])
  if jax.process_index() == 0:
    _save_model(
      os.path.join(seed_dir, "last"),
      config,
      state.params,
      job.num_labels,
      job.tokenizer,
      {**job.extra, "step": results["step"]},
    )
  entry = _seed_entry(job, results.get("eval", {}))
  results.update(summary=entry)
  train.write_results(seed_dir, results)  # `summary` marks the seed finished, last/ included
  return entry


def _best_step(job: _Job, history: dict) -> tuple[float, int | None]:
  """`(score, step)` of the first evaluation with the highest primary metric."""
  best, best_step = -float("inf"), None
  for step in sorted(history, key=int):
    score = job.primary(history[step])
    if score is not None and score > best:
      best, best_step = score, int(step)
  return best, best_step


def _seed_entry(job: _Job, evals: dict) -> dict:
  final_eval = evals[max(evals, key=int)] if evals else {}
  _, best_step = _best_step(job, evals)
  best_eval = evals[str(best_step)] if best_step is not None else final_eval
  return {
    "status": "complete",
    "best_step": best_step,
    "best": best_eval,
    "last": final_eval,
    "epochs": evals,
  }


def _make_eval_fn(job: _Job, model, config, seed: int, seed_dir: str):
  """`(params, step, history) -> dev metrics`; saves `best/` on a new best primary score."""
  from electra_jax.tasks import metrics

  predict = make_predict_fn(model, int(job.cfg.eval_batch_size))

  def eval_fn(params, step, history):
    out = {}
    for split in job.dev_splits:
      f = job.feats[split]
      preds = _predictions(predict(params, f), job.regression)
      m = metrics.compute_metrics(job.task, preds, f["labels"])
      prefix = "" if len(job.dev_splits) == 1 else f"{split}/"
      out.update({f"{prefix}{name}": value for name, value in m.items()})
    primary = job.primary(out)
    best, _ = _best_step(job, history)
    if primary is not None and primary > best and jax.process_index() == 0:
      _save_model(
        os.path.join(seed_dir, "best"),
        config,
        params,
        job.num_labels,
        job.tokenizer,
        {**job.extra, "step": step, "dev": out},
      )
    print(
      f"[seed {seed}] step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in out.items()),
      flush=True,
    )
    return out

  return eval_fn


def _save_model(path, config, params, num_labels, tokenizer, extra) -> None:
  """Writes an electra-jax checkpoint to `path`, replacing what is there atomically.

  The new copy is written beside it, then swapped in with two renames
  (`path` → `path.old`, new → `path`); a kill between them leaves
  `path.old`, which `_recover_swap` puts back, so `path` is always either the
  previous or the new model, never missing or half-written.
  """
  tmp = path + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  tok_tmp = path + ".tokenizer.tmp"
  shutil.rmtree(tok_tmp, ignore_errors=True)
  tokenizer.save(tok_tmp)
  pretrained.save_pretrained(
    tmp,
    config,
    jax.device_get(params),
    head=HEAD,
    head_kwargs={"num_labels": num_labels},
    tokenizer_dir=tok_tmp,
    extra=extra,
  )
  shutil.rmtree(tok_tmp, ignore_errors=True)
  old = path + ".old"
  shutil.rmtree(old, ignore_errors=True)
  if os.path.exists(path):
    os.replace(path, old)
  faults.point("model_swap")
  os.replace(tmp, path)
  shutil.rmtree(old, ignore_errors=True)


def _recover_swap(path: str) -> None:
  """Undoes a `_save_model` interrupted between its two renames."""
  old = path + ".old"
  if os.path.exists(old) and not os.path.exists(path):
    os.replace(old, path)
  shutil.rmtree(old, ignore_errors=True)
  shutil.rmtree(path + ".tmp", ignore_errors=True)
  shutil.rmtree(path + ".tokenizer.tmp", ignore_errors=True)


def _summarise(task, per_seed: dict, dev_splits) -> dict:
  """Median / mean / std of each best-checkpoint dev metric across seeds."""
  names = sorted({k for r in per_seed.values() for k in r["best"]})
  stats = {}
  for name in names:
    values = [r["best"][name] for r in per_seed.values() if name in r["best"]]
    stats[name] = {
      "median": statistics.median(values),
      "mean": statistics.fmean(values),
      "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
      "values": values,
    }
  primary = (
    task.primary_metric
    if task.primary_metric in names
    else (f"{dev_splits[0]}/{task.primary_metric}" if dev_splits else None)
  )
  best_seed = None
  if primary in names:
    best_seed = max(per_seed, key=lambda s: per_seed[s]["best"].get(primary, -float("inf")))
  return {"primary_metric": primary, "metrics": stats, "best_seed": best_seed}


def _write_test_predictions(
  cfg, workdir, task, seed, feats, test_splits, label_list, regression
) -> dict:
  from electra_jax.tasks import metrics

  best_dir = os.path.join(workdir, f"seed_{seed}", "best")
  model, params = pretrained.from_pretrained(best_dir)
  predict = make_predict_fn(model, int(cfg.eval_batch_size))
  out_dir = os.path.join(workdir, "test_predictions")
  written = {}
  for split in test_splits:
    preds = _predictions(predict(params, feats[split]), regression)
    values = preds.tolist() if regression else [label_list[i] for i in preds]
    written[split] = (
      metrics.write_glue_submission(task, values, out_dir, split=split)
      if task.name != "custom"
      else None
    )
  return written
