"""electra_jax.xla_env: default XLA:CPU flags, never overriding the user's."""

import os
import subprocess
import sys

from electra_jax import xla_env


def test_adds_missing_default_flags_and_keeps_others():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  flags = xla_env.set_default_xla_flags(env).split()
  assert flags[0] == "--xla_force_host_platform_device_count=8"
  assert "--xla_cpu_prefer_vector_width=512" in flags
  assert env["XLA_FLAGS"] == " ".join(flags)
  # Idempotent: a second call adds nothing.
  assert xla_env.set_default_xla_flags(env).split() == flags


def test_user_setting_wins():
  env = {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=256"}
  assert xla_env.set_default_xla_flags(env) == "--xla_cpu_prefer_vector_width=256"
  assert xla_env.set_default_xla_flags({}) == "--xla_cpu_prefer_vector_width=512"


def test_cli_sets_flags_and_xla_accepts_them():
  # XLA rejects unknown flags when its backend starts: a misspelt default
  # would make every CLI command fail.
  code = (
    "import os\n"
    "from electra_jax import cli\n"
    "try:\n"
    "  cli.main(['--help'])\n"
    "except SystemExit:\n"
    "  pass\n"
    "print(os.environ['XLA_FLAGS'])\n"
    "import jax.numpy as jnp\n"
    "print(float(jnp.ones(3).sum()))\n"
  )
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run(
    [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
  )
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert lines[-2] == "--xla_cpu_prefer_vector_width=512"
  assert lines[-1] == "3.0"
