"""End-to-end tests of `electra-jax pretrain` (tiny preset, bundled sample text)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from electra_jax import cli, experiment, job_setup, run_pretraining
from electra_jax.errors import ElectraError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "experiments", "configs", "pretrain.py")
SAMPLE = os.path.join(job_setup.SAMPLE_DATA, "wikitext2_sample.txt")


def _cfg(**overrides):
  base = {
    "data": SAMPLE,
    "total_steps": 6,
    "warmup_steps": 1,
    "log_every": 2,
    "checkpoint_every": 3,
    "batch_size": 8,
    "max_seq_length": 64,
    "async_checkpoints": False,
  }
  base.update(overrides)
  return experiment.load_config(
    f"{CONFIG}:size=tiny", [f"--config.{k}={v}" for k, v in base.items()]
  )


def test_tiny_pretraining_writes_metrics_and_exports(tmp_path):
  results = run_pretraining.run(_cfg(), str(tmp_path), progress=False)
  assert results["step"] == 6 and results["stopped"] == "completed"
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [2, 4, 6]
  for key in (
    "loss",
    "generator_loss",
    "discriminator_loss",
    "generator_accuracy",
    "discriminator_accuracy",
    "replaced_precision",
    "replaced_recall",
    "sampled_replaced_fraction",
    "learning_rate",
    "grad_norm",
    "tokens_per_sec",
    "step_time",
  ):
    assert key in rows[-1], key
  saved = json.load(open(tmp_path / "results.json"))
  assert saved["config"]["size"] == "tiny"
  assert os.path.isfile(tmp_path / "export" / "discriminator" / "model.safetensors")

  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  hf, info = transformers.ElectraForPreTraining.from_pretrained(
    str(tmp_path / "export" / "discriminator"), output_loading_info=True
  )
  assert not info["missing_keys"] and not info["unexpected_keys"]
  gen = transformers.ElectraForMaskedLM.from_pretrained(str(tmp_path / "export" / "generator"))
  ids = np.array([[2, 1996, 4937, 2003, 103, 1012, 3]], np.int64)
  import electra_jax

  model, params = electra_jax.from_pretrained(str(tmp_path / "final" / "discriminator"))
  ours = np.asarray(model.apply({"params": params}, ids.astype(np.int32)))
  with torch.no_grad():
    theirs = hf(torch.from_numpy(ids)).logits.numpy()
    gen(torch.from_numpy(ids))
  np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_resume_continues_the_same_run(tmp_path):
  full = tmp_path / "full"
  split = tmp_path / "split"
  run_pretraining.run(_cfg(), str(full), progress=False)
  first = run_pretraining.run(_cfg(), str(split), progress=False, stop_after=3)
  assert first["stopped"] == "stop_after"
  run_pretraining.run(_cfg(), str(split), progress=False)
  a = [json.loads(line) for line in open(full / "metrics.jsonl")]
  b = [json.loads(line) for line in open(split / "metrics.jsonl")]
  assert a[-1]["loss"] == b[-1]["loss"]
  _assert_same_params(full, split)


def _assert_same_params(a, b):
  import jax

  import electra_jax

  for name in ("discriminator", "generator"):
    _, pa = electra_jax.from_pretrained(str(a / "final" / name))
    _, pb = electra_jax.from_pretrained(str(b / "final" / name))
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_workdir_of_another_model_is_refused(tmp_path):
  run_pretraining.run(_cfg(total_steps=2, checkpoint_every=2), str(tmp_path), progress=False)
  with pytest.raises(ElectraError, match="different config.*model.hidden_size"):
    run_pretraining.run(_cfg(**{"model.hidden_size": 32}), str(tmp_path), progress=False)


def test_prepared_data_of_another_length_is_refused(tmp_path):
  run_pretraining.run(_cfg(total_steps=1, checkpoint_every=1), str(tmp_path / "a"), progress=False)
  with pytest.raises(ElectraError, match="max_seq_length"):
    run_pretraining.run(
      _cfg(data=str(tmp_path / "a" / "data"), max_seq_length=32),
      str(tmp_path / "b"),
      progress=False,
    )


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
  assert (
    cli.main(
      [
        "pretrain",
        "--config",
        f"{CONFIG}:size=tiny",
        "--workdir",
        str(tmp_path),
        "--config.bogus=1",
      ]
    )
    == 2
  )
  assert "unknown config key" in capsys.readouterr().err
  code = cli.main(
    [
      "pretrain",
      "--config",
      f"{CONFIG}:size=tiny",
      "--workdir",
      str(tmp_path),
      "--config.data=/nonexistent/*.txt",
    ]
  )
  err = capsys.readouterr().err
  assert code == 2 and "matches no file" in err and len(err.strip().splitlines()) == 1
  code = cli.main(
    [
      "pretrain",
      "--config",
      f"{CONFIG}:size=tiny",
      "--workdir",
      str(tmp_path),
      f"--config.data={SAMPLE}",
      "--config.max_seq_length=1024",
    ]
  )
  assert code == 2 and "max_position_embeddings" in capsys.readouterr().err


def test_help(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["pretrain", "--help"])
  assert e.value.code == 0
  assert "--config" in capsys.readouterr().out


@pytest.mark.slow
def test_kill_9_between_checkpoints_then_resume_is_bitwise_exact(tmp_path):
  """A run killed with SIGKILL resumes from its last checkpoint and ends bitwise equal."""
  steps, every = 40, 10
  args = [
    sys.executable,
    "-m",
    "electra_jax.cli",
    "pretrain",
    "--config",
    f"{CONFIG}:size=tiny",
    "--no-progress",
    f"--config.data={SAMPLE}",
    f"--config.total_steps={steps}",
    "--config.warmup_steps=4",
    f"--config.checkpoint_every={every}",
    "--config.log_every=1",
    "--config.batch_size=8",
    "--config.max_seq_length=64",
    "--config.async_checkpoints=False",
  ]
  env = dict(os.environ, XLA_FLAGS="")
  subprocess.run(
    [*args, "--workdir", str(tmp_path / "full")], check=True, env=env, capture_output=True
  )
  proc = subprocess.Popen(
    [*args, "--workdir", str(tmp_path / "killed")], env=env, stdout=subprocess.DEVNULL
  )
  metrics = tmp_path / "killed" / "metrics.jsonl"
  deadline = time.time() + 600
  while time.time() < deadline:  # kill between the 2nd and 3rd checkpoint
    if metrics.exists() and sum(1 for _ in open(metrics)) >= 2 * every + every // 2:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  ckpts = sorted(int(d) for d in os.listdir(tmp_path / "killed" / "checkpoints") if d.isdigit())
  assert ckpts and ckpts[-1] < steps, ckpts
  subprocess.run(
    [*args, "--workdir", str(tmp_path / "killed")], check=True, env=env, capture_output=True
  )
  _assert_same_params(tmp_path / "full", tmp_path / "killed")


def _cli_args(**overrides):
  values = {
    "data": SAMPLE,
    "warmup_steps": 1,
    "log_every": 1,
    "batch_size": 8,
    "max_seq_length": 64,
    "async_checkpoints": False,
    **overrides,
  }
  return [
    sys.executable,
    "-m",
    "electra_jax.cli",
    "pretrain",
    "--config",
    f"{CONFIG}:size=tiny",
    "--no-progress",
    *(f"--config.{k}={v}" for k, v in values.items()),
  ]


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes(tmp_path):
  """TPU preemption: SIGTERM mid-run saves the current step and exits 143; a rerun resumes there."""
  # checkpoint_every > total_steps: only the SIGTERM save can write a mid-run checkpoint.
  args = [*_cli_args(total_steps=10_000, checkpoint_every=100_000), "--workdir", str(tmp_path)]
  env = dict(os.environ, XLA_FLAGS="")
  proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and sum(1 for _ in open(metrics)) >= 3:
      break
    time.sleep(0.05)
  assert proc.poll() is None, proc.stderr.read().decode()
  proc.send_signal(signal.SIGTERM)
  t0 = time.time()
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 143, err.decode()  # 128 + SIGTERM: stopped, resumable
  assert "Re-run the same command to resume" in err.decode()
  assert time.time() - t0 < 30  # stops at the next step, not at the end of the run
  results = json.load(open(tmp_path / "results.json"))
  assert results["stopped"] == "SIGTERM" and results["status"] == "stopped"
  stopped = results["step"]
  assert 3 <= stopped < 10_000
  rows = [json.loads(line) for line in open(metrics)]
  assert rows[-1]["step"] == stopped  # log_every=1: every step up to the stop is logged
  ckpts = [int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
  assert ckpts == [stopped]
  # The rerun (a short total so it finishes) picks up at stopped + 1.
  rerun = _cli_args(total_steps=stopped + 2, checkpoint_every=100_000, allow_changed="total_steps")
  subprocess.run([*rerun, "--workdir", str(tmp_path)], check=True, env=env, capture_output=True)
  rows = [json.loads(line) for line in open(metrics)]
  assert [r["step"] for r in rows] == list(range(1, stopped + 3))
  assert json.load(open(tmp_path / "results.json"))["stopped"] == "completed"


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
  """3 steps of tiny pretraining on one device: the reference for the sharded runs."""
  import jax

  work = tmp_path_factory.mktemp("one_device")
  cfg = _cfg(total_steps=3, log_every=1, checkpoint_every=3, **{"mesh.data": 1})
  run_pretraining.run(cfg, str(work), progress=False, devices=jax.devices()[:1])
  return work


@pytest.mark.parametrize(
  "mesh,rules",
  [
    ({"data": 8}, "dp"),
    ({"data": 2, "fsdp": 4}, "fsdp"),
    ({"data": 2, "fsdp": 2, "model": 2}, "fsdp_tp"),
  ],
)
def test_sharded_pretraining_matches_one_device(tmp_path, one_device_run, mesh, rules):
  """3 steps on 8 fake devices give one device's losses and params (fp32: rtol 1e-5, atol 1e-6)."""
  import jax

  import electra_jax

  if jax.device_count() < 8:
    pytest.skip("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8 (conftest.py)")
  overrides = {f"mesh.{k}": v for k, v in {"data": 1, "fsdp": 1, "model": 1, **mesh}.items()}
  cfg = _cfg(total_steps=3, log_every=1, checkpoint_every=3, sharding_rules=rules, **overrides)
  results = run_pretraining.run(cfg, str(tmp_path), progress=False)
  assert len(results["devices"]) == 8
  ref = [json.loads(line) for line in open(one_device_run / "metrics.jsonl")]
  got = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in got] == [r["step"] for r in ref] == [1, 2, 3]
  np.testing.assert_allclose(
    [r["loss"] for r in got], [r["loss"] for r in ref], rtol=1e-5, atol=1e-6
  )
  for name in ("discriminator", "generator"):
    _, pa = electra_jax.from_pretrained(str(one_device_run / "final" / name))
    _, pb = electra_jax.from_pretrained(str(tmp_path / "final" / name))
    assert jax.tree.structure(pa) == jax.tree.structure(pb)
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
      np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def pretrained_tiny(tmp_path_factory):
  """A tiny model pretrained for 2 steps (final/ and export/ for init_from)."""
  work = tmp_path_factory.mktemp("pretrained_tiny")
  run_pretraining.run(_cfg(total_steps=2, checkpoint_every=2), str(work), progress=False)
  return work


