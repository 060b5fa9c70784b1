"""Test set-up: 8 fake CPU devices, the CLI's XLA flag and CPU kernels, data locations, tiny-model fixtures."""

import os
import tempfile

# Must happen before jax is imported anywhere.
# The CLI's default XLA:CPU flags (electra_jax/xla_env.py) are set here too, so
# that a CLI run in a subprocess (which inherits XLA_FLAGS) computes bitwise
# what the same run does in this process: the fault-injection tests mix both.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
from electra_jax import xla_env  # noqa: E402 (imports no jax)

xla_env.set_default_xla_flags()
# And the CLI's allocator set-up (electra_jax/host_memory.py: CPU steps on the
# calling thread), before JAX starts its CPU client, which reads it once.
from electra_jax import host_memory  # noqa: E402 (imports jax, which starts nothing)

host_memory.reuse_freed_memory()
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


def pytest_configure(config):
  """Switches on the CLI's CPU kernels (electra_jax/cpu_kernels.py), before collection.

  For the same reason as the XLA flag above: CLI runs (in a subprocess, or
  in-process through `cli.main`, which enables them for good) must compute
  bitwise what the in-process runs they are compared with compute.
  """
  from electra_jax import cpu_kernels

  cpu_kernels.enable()


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


@pytest.fixture(scope="session")
def tiny_config():
  """The tests' tiny `ElectraConfig` (2 layers, hidden 32, vocabulary 64).

  One shape for every test that needs a model but not a particular size; a
  test that needs another field says so with `tiny_config.replace(...)`.
  """
  from electra_jax.config import ElectraConfig

  return ElectraConfig(
    vocab_size=64,
    embedding_size=16,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=32,
  )


@pytest.fixture(scope="session")
def classifier(tmp_path_factory, tiny_config):
  """A saved 3-class classifier (`tiny_classifier.LABELS`) trained on column `review`."""
  from tiny_classifier import LABELS, MAX_LEN, save_tiny

  path = tmp_path_factory.mktemp("clf") / "ckpt"
  extra = {
    "label_map": LABELS,
    "task": "custom",
    "max_seq_length": MAX_LEN,
    "text_columns": ["review"],
  }
  return save_tiny(path, tiny_config, 3, extra)


@pytest.fixture(scope="session")
def regressor(tmp_path_factory, tiny_config):
  """A saved STS-B-style regressor (one output)."""
  from tiny_classifier import MAX_LEN, save_tiny

  path = tmp_path_factory.mktemp("reg") / "ckpt"
  extra = {"label_map": None, "task": "stsb", "max_seq_length": MAX_LEN}
  return save_tiny(path, tiny_config, 1, extra, seed=1)
