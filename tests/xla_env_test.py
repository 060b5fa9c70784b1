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
  assert "--xla_cpu_opt_preset=FAST_COMPILE" in flags
  assert env["XLA_FLAGS"] == " ".join(flags)
  # Idempotent: a second call adds nothing.
  assert xla_env.set_default_xla_flags(env).split() == flags


def test_user_setting_wins():
  env = {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=256 --xla_cpu_opt_preset=FAST_RUNTIME"}
  assert xla_env.set_default_xla_flags(env) == env["XLA_FLAGS"]
  assert xla_env.set_default_xla_flags({}).split() == [
    "--xla_cpu_prefer_vector_width=512",
    "--xla_cpu_opt_preset=FAST_COMPILE",
  ]


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
  assert lines[-2] == "--xla_cpu_prefer_vector_width=512 --xla_cpu_opt_preset=FAST_COMPILE"
  assert lines[-1] == "3.0"


def test_compilation_cache_dir_default_env_var_and_off(tmp_path):
  home = os.path.expanduser("~")
  assert xla_env.compilation_cache_dir({}) == os.path.join(
    home, ".cache", "electra-jax", "jax_compilation_cache"
  )
  assert xla_env.compilation_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == str(
    tmp_path / "electra-jax" / "jax_compilation_cache"
  )
  # JAX's own variable is honoured; ours overrides it.
  assert xla_env.compilation_cache_dir({"JAX_COMPILATION_CACHE_DIR": "/j"}) == "/j"
  env = {"JAX_COMPILATION_CACHE_DIR": "/j", xla_env.COMPILATION_CACHE_ENV: str(tmp_path)}
  assert xla_env.compilation_cache_dir(env) == str(tmp_path)
  for off in ("off", "0", "OFF", "false"):
    assert xla_env.compilation_cache_dir({xla_env.COMPILATION_CACHE_ENV: off}) is None


def test_enable_compilation_cache_writes_entries(tmp_path):
  """Compiled programs land in the directory; a second process runs from them."""
  cache = tmp_path / "cache"
  code = (
    "import jax, jax.numpy as jnp\n"
    "from electra_jax import xla_env\n"
    "print(xla_env.enable_compilation_cache())\n"
    "f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())\n"
    "print(float(f(jnp.ones((64, 64)))))\n"
  )
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  env[xla_env.COMPILATION_CACHE_ENV] = str(cache)
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  for _ in range(2):
    out = subprocess.run(
      [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == str(cache)
  assert any(cache.iterdir())


def test_cli_main_enables_the_cache(monkeypatch):
  from electra_jax import cli, job_setup

  calls = []
  monkeypatch.setattr(xla_env, "enable_compilation_cache", lambda: calls.append(True))
  assert cli.main(["tokenizer", "info", job_setup.BUNDLED_VOCAB]) == 0
  assert calls == [True]