@pytest.mark.parametrize("source", ["final", "export"])
def test_init_from_starts_from_the_loaded_params(tmp_path, pretrained_tiny, source):
  """With learning_rate 0 one step leaves the params as loaded: the run started from them."""
  import jax

  import electra_jax

  cfg = _cfg(
    total_steps=1,
    checkpoint_every=1,
    learning_rate=0.0,
    init_from=str(pretrained_tiny / source / "discriminator"),
    init_from_generator=str(pretrained_tiny / source / "generator"),
    seed=7,  # a different scratch init, so equal params can only come from init_from
  )
  run_pretraining.run(cfg, str(tmp_path), progress=False)
  for name in ("discriminator", "generator"):
    _, want = electra_jax.from_pretrained(str(pretrained_tiny / "final" / name))
    _, got = electra_jax.from_pretrained(str(tmp_path / "final" / name))
    assert jax.tree.structure(want) == jax.tree.structure(got)
    for x, y in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def test_init_from_a_different_model_is_a_one_line_error(tmp_path, pretrained_tiny):
  cfg = _cfg(
    total_steps=1,
    init_from=str(pretrained_tiny / "final" / "discriminator"),
    **{"model.hidden_size": 32},
  )
  with pytest.raises(ElectraError, match="hidden_size") as e:
    run_pretraining.run(cfg, str(tmp_path), progress=False)
  assert "\n" not in str(e.value)
  assert not os.path.exists(tmp_path / "final")


def test_scan_remat_bfloat16_switches_run_and_export(tmp_path):
  """scan_layers + remat + bf16 compute: trains, and the export is per-layer and loads."""
  import electra_jax

  cfg = _cfg(
    total_steps=2,
    checkpoint_every=2,
    scan_layers=True,
    remat=True,
    compute_dtype="bfloat16",
  )
  results = run_pretraining.run(cfg, str(tmp_path), progress=False)
  assert results["stopped"] == "completed"
  assert np.isfinite(results["final_metrics"]["loss"])
  model, params = electra_jax.from_pretrained(str(tmp_path / "final" / "discriminator"))
  ids = np.array([[2, 1996, 4937, 2003, 1012, 3]], np.int32)
  assert np.asarray(model.apply({"params": params}, ids)).shape == ids.shape
  transformers = pytest.importorskip("transformers")
  pytest.importorskip("torch")
  _, info = transformers.ElectraForPreTraining.from_pretrained(
    str(tmp_path / "export" / "discriminator"), output_loading_info=True
  )
  assert not info["missing_keys"] and not info["unexpected_keys"]
