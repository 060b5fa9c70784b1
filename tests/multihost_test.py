"""Multi-host pretraining on one machine: two `jax.distributed` CPU processes.

Two processes with two (fake) CPU devices each run `electra-jax pretrain` with
`distributed=True` against a coordinator on localhost (XLA:CPU collectives go
through gloo). Each process reads its own shard of the prepared data
(`PretrainingDataset(process_index=i, process_count=2)`), and
`make_array_from_process_local_data` stacks the two local halves into the
global batch. The reference is one process doing the same arithmetic on the
same global batches (process 0's half, then process 1's): the per-step losses
must agree to float32 tolerance. The run also checkpoints from both processes,
gathers the FSDP-sharded params for the export, and writes results once.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax import experiment, job_setup, pretraining, run_pretraining, train
from electra_jax.input_pipeline.loader import PretrainingDataset
from electra_jax.input_pipeline.prepare import prepare_pretraining_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "experiments", "configs", "pretrain.py")
SAMPLE = os.path.join(job_setup.SAMPLE_DATA, "wikitext2_sample.txt")
STEPS = 3
OVERRIDES = {
  "total_steps": STEPS,
  "warmup_steps": 1,
  "log_every": 1,
  "checkpoint_every": STEPS,
  "batch_size": 8,
  "max_seq_length": 64,
  "async_checkpoints": False,
  "sharding_rules": "fsdp",  # params sharded across both processes' devices
  "mesh.data": 1,
  "mesh.fsdp": -1,
}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _reference_losses(cfg, data_dir) -> list[float]:
  """One process, the same global batches: process 0's local batch, then process 1's."""
  tokenizer = job_setup.resolve_tokenizer(cfg)
  disc_config = run_pretraining.model_configs(cfg, tokenizer)
  length = int(cfg.max_seq_length)
  objective = run_pretraining.make_objective(
    cfg,
    mask_id=tokenizer.mask_id,
    special_ids=(tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id),
  )
  max_predictions = objective.max_predictions
  model = run_pretraining.make_rtd_model(cfg, disc_config, objective)
  optimizer = run_pretraining.make_optimizer(cfg)
  # As train_loop: the init and train-state keys come from PRNGKey(seed).
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(int(cfg.seed)))
  boxed = model.init(init_rng, *pretraining.init_inputs(1, length, max_predictions))["params"]
  params = train.strip_boxes(boxed)
  state = train.TrainState(
    step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), rng=state_rng
  )
  step_fn = jax.jit(train.make_train_step(pretraining.make_loss_fn(model, objective), optimizer))
  hosts = [
    PretrainingDataset(
      data_dir, 4, seed=int(cfg.seed), shuffle=bool(cfg.shuffle), process_index=i, process_count=2
    ).iterator()
    for i in range(2)
  ]
  losses = []
  for _ in range(STEPS):
    local = [next(it) for it in hosts]
    batch = {k: np.concatenate([b[k] for b in local]) for k in local[0]}
    state, metrics = step_fn(state, batch)
    losses.append(float(metrics["loss"]))
  return losses


def test_two_process_pretraining_matches_one_process(tmp_path):
  data_dir = str(tmp_path / "data")
  cfg = experiment.load_config(
    f"{CONFIG}:size=tiny",
    [f"--config.{k}={v}" for k, v in {**OVERRIDES, "data": data_dir}.items()],
  )
  prepare_pretraining_data(
    [SAMPLE], job_setup.resolve_tokenizer(cfg), int(cfg.max_seq_length), data_dir
  )

  workdir = tmp_path / "run"
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  procs = []
  for pid in range(2):
    args = {
      **OVERRIDES,
      "data": data_dir,
      "distributed": True,
      "coordinator_address": f"localhost:{port}",
      "num_processes": 2,
      "process_id": pid,
    }
    cmd = [sys.executable, "-m", "electra_jax.cli", "pretrain", "--config", f"{CONFIG}:size=tiny"]
    cmd += ["--workdir", str(workdir), "--no-progress"]
    cmd += [f"--config.{k}={v}" for k, v in args.items()]
    # Output to files, not pipes: a process blocked on a full pipe would stall the other's collectives.
    log = open(tmp_path / f"process{pid}.log", "w")
    procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
  for p in procs:
    try:
      p.wait(timeout=300)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail("the two-process run did not finish in 300 s")
  for pid, p in enumerate(procs):
    out = (tmp_path / f"process{pid}.log").read_text()
    assert p.returncode == 0, f"process {pid} failed:\n{out[-3000:]}"

  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # one writer, no duplicates
  results = json.load(open(workdir / "results.json"))
  assert results["step"] == STEPS and results["stopped"] == "completed"
  assert os.path.isfile(workdir / "export" / "discriminator" / "model.safetensors")
  assert os.path.isdir(workdir / "checkpoints" / str(STEPS))

  expected = _reference_losses(cfg, data_dir)
  got = [r["loss"] for r in rows]
  print("two processes:", got, "one process:", expected)
  np.testing.assert_allclose(got, expected, rtol=2e-5)
