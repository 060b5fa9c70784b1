"""XLA:CPU compiler flags and the compilation cache electra-jax sets by default.

XLA:CPU prefers 256-bit vectors even on AVX-512 machines. For the ELECTRA
train step, whose non-matmul work (GELU, LayerNorm, softmax, dropout, Adam) is
about half of the CPU time, 512-bit vectors made the ELECTRA-Small pretraining
step ~4 % faster on 2 cores and ~6 % on 1 core (experiments/benchmarks/README.md),
with the same losses. On CPUs without AVX-512 the flag changes nothing, and it
does not touch GPU or TPU compilation.

`--xla_cpu_opt_preset=FAST_COMPILE` (XLA's own preset: fewer LLVM
optimisation passes over the generated loops) halves the compile time of the
pretraining step (~28 -> ~15 s on 2 cores) and the memory compiling it takes
(peak RSS of the pretraining benchmark ~500 MiB lower), while the steps run as
fast: the matmuls and reductions that dominate them are YNNPACK library calls,
not generated code. Measured on the 2-core CPU, ELECTRA-Small: both
executables of the pretraining step (8 x 128) in one process, interleaved,
the preset's took 0.92x the time (578 vs 641 ms median) with bit-identical
losses; alternating worker processes, pretraining 582 vs 620 ms, fine-tuning
32 x 128 1,085 vs 1,196 ms, inference 32 x 128 346 vs 346 ms
(experiments/benchmarks/README.md). Both flags are XLA:CPU's only. The losses agree to float rounding (the
generated loops may associate a sum differently), usually bit for bit.

XLA reads `XLA_FLAGS` once, when the first backend starts, so
`set_default_xla_flags` must run before the first JAX computation. The CLI and
the benchmark scripts call it first thing; library users may call it
themselves. A flag already present in `XLA_FLAGS` is left as the user set it.

The CLI also keeps compiled programs in a persistent JAX compilation cache
(`enable_compilation_cache`), so a second run of the same job (a resume, the
next seed, `predict` after `finetune`) loads its train step or forward pass
instead of compiling it again (tens of seconds for the ELECTRA-Small
pretraining step on 2 CPU cores). Where: `$ELECTRA_JAX_COMPILATION_CACHE` if set (`off` or `0`
switches the cache off), else JAX's own `JAX_COMPILATION_CACHE_DIR` if set, else
`~/.cache/electra-jax/jax_compilation_cache` (`$XDG_CACHE_HOME` instead of
`~/.cache` when set). JAX keys every entry by the program, the compile options
and the JAX/XLA versions, so an entry is only reused for the same program.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

DEFAULT_CPU_FLAGS = {
  "--xla_cpu_prefer_vector_width": "512",
  "--xla_cpu_opt_preset": "FAST_COMPILE",
}
COMPILATION_CACHE_ENV = "ELECTRA_JAX_COMPILATION_CACHE"
_OFF = ("0", "off", "false", "no", "none")


def set_default_xla_flags(environ: MutableMapping[str, str] | None = None) -> str:
  """Adds `DEFAULT_CPU_FLAGS` missing from `XLA_FLAGS`; returns the new value."""
  env = os.environ if environ is None else environ
  flags = env.get("XLA_FLAGS", "").split()
  present = {f.split("=", 1)[0] for f in flags}
  for name, value in DEFAULT_CPU_FLAGS.items():
    if name not in present:
      flags.append(f"{name}={value}")
  env["XLA_FLAGS"] = " ".join(flags)
  return env["XLA_FLAGS"]


def compilation_cache_dir(environ: Mapping[str, str] | None = None) -> str | None:
  """The CLI's compilation cache directory (see the module doc); None when switched off."""
  env = os.environ if environ is None else environ
  value = env.get(COMPILATION_CACHE_ENV, "").strip()
  if value.lower() in _OFF:
    return None
  if value:
    return os.path.expanduser(value)
  if env.get("JAX_COMPILATION_CACHE_DIR"):  # JAX reads it itself; say where it is
    return env["JAX_COMPILATION_CACHE_DIR"]
  cache_home = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(cache_home, "electra-jax", "jax_compilation_cache")


def enable_compilation_cache(environ: Mapping[str, str] | None = None) -> str | None:
  """Points JAX's persistent compilation cache at `compilation_cache_dir()`.

  Call before the first compilation (imports jax). Returns the directory, or
  None when the cache is switched off or the directory cannot be created (then
  JAX simply compiles every time).
  """
  path = compilation_cache_dir(environ)
  if path is None:
    return None
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return None
  import jax

  jax.config.update("jax_compilation_cache_dir", path)
  return path
