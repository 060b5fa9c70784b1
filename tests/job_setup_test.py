"""electra_jax.job_setup: `compute_dtype=auto` is bfloat16 on GPU/TPU, float32 on CPU, and recorded concrete."""

import pathlib

import jax.numpy as jnp
import pytest

from electra_jax import experiment, job_setup
from electra_jax.errors import ElectraError

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
  "backend, expected",
  [("cpu", "float32"), ("gpu", "bfloat16"), ("cuda", "bfloat16"), ("tpu", "bfloat16")],
)
def test_auto_resolves_by_backend(backend, expected):
  assert job_setup.resolve_compute_dtype("auto", backend) == expected
  # An explicit choice is kept on every backend.
  assert job_setup.resolve_compute_dtype("float32", backend) == "float32"
  assert job_setup.resolve_compute_dtype("bfloat16", backend) == "bfloat16"


def test_auto_on_this_cpu_is_float32():
  assert job_setup.compute_dtype("auto") == jnp.float32
  assert job_setup.compute_dtype("bfloat16") == jnp.bfloat16
  with pytest.raises(ElectraError, match="compute_dtype 'fp8' is not one of auto"):
    job_setup.resolve_compute_dtype("fp8", "cpu")


@pytest.mark.parametrize("config", ["pretrain.py:size=tiny", "glue.py:task=sst2,size=tiny"])
def test_configs_default_to_auto_and_jobs_record_the_resolved_dtype(config):
  cfg = experiment.load_config(f"{REPO}/experiments/configs/{config}", [])
  assert cfg.compute_dtype == "auto"
  resolved = job_setup.with_resolved_compute_dtype(cfg)
  assert resolved.compute_dtype == "float32"
  assert cfg.compute_dtype == "auto"  # the caller's config is left as it was
  assert resolved.to_dict() == {**cfg.to_dict(), "compute_dtype": "float32"}
