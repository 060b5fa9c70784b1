"""ELECTRA pretraining: config → tokenizer, data, RTD model, optimizer → `train_loop`.

Everything specific to pretraining lives in `pretraining.py` (masking,
sampling, losses, the generator + discriminator module); this module wires it
to the shared loop in `train.py` and exports the result:

  WORKDIR/checkpoints/          Orbax train-state checkpoints (resume)
  WORKDIR/metrics.jsonl         metrics every `log_every` steps
  WORKDIR/results.json          final metrics + the config
  WORKDIR/final/discriminator   electra-jax checkpoints (fine-tune with init_from)
  WORKDIR/final/generator
  WORKDIR/export/{discriminator,generator}   HF transformers directories
"""

from __future__ import annotations

import glob
import logging
import os
import shutil

import jax
import ml_collections

from electra_jax import faults, job_setup, objectives, optim, pretraining, sharding, train, validate
from electra_jax import workdir as workdir_lib
from electra_jax.config import ElectraConfig
from electra_jax.errors import ElectraError

log = logging.getLogger(__name__)


def _is_prepared(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "manifest.json"))


def resolve_data(
  cfg: ml_collections.ConfigDict, workdir: str, tokenizer, *, progress: bool = True
) -> str:
  """Returns a prepared dataset directory, preparing raw text into WORKDIR/data if needed.

  `progress`: show the preparation's progress bar and summary line.
  """
  from electra_jax.input_pipeline import prepare

  if not cfg.data:
    raise ElectraError(
      "config.data is empty: give a prepared dataset directory or raw text files "
      "(--config.data=path/to/*.txt)"
    )
  specs = [s.strip() for s in str(cfg.data).split(",") if s.strip()]
  if len(specs) == 1 and os.path.isdir(specs[0]) and _is_prepared(specs[0]):
    return specs[0]
  for spec in specs:
    if not spec.startswith("tfds:") and not glob.glob(spec):
      raise ElectraError(
        f"config.data: {spec} matches no file (and is not a prepared dataset directory)"
      )
  out = os.path.join(workdir, "data")
  if jax.process_index() == 0:
    prepare.prepare_if_needed(
      specs,
      tokenizer,
      int(cfg.max_seq_length),
      out,
      seed=int(cfg.seed),
      max_position_embeddings=int(cfg.model.max_position_embeddings),
      progress=progress,
    )
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("prepared pretraining data")
  return out


def model_configs(cfg: ml_collections.ConfigDict, tokenizer) -> ElectraConfig:
  """The discriminator's config (`job_setup.model_config`), checked against max_seq_length."""
  disc = job_setup.model_config(cfg, tokenizer)
  if cfg.max_seq_length > disc.max_position_embeddings:
    raise ElectraError(
      f"max_seq_length {cfg.max_seq_length} exceeds model.max_position_embeddings "
      f"{disc.max_position_embeddings}"
    )
  return disc


def _load_init_from(cfg, init_boxed, disc_config, gen_config):
  """`() -> params` for `init_from` (converted discriminator, optional generator)."""
  from electra_jax import model as model_lib
  from electra_jax import pretrained

  spec = objectives.get(cfg.objective)
  if spec.has_discriminator and spec.export_head is None:
    raise ElectraError(
      f"init_from is not supported for objective {spec.name} (its main model has no HF equivalent)"
    )

  def load():
    scratch = train.strip_boxes(jax.jit(init_boxed)(jax.random.PRNGKey(int(cfg.seed))))
    discriminator = generator = None
    if spec.has_discriminator:
      loaded_model, discriminator = pretrained.from_pretrained(cfg.init_from, head=spec.export_head)
      _check_config(loaded_model.config, disc_config, cfg.init_from)
    if cfg.init_from_generator:
      loaded_model, generator = pretrained.from_pretrained(
        cfg.init_from_generator, head="masked_lm"
      )
      _check_config(loaded_model.config, gen_config, cfg.init_from_generator)
    elif not spec.has_discriminator:  # init_from is the generator, the only model
      loaded_model, generator = pretrained.from_pretrained(cfg.init_from, head="masked_lm")
      _check_config(loaded_model.config, gen_config, cfg.init_from)
    if generator is None:  # a fresh generator around the loaded embeddings
      generator = pretraining.generator_params(scratch)
    if cfg.scan_layers:
      if discriminator is not None:
        discriminator = model_lib.layers_to_scan(discriminator, disc_config.num_hidden_layers)
      generator = model_lib.layers_to_scan(generator, gen_config.num_hidden_layers)
    params = pretraining.combine_params(discriminator, generator)
    jax.tree.map(lambda a, b: None, params, scratch)  # same structure, or a clear error below
    return params

  def checked():
    try:
      return load()
    except ValueError as e:
      raise ElectraError(
        f"init_from {cfg.init_from}: params do not fit the configured model ({e})"
      ) from None

  return checked


