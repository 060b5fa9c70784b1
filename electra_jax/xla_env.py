"""XLA:CPU compiler flags electra-jax sets by default (before JAX starts).

XLA:CPU prefers 256-bit vectors even on AVX-512 machines. For the ELECTRA
train step, whose non-matmul work (GELU, LayerNorm, softmax, dropout, Adam) is
about half of the CPU time, 512-bit vectors made the ELECTRA-Small pretraining
step ~4 % faster on 2 cores and ~6 % on 1 core (experiments/benchmarks/README.md),
with the same losses. On CPUs without AVX-512 the flag changes nothing, and it
does not touch GPU or TPU compilation.

XLA reads `XLA_FLAGS` once, when the first backend starts, so
`set_default_xla_flags` must run before the first JAX computation. The CLI and
the benchmark scripts call it first thing; library users may call it
themselves. A flag already present in `XLA_FLAGS` is left as the user set it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

DEFAULT_CPU_FLAGS = {"--xla_cpu_prefer_vector_width": "512"}


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
