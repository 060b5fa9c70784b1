"""Smoke tests of the pretraining-step benchmarks (so the scripts cannot rot)."""

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
BENCH = REPO / "experiments" / "benchmarks"


def _run(script, *args, tmp_path):
  out = tmp_path / "report.json"
  proc = subprocess.run(
    [sys.executable, str(BENCH / script), *args, "--json", str(out)],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=REPO,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(out.read_text()), proc.stdout


def test_jax_benchmark_tiny_two_steps(tmp_path):
  report, stdout = _run(
    "pretrain_step.py",
    "--config",
    str(REPO / "experiments" / "configs" / "pretrain.py") + ":size=tiny",
    "--batch-size",
    "2",
    "--seq-len",
    "32",
    "--steps",
    "2",
    "--warmup",
    "1",
    tmp_path=tmp_path,
  )
  assert report["timed_steps"] == 2 and report["batch_size"] == 2 and report["seq_len"] == 32
  # int((0.15 + 0.005) * 32) prediction slots, the official default.
  assert report["max_predictions"] == 4
  assert report["p10_s"] <= report["median_s"] <= report["p90_s"]
  assert report["tokens_per_s"] == pytest.approx(2 * 32 / report["median_s"])
  # tiny: hidden 64, so the generator (1/4 width) is 16 wide with one head.
  assert report["generator"]["hidden_size"] == 16
  assert report["generator"]["num_attention_heads"] == 1
  assert report["machine"]["backend"] == "cpu"
  assert report["final_loss"] > 0
  assert "tokens/s" in stdout


def test_jax_benchmark_rejects_unknown_arguments(tmp_path):
  proc = subprocess.run(
    [sys.executable, str(BENCH / "pretrain_step.py"), "--bogus"],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=REPO,
  )
  assert proc.returncode != 0
  assert "unrecognised arguments: --bogus" in proc.stderr


def test_hf_benchmark_tiny_two_steps(tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  report, _ = _run(
    "hf_pretrain_step.py",
    "--size",
    "tiny",
    "--batch-size",
    "2",
    "--seq-len",
    "32",
    "--steps",
    "2",
    "--warmup",
    "1",
    "--threads",
    "1",
    tmp_path=tmp_path,
  )
  assert report["max_predictions"] == 4
  assert report["generator"]["hidden_size"] == 16
  # Shared embeddings and the tied decoder are counted once: the same total
  # as electra-jax's {embeddings, generator, discriminator} tree.
  jax_report, _ = _run(
    "pretrain_step.py",
    "--config",
    str(REPO / "experiments" / "configs" / "pretrain.py") + ":size=tiny",
    "--batch-size",
    "2",
    "--seq-len",
    "32",
    "--steps",
    "1",
    "--warmup",
    "1",
    tmp_path=tmp_path,
  )
  assert report["num_params"] == sum(jax_report["num_params"].values())