def _check_config(loaded: ElectraConfig, wanted: ElectraConfig, path: str) -> None:
  fields = (
    "vocab_size",
    "embedding_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
  )
  diff = [
    f"{f} {getattr(loaded, f)} != {getattr(wanted, f)}"
    for f in fields
    if getattr(loaded, f) != getattr(wanted, f)
  ]
  if diff:
    raise ElectraError(f"init_from {path} does not match config.model: {'; '.join(diff)}")


def make_objective(
  cfg: ml_collections.ConfigDict,
  *,
  mask_id: int,
  special_ids: tuple[int, ...],
  length: int | None = None,
) -> pretraining.ObjectiveConfig:
  """The objective from the config's keys, for sequences of `length` (default max_seq_length)."""
  length = int(cfg.max_seq_length) if length is None else length
  max_predictions = int(cfg.max_predictions_per_seq) or pretraining.max_predictions_per_seq(
    float(cfg.mask_prob), length
  )
  return pretraining.ObjectiveConfig(
    name=str(cfg.objective),
    mask_prob=float(cfg.mask_prob),
    max_predictions=max_predictions,
    mask_id=mask_id,
    special_ids=tuple(special_ids),
    gen_weight=float(cfg.gen_weight),
    disc_weight=float(cfg.disc_weight),
    temperature=float(cfg.temperature),
  )


def make_rtd_model(
  cfg: ml_collections.ConfigDict,
  disc_config: ElectraConfig,
  objective: pretraining.ObjectiveConfig,
):
  """Generator + discriminator (`pretraining.build_rtd_model`) as the config asks."""
  return pretraining.build_rtd_model(
    disc_config,
    objective=objective.name,
    generator_hidden_size=float(cfg.generator_hidden_size),
    dtype=job_setup.compute_dtype(cfg.compute_dtype),
    scan_layers=bool(cfg.scan_layers),
    remat=bool(cfg.remat),
  )


def make_optimizer(cfg: ml_collections.ConfigDict):
  """The pretraining optax chain from the config's optimisation keys."""
  return optim.make_optimizer(
    learning_rate=float(cfg.learning_rate),
    total_steps=int(cfg.total_steps),
    warmup_steps=int(cfg.warmup_steps),
    weight_decay=float(cfg.weight_decay),
    b1=float(cfg.adam_b1),
    b2=float(cfg.adam_b2),
    eps=float(cfg.adam_eps),
    clip_norm=float(cfg.clip_norm),
    official_adam=bool(cfg.official_adam),
    grad_accum_steps=int(cfg.grad_accum_steps),
  )


