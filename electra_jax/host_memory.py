"""Host memory the process holds but no longer uses: handed back to the OS.

On Linux, glibc's `malloc` keeps freed memory in its heaps instead of
returning it to the kernel, and XLA:CPU frees a lot at once: compiling the
ELECTRA-Small pretraining step allocates and frees several hundred MiB (LLVM
modules, HLO passes), the jitted random init as much again. That memory stays
in the process's resident set, and the next phase (the first step's
temporaries, the next compilation) allocates fresh pages on top of it, partly
in other threads' malloc arenas. The process's peak RSS is then the sum of the
phases, not the largest of them.

`release_free_memory()` calls glibc's `malloc_trim(0)`, which gives every
arena's free pages back to the kernel (milliseconds; ~200 ms the first time
it hands back a GiB). `trim_after_compiles()` runs it after every XLA
compilation of the process that took half a second or more (a
`jax.monitoring` listener on JAX's backend-compile event). The train loop
runs it after making its initial state and after its first step, whose
temporaries and lazily built kernels are the other large one-off. Measured
on the 2-core CPU (ELECTRA-Small pretraining step, 8 x 128,
`experiments/benchmarks/README.md`): peak RSS 2,300-2,600 MiB without,
~1,900-2,100 with, and ~1,300 together with the `FAST_COMPILE` preset of `xla_env`.
The computation is untouched: only where the allocator's free lists live.

The opposite problem is in the steady state. glibc serves every block of
32 MiB or more, and in threads other than the main one any block over its
64 MiB arena heaps, with a fresh `mmap`, and unmaps it on `free`. XLA:CPU
allocates each step's temporaries as such blocks, so every step faulted in
and zeroed ~420 MiB of new pages: in the ELECTRA-Small pretraining step
(8 x 128, 2 cores) 108,000 minor page faults and ~260 ms of kernel CPU time
per ~550 ms step. `reuse_freed_memory()` makes glibc keep what is freed for
the next allocation instead: one arena for all threads (`M_ARENA_MAX` 1, so
a block of any size comes from the main heap), no `mmap` for blocks
(`M_MMAP_MAX` 0) and no automatic trim of the heap's top (`M_TRIM_THRESHOLD`
at its maximum). The step then takes no page faults, and 0.72-0.87x the time.
Only the explicit trims above hand memory back. The one arena has a cost:
threads that allocate a lot at once contend for it. Tokenizing 7 MB of text
with the Rust tokenizer's threads (`prepare-pretraining`) took 1.2-1.3x the time
with it. So the CLI sets it for the commands that pretrain (`pretrain`,
`reproduce`, `bench`), where it pays, right after parsing and before JAX
starts its threads (a thread keeps the arena it first got);
`ELECTRA_JAX_MALLOC=system` leaves glibc's defaults alone there too.
Fine-tuning and inference steps are unchanged by it (their temporaries are
smaller, and glibc's growing mmap threshold already keeps them). Measured in
`experiments/benchmarks/README.md` ("Page faults").

Elsewhere than glibc (macOS, musl) all three are no-ops. The CLI and the benchmark
workers install the listener; library users get it by calling
`trim_after_compiles()` themselves (the train loop's two trims run anyway).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax/_src/dispatch.py
_installed = False
# A trim walks the whole heap: ~20 ms in a process holding ~1 GiB of small blocks, and
# ~200 ms the first time it hands back ~1 GiB. Compilations shorter than this free too
# little to pay for it (a test session compiles thousands of tiny programs).
MIN_COMPILE_SECONDS = 0.5
MALLOC_ENV = "ELECTRA_JAX_MALLOC"  # `system`: leave glibc's settings as they are
# mallopt parameters (glibc's malloc.h) and the values `reuse_freed_memory` gives them.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_KEEP_HEAP = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
_reusing = False


@functools.cache
def _glibc():
  """glibc as a ctypes library, or None where the C library is not glibc."""
  if not sys.platform.startswith("linux"):
    return None
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    trim, mallopt = libc.malloc_trim, libc.mallopt
  except (OSError, AttributeError):  # not glibc
    return None
  trim.argtypes = [ctypes.c_size_t]
  trim.restype = ctypes.c_int
  mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  mallopt.restype = ctypes.c_int
  return libc


def _malloc_trim():
  """glibc's `malloc_trim`, or None where there is none."""
  libc = _glibc()
  return None if libc is None else libc.malloc_trim


def describe_malloc() -> str:
  """The allocator settings of this process, for benchmark reports."""
  if _reusing:
    return "reuse_freed_memory: M_ARENA_MAX=1 M_MMAP_MAX=0 M_TRIM_THRESHOLD=2**31-1"
  tunables = os.environ.get("GLIBC_TUNABLES")
  return f"GLIBC_TUNABLES={tunables}" if tunables else "defaults"


def reuse_freed_memory(environ=None) -> bool:
  """Makes glibc keep freed blocks for reuse: no per-step `mmap` and page faults (see above).

  Call before JAX runs anything. Returns whether the settings are in force
  (False without glibc, or with `ELECTRA_JAX_MALLOC=system`). Idempotent.
  """
  global _reusing
  env = os.environ if environ is None else environ
  if env.get(MALLOC_ENV, "").strip().lower() == "system":
    return False
  if _reusing:
    return True
  libc = _glibc()
  if libc is None:
    return False
  _reusing = all(libc.mallopt(param, value) == 1 for param, value in _KEEP_HEAP)
  return _reusing


def release_free_memory() -> bool:
  """Returns the allocator's free pages to the OS; whether anything could be asked."""
  trim = _malloc_trim()
  if trim is None:
    return False
  trim(0)
  return True


def _on_event(event: str, duration: float, **kwargs) -> None:
  del kwargs
  if event == _BACKEND_COMPILE_EVENT and duration >= MIN_COMPILE_SECONDS:
    release_free_memory()


def trim_after_compiles() -> bool:
  """Runs `release_free_memory()` after every XLA compilation of at least `MIN_COMPILE_SECONDS` (idempotent).

  Returns whether the listener is installed (False where there is no
  `malloc_trim`, or when JAX no longer offers the monitoring hook).
  """
  global _installed
  if _installed:
    return True
  if _malloc_trim() is None:
    return False
  try:
    from jax import monitoring
  except ImportError:
    return False
  monitoring.register_event_duration_secs_listener(_on_event)
  _installed = True
  return True
