"""Test set-up: 8 fake CPU devices for the sharding tests, data locations."""

import os
import tempfile

# Must happen before jax is imported anywhere.
# The CLI's default XLA:CPU flag (electra_jax/xla_env.py) is set here too, so
# that a CLI run in a subprocess (which inherits XLA_FLAGS) computes bitwise
# what the same run does in this process: the fault-injection tests mix both.
os.environ.setdefault(
  "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_cpu_prefer_vector_width=512"
)
# Many tests compile the same small programs (train steps, forwards): a
# persistent compilation cache shared by the test processes saves minutes on
# 2 cores. JAX keys entries by the full HLO + compile options, so a hit is
# always the same program.
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "electra_jax_test_jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = pathlib.Path(
  os.environ.get("ELECTRA_JAX_SHARED_DATA", REPO.parent / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """`../shared/data`; skips the test when it is absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"shared data not found at {SHARED_DATA} (set ELECTRA_JAX_SHARED_DATA)")
  return SHARED_DATA


@pytest.fixture(scope="session")
def vocab_file(shared_data) -> pathlib.Path:
  path = shared_data / "vocab" / "bert-base-uncased" / "vocab.txt"
  if not path.exists():
    pytest.skip(f"{path} not found")
  return path