def run(
  cfg: ml_collections.ConfigDict,
  workdir: str,
  *,
  progress: bool = True,
  stop_after: int | None = None,
  devices: list | None = None,
) -> dict:
  """Pretrains (or resumes) in `workdir` and exports the final models.

  Args:
    cfg: a config from `experiments/configs/pretrain.py`.
    workdir: output directory (resumed if it holds a checkpoint).
    progress: show a progress bar.
    stop_after: stop after this many steps of this invocation (tests).
    devices: the devices the mesh is built from (default: all), e.g.
      `jax.devices()[:1]` to compare against a sharded run in one process.

  Returns:
    The results dict written to `WORKDIR/results.json`.
  """
  validate.check_pretrain_config(cfg, workdir)  # before anything is created or compiled
  sharding.maybe_initialize_distributed(cfg)
  cfg = job_setup.with_resolved_compute_dtype(
    cfg
  )  # recorded concrete: `auto` depends on the device
  config = cfg.to_dict()
  changed = workdir_lib.check_config(workdir, config, resuming=workdir_lib.has_checkpoint(workdir))
  done = _finished(workdir, changed)
  if done is not None:
    return done
  tokenizer = job_setup.resolve_tokenizer(cfg)
  disc_config = model_configs(cfg, tokenizer)
  data_dir = _prepare_workdir(cfg, workdir, tokenizer, config, changed, progress=progress)
  accum = int(cfg.grad_accum_steps)
  dataset, micro_batch = _make_dataset(cfg, data_dir, tokenizer, disc_config)

  objective = make_objective(
    cfg,
    mask_id=tokenizer.mask_id,
    special_ids=(tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id),
  )
  max_predictions = objective.max_predictions
  model = make_rtd_model(cfg, disc_config, objective)
  gen_config = model.gen_config
  length = int(cfg.max_seq_length)

  def init_boxed(rng):
    return model.init(rng, *pretraining.init_inputs(1, length, max_predictions))["params"]

  optimizer = make_optimizer(cfg)
  schedule = optim.make_schedule(
    float(cfg.learning_rate), int(cfg.warmup_steps), int(cfg.total_steps)
  )

  signature = _signature(cfg, model, objective, tokenizer)
  init_params = _load_init_from(cfg, init_boxed, disc_config, gen_config) if cfg.init_from else None
  data_iter = dataset.iterator()
  task = train.TrainTask(
    init_boxed_params=init_boxed,
    loss_fn=pretraining.make_loss_fn(model, objective),
    optimizer=optimizer,
    init_params=init_params,
    signature=signature,
    learning_rate_fn=lambda step: schedule(step // accum),
  )
  settings = train.LoopSettings(
    total_steps=int(cfg.total_steps) * accum,
    seed=int(cfg.seed),
    mesh_shape=dict(cfg.mesh),
    sharding_rules=str(cfg.sharding_rules),
    log_every=int(cfg.log_every),
    checkpoint_every=int(cfg.checkpoint_every),
    keep_checkpoints=int(cfg.keep_checkpoints),
    async_checkpoints=bool(cfg.async_checkpoints),
    tokens_per_batch=micro_batch * length,
    progress=progress,
    stop_after=stop_after,
  )
  extra = {
    "config": config,
    "config_history": workdir_lib.config_history(workdir),
    "data": data_dir,
    "max_predictions_per_seq": max_predictions,
  }
  state, results = train.train_loop(
    workdir, task, data_iter, settings, extra_results=extra, devices=devices
  )
  if results["status"] == "complete" and not _exports_present(results):
    _export(cfg, workdir, results, state.params, model, tokenizer)
  return results


def _prepare_workdir(
  cfg, workdir: str, tokenizer, config: dict, changed: list[str], *, progress: bool
) -> str:
  """The prepared data directory; the workdir then exists and records the config."""
  new_workdir = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  try:
    data_dir = resolve_data(cfg, workdir, tokenizer, progress=progress)
  except ElectraError:
    if new_workdir:  # bad raw text: leave nothing behind
      shutil.rmtree(workdir, ignore_errors=True)
    raise
  if jax.process_index() == 0:
    workdir_lib.record_config(workdir, config, changed)
  return data_dir


def _make_dataset(cfg, data_dir: str, tokenizer, disc_config: ElectraConfig):
  """`(this host's PretrainingDataset, micro-batch size)`, checked against the model."""
  from electra_jax.input_pipeline.loader import PretrainingDataset

  num_hosts = jax.process_count()
  accum = int(cfg.grad_accum_steps)
  if accum < 1 or cfg.batch_size % (num_hosts * accum):
    raise ElectraError(
      f"batch_size {cfg.batch_size} must be divisible by hosts ({num_hosts}) × grad_accum_steps ({accum})"
    )
  # With gradient accumulation each loop step is one micro-batch of
  # batch_size / grad_accum_steps examples; the optimizer steps every `accum`.
  micro_batch = int(cfg.batch_size) // accum
  dataset = PretrainingDataset(
    data_dir, micro_batch // num_hosts, seed=int(cfg.seed), shuffle=bool(cfg.shuffle)
  )
  dataset.check_compatible(
    tokenizer=tokenizer,
    max_seq_length=int(cfg.max_seq_length),
    max_position_embeddings=disc_config.max_position_embeddings,
    vocab_size=disc_config.vocab_size,
  )
  return dataset, micro_batch


def _signature(cfg, model: pretraining.ElectraRTD, objective, tokenizer) -> dict:
  """What a resumed run must share with the checkpoint (`train_loop`'s `signature`)."""
  return {
    "discriminator": model.disc_config.to_dict(),
    "generator": model.gen_config.to_dict(),
    "objective": objective.name,
    "max_seq_length": int(cfg.max_seq_length),
    "tokenizer": tokenizer.fingerprint,
    "scan_layers": bool(cfg.scan_layers),
    "optimizer": {
      "official_adam": bool(cfg.official_adam),
      "grad_accum_steps": int(cfg.grad_accum_steps),
    },
  }


def _export(cfg, workdir: str, results: dict, params, model: pretraining.ElectraRTD, tokenizer):
  """`export_final` of the trained params, recorded in results.json."""
  if jax.process_count() > 1:
    # Every process takes part in the gather; only process 0 writes.
    from jax.experimental import multihost_utils

    params = multihost_utils.process_allgather(params, tiled=True)
  if jax.process_index() == 0:
    results["exported"] = export_final(
      cfg, workdir, params, model.disc_config, model.gen_config, tokenizer, model.objective
    )
    train.write_results(workdir, results)


def _exports_present(results: dict) -> bool:
  exported = results.get("exported") or {}
  paths = [p for part in exported.values() for p in part.values() if p]
  return bool(paths) and all(os.path.isdir(p) for p in paths)


def _finished(workdir: str, changed: list[str]) -> dict | None:
  """The stored results when `workdir` holds this very run, finished and exported."""
  stored = workdir_lib.read_results(workdir)
  if (
    stored is None
    or stored.get("status") != "complete"
    or workdir_lib.math_changes(changed)
    or not _exports_present(stored)
  ):
    return None
  if jax.process_index() == 0:
    log.info(
      "%s: pretraining already complete at step %s; nothing to do", workdir, stored.get("step")
    )
  return stored


def export_final(cfg, workdir, params, disc_config, gen_config, tokenizer, objective) -> dict:
  """Writes electra-jax and HF copies of the discriminator and generator."""
  from electra_jax import model as model_lib
  from electra_jax import pretrained

  params = jax.device_get(params)
  if cfg.scan_layers:
    params = {
      k: (
        model_lib.scan_to_layers(
          v, (disc_config if k == "discriminator" else gen_config).num_hidden_layers
        )
        if k != "embeddings"
        else v
      )
      for k, v in params.items()
    }
  tok_dir = os.path.join(workdir, "final", "tokenizer")
  if os.path.isdir(tok_dir):
    shutil.rmtree(tok_dir)
  tokenizer.save(tok_dir)
  parts = {"generator": (gen_config, "masked_lm", pretraining.generator_params(params))}
  main_head = objectives.get(objective).export_head  # None: the main model is not exported
  if main_head is not None:
    parts["discriminator"] = (disc_config, main_head, pretraining.discriminator_params(params))
  out = {}
  for name, (config, head, tree) in parts.items():
    jax_dir = os.path.join(workdir, "final", name)
    hf_dir = os.path.join(workdir, "export", name)
    for d in (jax_dir, hf_dir):
      if os.path.isdir(d):
        shutil.rmtree(d)
      os.makedirs(os.path.dirname(d), exist_ok=True)
    faults.point("export")
    pretrained.save_pretrained(
      jax_dir, config, tree, head=head, tokenizer_dir=tok_dir, extra={"objective": objective}
    )
    if cfg.export_hf:
      pretrained.convert_to_hf(jax_dir, hf_dir)
    out[name] = {"electra_jax": jax_dir, "hf": hf_dir if cfg.export_hf else None}
  shutil.rmtree(tok_dir, ignore_errors=True)
  return out
