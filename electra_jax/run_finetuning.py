"""Fine-tuning: one per-seed loop for every task, via the shared `train_loop`.

A task adapter (`electra_jax/tasks/adapters.py`) supplies the data, head,
features, loss, predictions and metrics; the recipe (`electra_jax/recipes.py`:
`official` reproduces google-research/electra, `standard` is what HF Trainer
users get) supplies the optimizer and loss switches. Per seed `k` (config
`seed`, `seed + 1`, ...), in `WORKDIR/seed_<k>/`:
  checkpoints/   Orbax train state (a rerun resumes)
  last/          electra-jax checkpoint of the final model (what is reported)
  best/          electra-jax checkpoint with the best dev score (dev-selected)
  metrics.jsonl, results.json
and in `WORKDIR/`:
  results.json        per-seed dev metrics of the final model, their median /
                      mean / std (`metrics`), the same for the best epochs
                      (`dev_selected`), and the resolved recipe
  test_predictions/   GLUE leaderboard files from the final model of the seed
                      with the best final dev score

`electra-jax predict --model WORKDIR` uses that seed's `last/`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import statistics
from typing import Any

import jax
import ml_collections
import numpy as np

from electra_jax import faults, inference, job_setup, optim, preemption, pretrained, train, validate
from electra_jax import model as model_lib
from electra_jax import workdir as workdir_lib
from electra_jax.errors import ElectraError
from electra_jax.job_setup import resolve_tokenizer
from electra_jax.tasks import (  # noqa: F401  (importing a task's module registers its adapter)
  adapters,
  multiple_choice,
  squad_adapter,
  token_classification,
)

log = logging.getLogger(__name__)

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


# -- model ------------------------------------------------------------------------


def build(cfg, tokenizer, adapter: adapters.TaskAdapter, seed: int):
  """`(model, head, params or None, config)`: from `init_from`, or a config for scratch init.

  The head is the adapter's (the recipe's), except that a HF
  `ElectraForSequenceClassification` checkpoint keeps its own HF head.
  """
  dtype = job_setup.compute_dtype(cfg.compute_dtype)
  head, head_kwargs = adapter.head, dict(adapter.head_kwargs)
  if cfg.init_from:
    if not os.path.exists(cfg.init_from):
      raise ElectraError(f"init_from {cfg.init_from} does not exist")
    head = _check_init_head(
      cfg.init_from, head, head_kwargs.get("num_labels"), adapter.kept_heads()
    )
    loaded, params = pretrained.from_pretrained(cfg.init_from, head=head, seed=seed, **head_kwargs)
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
  model = model_lib.build_model(config, head, dtype=dtype, **head_kwargs)
  return model, head, params, config


def _check_init_head(path: str, head: str, num_labels: int | None, kept: tuple[str, ...]) -> str:
  """The head to fine-tune from `path`; refuses a checkpoint whose task head does not fit.

  Encoders, discriminators and generators are fine (a new head is
  initialised); a checkpoint with one of the task's heads (`kept`: for
  classification, either sequence classifier) keeps its own (the HF one keeps
  HF's two-layer head whatever the recipe says); one with another number of
  labels, or another task's head, almost always means the wrong `init_from`.
  """
  from electra_jax import convert, hf_files

  validate.check_not_pretraining_workdir(path)  # else "no config.json" hides where the model is
  if pretrained.is_checkpoint_dir(path):
    meta = pretrained.read_checkpoint_meta(path)
    own, kwargs = meta.get("head"), meta.get("head_kwargs") or {}
  else:
    hf_config = hf_files.read_hf_config(path)
    own = convert.detect_head(hf_config)
    kwargs = convert.head_kwargs_from_hf(hf_config, own)
  if own in (None, "pretraining", "masked_lm"):
    return head
  if own not in kept:
    raise ElectraError(
      f"init_from {path} is a {own} model, not a {head} one; convert its encoder with "
      "`electra-jax convert --head none` first if you mean to reuse it"
    )
  if num_labels is not None and int(kwargs.get("num_labels", 2)) != num_labels:
    raise ElectraError(
      f"init_from {path} classifies {kwargs.get('num_labels')} labels but this task has {num_labels}: "
      "init from the pretrained discriminator instead"
    )
  if own != head:
    log.info("init_from %s is a %s model: fine-tuning keeps its head (not %s)", path, own, head)
  return own


def make_predict_fn(model, eval_batch_size: int, adapter: adapters.TaskAdapter):
  """`(params, features) -> outputs` (a pytree of numpy arrays) in batches of `eval_batch_size`.

  The fast inference path (`electra_jax.inference`): cache-sized
  micro-batches on CPU and, when the outputs do not depend on the length,
  rows sorted by length and each batch cut to its bucket.
  """
  predict_all = inference.make_batched_predict(
    adapter.forward(model), eval_batch_size, adapter.input_keys
  )

  def predict(params, features: dict):
    out = predict_all(params, features)
    if out is None:
      raise ElectraError("nothing to predict: the split has no examples")
    return out

  return predict


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
  cfg = job_setup.with_resolved_compute_dtype(
    cfg
  )  # recorded concrete: `auto` depends on the device
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
    log.info("%s: fine-tuning already complete (%d seed(s)); nothing to do", workdir, len(seeds))
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
          "task": job.adapter.name,
          "config": config,
          "seeds": per_seed,
        }
        train.write_results(workdir, summary)
        return summary
      per_seed[seed] = entry
      faults.point("between_seeds")

  summary = _summarise(job, per_seed)
  summary.update(
    status="complete",
    recipe=job.adapter.recipe,
    config=config,
    config_history=workdir_lib.config_history(workdir),
    task=job.adapter.name,
    seeds=per_seed,
  )
  if job.adapter.test_splits and jax.process_index() == 0 and summary.get("best_seed") is not None:
    summary["test_predictions"] = _write_test_predictions(job, summary["best_seed"])
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
  adapter: adapters.TaskAdapter
  feats: dict
  tokenizer: Any
  weights: np.ndarray | None
  noise: Any
  extra: dict
  progress: bool
  stop_after: int | None

  def primary(self, metrics_by_name: dict):
    """The task's primary dev metric in an evaluation's metrics (None without dev data)."""
    dev = self.adapter.dev_splits
    if not dev:
      return None
    name = self.adapter.primary_metric
    return metrics_by_name.get(name, metrics_by_name.get(f"{dev[0]}/{name}"))


def _prepare_job(cfg, workdir, *, progress, stop_after) -> _Job:
  """Reads and featurises the task's data once for all seeds."""
  from electra_jax.tasks import augment as augment_lib
  from electra_jax.tasks import custom

  adapter = adapters.make_adapter(cfg)
  tokenizer = resolve_tokenizer(cfg)
  feats = adapter.featurize(tokenizer, int(cfg.max_seq_length))
  sizes = ", ".join(f"{name} {len(f['input_ids']):,}" for name, f in feats.items())
  log.info(
    "task %s from %s: %s examples; %s; recipe %s",
    adapter.name,
    adapter.source,
    sizes,
    adapter.describe(),
    ", ".join(f"{k}={v}" for k, v in adapter.recipe.items()),
  )
  extra = adapter.model_extra()
  weights = None
  if cfg.get("class_weights") and extra.get("label_map") is not None:
    spec = cfg.class_weights
    if spec.strip().startswith("{"):
      spec = json.loads(spec)
    weights = custom.class_weights(spec, feats["train"]["labels"], extra["label_map"])
  return _Job(
    cfg=cfg,
    workdir=workdir,
    adapter=adapter,
    feats=feats,
    tokenizer=tokenizer,
    weights=weights,
    # Configs of tasks whose tokens carry labels (tagging, choices) have no `augment`.
    noise=augment_lib.NoiseConfig.from_mapping(cfg.augment.to_dict() if "augment" in cfg else {}),
    extra={**extra, "max_seq_length": int(cfg.max_seq_length), "recipe": adapter.recipe},
    progress=progress,
    stop_after=stop_after,
  )


def make_optimizer(cfg, recipe: dict, total_steps: int, num_layers: int):
  """The fine-tuning optax chain: the recipe's Adam, schedule and layer-wise decay.

  The official schedule's warmup is `total × warmup_fraction` unrounded, as
  `create_optimizer` computes it; the standard one rounds it down to steps.
  """
  decay = float(cfg.layerwise_lr_decay)
  return optim.make_optimizer(
    learning_rate=float(cfg.learning_rate),
    total_steps=total_steps,
    warmup_steps=_warmup_steps(cfg, recipe, total_steps),
    weight_decay=float(cfg.weight_decay),
    eps=float(cfg.adam_eps),
    clip_norm=float(cfg.clip_norm),
    official_adam=bool(recipe["official_adam"]),
    official_schedule=bool(recipe["official_schedule"]),
    layerwise_lr_decay=decay if decay != 1.0 else None,
    num_layers=num_layers,
    llrd_official_off_by_one=bool(recipe["llrd_official_off_by_one"]),
  )


def _warmup_steps(cfg, recipe: dict, total_steps: int) -> float | int:
  warmup = float(cfg.warmup_fraction) * total_steps
  return warmup if recipe["official_schedule"] else int(warmup)


def _learning_rate_fn(cfg, recipe: dict, total_steps: int):
  return optim.make_schedule(
    float(cfg.learning_rate),
    _warmup_steps(cfg, recipe, total_steps),
    total_steps,
    official=bool(recipe["official_schedule"]),
  )


def _microbatching(cfg, adapter: adapters.TaskAdapter, weights) -> dict:
  """`TrainTask`'s micro-batch settings: `microbatch_tokens` (-1 = auto), when the loss allows."""
  reduction = adapter.loss_reduction(weights)
  tokens = train.resolve_microbatch_tokens(int(cfg.get("microbatch_tokens", -1)))
  if reduction is None or tokens == 0:
    return {}
  rows, length = int(cfg.batch_size), int(cfg.max_seq_length)
  k = train.microbatch_count(rows, length, tokens)
  if k > 1:
    log.info(
      "each training step runs as %d micro-batches of %d examples (microbatch_tokens=%d)",
      k,
      rows // k,
      tokens,
    )
  return {"microbatch_tokens": tokens, "loss_reduction": reduction}


def _run_seed(job: _Job, seed: int) -> dict:
  """Trains (or resumes, or skips when finished) one seed; returns its summary entry."""
  cfg, adapter = job.cfg, job.adapter
  seed_dir = os.path.join(job.workdir, f"seed_{seed}")
  stored = workdir_lib.read_results(seed_dir)
  if stored is not None and stored.get("status") == "complete" and "summary" in stored:
    return stored["summary"]
  _recover_swap(os.path.join(seed_dir, "best"))
  model, head, init_params, config = build(cfg, job.tokenizer, adapter, seed)
  data = EpochBatches(job.feats["train"], int(cfg.batch_size), seed, job.noise, job.tokenizer)
  total = int(cfg.epochs) * data.steps_per_epoch
  length = int(cfg.max_seq_length)
  saver = _ModelSaver(config, head, adapter.head_kwargs, job.tokenizer, job.extra)

  def init_boxed(rng):
    return model.init(rng, *adapter.init_inputs(length))["params"]

  task = train.TrainTask(
    init_boxed_params=init_boxed,
    loss_fn=adapter.loss_fn(model, job.weights),
    optimizer=make_optimizer(cfg, adapter.recipe, total, config.num_hidden_layers),
    init_params=(lambda p=init_params: p) if init_params is not None else None,
    signature={
      "model": config.to_dict(),
      "task": adapter.name,
      "head": head,
      **adapter.head_kwargs,
      "max_seq_length": length,
    },
    learning_rate_fn=_learning_rate_fn(cfg, adapter.recipe, total),
    eval_fn=_make_eval_fn(job, model, saver, seed, seed_dir) if adapter.dev_splits else None,
    **_microbatching(cfg, adapter, job.weights),
  )
  settings = train.LoopSettings(
    total_steps=total,
    seed=seed,
    mesh_shape=dict(cfg.mesh),
    sharding_rules=str(cfg.sharding_rules),
    log_every=int(cfg.log_every),
    checkpoint_every=int(cfg.checkpoint_every),
    eval_every=data.steps_per_epoch,
    tokens_per_batch=int(cfg.batch_size) * length,
    progress=job.progress,
    stop_after=job.stop_after,
  )
  state, results = train.train_loop(
    seed_dir, task, data, settings, extra_results={"config": cfg.to_dict(), "seed": seed}
  )
  if results["status"] != "complete":
    return _stopped_entry(results["stopped"], results["step"])
  if jax.process_index() == 0:
    saver.save(os.path.join(seed_dir, "last"), state.params, {"step": results["step"]})
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
  """The final model's dev metrics (`last`, the headline) and the dev-selected best epoch's."""
  final_eval = evals[max(evals, key=int)] if evals else {}
  _, best_step = _best_step(job, evals)
  best_eval = evals[str(best_step)] if best_step is not None else final_eval
  return {
    "status": "complete",
    "last": final_eval,
    "best_step": best_step,
    "best": best_eval,
    "epochs": evals,
  }


def _make_eval_fn(job: _Job, model, saver, seed: int, seed_dir: str):
  """`(params, step, history) -> dev metrics`, and `best/` kept at the best primary score.

  Saving `best/` is the job's bookkeeping, not the evaluation's: it happens
  here only because the params of an epoch exist only while the loop holds
  them; the history (restored on resume) decides, so it survives interruptions.
  """
  adapter = job.adapter
  predict = make_predict_fn(model, int(job.cfg.eval_batch_size), adapter)

  def evaluate(params) -> dict:
    out = {}
    for split in adapter.dev_splits:
      f = job.feats[split]
      predictions = adapter.predictions(predict(params, f), split)
      if jax.process_index() == 0:
        adapter.write_eval_outputs(predictions, seed_dir, split)
      m = adapter.metrics(predictions, f, split)
      prefix = "" if len(adapter.dev_splits) == 1 else f"{split}/"
      out.update({f"{prefix}{name}": value for name, value in m.items()})
    return out

  def eval_fn(params, step, history):
    out = evaluate(params)
    primary = job.primary(out)
    if primary is not None and primary > _best_step(job, history)[0] and jax.process_index() == 0:
      saver.save(os.path.join(seed_dir, "best"), params, {"step": step, "dev": out})
    log.info("[seed %d] step %d: %s", seed, step, ", ".join(f"{k} {v:.4f}" for k, v in out.items()))
    return out

  return eval_fn


@dataclasses.dataclass
class _ModelSaver:
  """Writes electra-jax checkpoints of one seed's model (`best/`, `last/`)."""

  config: Any
  head: str
  head_kwargs: dict
  tokenizer: Any
  extra: dict

  def save(self, path: str, params, extra: dict) -> None:
    """Replaces `path` atomically.

    The new copy is written beside it, then swapped in with two renames
    (`path` → `path.old`, new → `path`); a kill between them leaves
    `path.old`, which `_recover_swap` puts back, so `path` is always either
    the previous or the new model, never missing or half-written.
    """
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tok_tmp = path + ".tokenizer.tmp"
    shutil.rmtree(tok_tmp, ignore_errors=True)
    self.tokenizer.save(tok_tmp)
    pretrained.save_pretrained(
      tmp,
      self.config,
      jax.device_get(params),
      head=self.head,
      head_kwargs=self.head_kwargs,
      tokenizer_dir=tok_tmp,
      extra={**self.extra, **extra},
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
  """Undoes a `_ModelSaver.save` interrupted between its two renames."""
  old = path + ".old"
  if os.path.exists(old) and not os.path.exists(path):
    os.replace(old, path)
  shutil.rmtree(old, ignore_errors=True)
  shutil.rmtree(path + ".tmp", ignore_errors=True)
  shutil.rmtree(path + ".tokenizer.tmp", ignore_errors=True)


def _stats(values: list[float]) -> dict:
  return {
    "median": statistics.median(values),
    "mean": statistics.fmean(values),
    "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
    "values": values,
  }


def _summarise(job: _Job, per_seed: dict) -> dict:
  """Median / mean / std over seeds of the final model's dev metrics (`metrics`, the headline,
  as the official code reports) and of the dev-selected best epochs' (`dev_selected`)."""

  def by_metric(kind: str) -> dict:
    names = sorted({k for r in per_seed.values() for k in r[kind]})
    return {n: _stats([r[kind][n] for r in per_seed.values() if n in r[kind]]) for n in names}

  final, selected = by_metric("last"), by_metric("best")
  dev = job.adapter.dev_splits
  name = job.adapter.primary_metric
  primary = name if name in final else (f"{dev[0]}/{name}" if dev else None)
  best_seed = None
  if primary in final:
    best_seed = max(per_seed, key=lambda s: per_seed[s]["last"].get(primary, -float("inf")))
  return {
    "primary_metric": primary,
    "metrics": final,
    "dev_selected": {
      "note": "best of the per-epoch dev evaluations: optimistic, not what the paper reports",
      "metrics": selected,
    },
    "best_seed": best_seed,
  }


def _write_test_predictions(job: _Job, seed: int) -> dict:
  """Leaderboard files (the adapter's format) from `seed`'s final model (`last/`)."""
  adapter = job.adapter
  model, params = pretrained.from_pretrained(os.path.join(job.workdir, f"seed_{seed}", "last"))
  predict = make_predict_fn(model, int(job.cfg.eval_batch_size), adapter)
  out_dir = os.path.join(job.workdir, "test_predictions")
  return {
    split: adapter.write_submission(
      adapter.predictions(predict(params, job.feats[split]), split), out_dir, split
    )
    for split in adapter.test_splits
  }
