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
temporaries and lazily built kernels are the other large one-off, and
(for the memory the steps keep, below) before each checkpoint save and when
it ends. Measured on the 2-core CPU (ELECTRA-Small pretraining step, 8 x 128,
`experiments/benchmarks/README.md`): peak RSS 2,300-2,600 MiB without,
~1,900-2,100 with, and ~1,300 together with the `FAST_COMPILE` preset of
`xla_env`.
The computation is untouched: only where the allocator's free lists live.

The opposite problem is in the steady state. glibc serves every block of
32 MiB or more with a fresh `mmap` and unmaps it on `free`, and so it does,
whatever its settings, for any block over 64 MiB asked for by a thread other
than the main one (other threads' arenas grow in 64 MiB heaps). XLA:CPU
allocates each step's temporaries as such blocks, in the thread that runs the
step (by default one of its own), so every step faulted in and zeroed ~420 MiB
of new pages: in the ELECTRA-Small pretraining step (8 x 128, 2 cores)
108,000 minor page faults and ~260 ms of kernel CPU time per ~550 ms step.
`reuse_freed_memory()` makes the memory of one step serve the next:
  * it runs single-device CPU computations in the thread that calls them
    (`jax_cpu_enable_async_dispatch` off), the main one, whose arena is the
    main heap and can hold blocks of any size;
  * after the first step on a CPU backend (`after_first_step()`, which the
    train loop calls), no `mmap` for blocks (`M_MMAP_MAX` 0) and no automatic trim of the heap's
    top (`M_TRIM_THRESHOLD` at its maximum), so freed blocks stay for reuse.
The steps then take no page faults. Only the explicit trims above hand memory
back: the kept temporaries (~420 MiB) would otherwise come on top of what a
checkpoint save's threads or the final export allocate, which cannot reuse
them. With the settings from the start and no trims around saves, the peak
RSS of a 30-step `electra-jax pretrain` (Small, 8 x 128) was 1,840-2,290 MiB
against 1,620-1,650 with glibc's defaults; as done here, 1,590. Without
async dispatch, Python waits for each step instead of queueing the next; on
a CPU the step has every core busy anyway. Computations over several devices
keep async dispatch (JAX's rule), so there it changes little.
The CLI calls it for every command once the arguments are parsed, before
JAX starts its CPU client (which reads the dispatch setting once);
`ELECTRA_JAX_MALLOC=system` leaves both alone. The fine-tuning step (Small, 32 x 128 in 1,024-token
micro-batches) took 115,000 page faults and ~330 ms of kernel CPU per step
without it, none with it; inference had none either way, but the peak RSS of
the batch-8 to 128 benchmarks fell from 440-610 MiB to ~440-450 (fewer
threads' arenas holding freed memory). Tried first and dropped: one arena for
all threads (`M_ARENA_MAX` 1) also removed the faults, but made compiling the
pretraining step ~20 % slower and tokenizing with the Rust tokenizer's
threads 1.2-1.3x slower (they contend for the one arena). Measured in
`experiments/benchmarks/README.md` ("Page faults").

Elsewhere than glibc (macOS, musl) all three are no-ops. The CLI and the benchmark
workers install the listener; library users get it by calling
`trim_after_compiles()` themselves (the train loop's trims run anyway).
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
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_KEEP_HEAP = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
_reusing = False  # reuse_freed_memory asked for
_heap_kept = False  # and after_first_step applied _KEEP_HEAP


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
    kept = ", M_MMAP_MAX=0 M_TRIM_THRESHOLD=2**31-1" if _heap_kept else ""
    return f"reuse_freed_memory: CPU steps on the calling thread{kept}"
  tunables = os.environ.get("GLIBC_TUNABLES")
  return f"GLIBC_TUNABLES={tunables}" if tunables else "defaults"


def reuse_freed_memory(environ=None) -> bool:
  """Asks for each step to reuse the memory the previous one freed (see above).

  Turns JAX's CPU async dispatch off now (call before JAX runs anything); the
  allocator settings follow in `after_first_step()`. Returns whether it is
  in force (False without glibc, or with `ELECTRA_JAX_MALLOC=system`).
  Idempotent.
  """
  global _reusing
  env = os.environ if environ is None else environ
  if env.get(MALLOC_ENV, "").strip().lower() == "system" or _glibc() is None:
    return False
  if not _reusing:
    import jax

    # The step's temporaries are then allocated by the main thread, from the main heap.
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    _reusing = True
  return True


def after_first_step() -> None:
  """Hands the one-off memory of the first step back; then, if asked for, keeps the rest.

  The train loop and the benchmark call it once, after the first step. The
  allocator settings of `reuse_freed_memory` start only here, so that what
  the initialisation, the compilation and the first step free is handed back
  rather than kept (the peak RSS this avoids is in the module docstring).
  """
  global _heap_kept
  release_free_memory()
  import jax

  # Only XLA:CPU's step temporaries need it; a GPU/TPU host keeps glibc's defaults.
  if _reusing and not _heap_kept and jax.default_backend() == "cpu":
    libc = _glibc()
    for param, value in _KEEP_HEAP:
      libc.mallopt(param, value)
    _heap_kept = True


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
