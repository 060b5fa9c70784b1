"""electra_jax.host_memory: freed memory handed back to the OS, after each compilation."""

import os
import subprocess
import sys

import pytest

from electra_jax import host_memory

GLIBC = host_memory._malloc_trim() is not None


@pytest.mark.skipif(not GLIBC, reason="needs glibc's malloc_trim (Linux)")
def test_release_returns_freed_heap_pages_to_the_os():
  # Many small blocks (below glibc's mmap threshold, so they live in the heap),
  # every other one kept: freed but fragmented memory stays resident until a trim.
  code = """
import ctypes
from electra_jax import host_memory
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
  return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
blocks = []
for _ in range(20000):
  p = libc.malloc(16 * 1024)
  ctypes.memset(p, 1, 16 * 1024)
  blocks.append(p)
for p in blocks[::2]:
  libc.free(p)
before = rss()
assert host_memory.release_free_memory()
print(before - rss())
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  released_kib = int(out.stdout.split()[-1])
  assert released_kib > 100 * 1024  # of the ~160 MiB freed


@pytest.mark.skipif(not GLIBC, reason="needs glibc's malloc_trim (Linux)")
def test_trim_after_compiles_runs_after_each_compilation(monkeypatch):
  import jax
  import jax.numpy as jnp

  x, y = jax.block_until_ready((jnp.ones(7), jnp.ones(5)))  # (their own compilations)
  calls = []
  monkeypatch.setattr(host_memory, "release_free_memory", lambda: calls.append(1) or True)
  monkeypatch.setattr(host_memory, "MIN_COMPILE_SECONDS", 0.0)
  assert host_memory.trim_after_compiles()
  assert host_memory.trim_after_compiles()  # idempotent: one listener
  jax.jit(lambda x: x * 3.0 + 1.0).lower(x).compile()
  assert len(calls) == 1
  jax.jit(lambda x: x - 2.0)(y)  # a compilation on first call too
  assert len(calls) == 2
  monkeypatch.setattr(host_memory, "MIN_COMPILE_SECONDS", 60.0)
  jax.jit(lambda x: x / 5.0)(y)  # too short to be worth a trim
  assert len(calls) == 2


def test_without_malloc_trim_both_are_no_ops(monkeypatch):
  monkeypatch.setattr(host_memory, "_malloc_trim", lambda: None)
  monkeypatch.setattr(host_memory, "_installed", False)
  assert host_memory.release_free_memory() is False
  assert host_memory.trim_after_compiles() is False


_REALLOCATE = """
import ctypes, resource, sys, threading
from electra_jax import host_memory
print(host_memory.reuse_freed_memory())
host_memory.after_first_step()  # the allocator settings start here
import jax
print(jax.config.read("jax_cpu_enable_async_dispatch"))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 96 * 2**20  # above glibc's mmap threshold and its 64 MiB thread heaps, as XLA's temporaries
def step():
  p = libc.malloc(SIZE)
  ctypes.memset(p, 1, SIZE)
  libc.free(p)
def faults_of_second_step():
  step()
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  step()
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(faults_of_second_step())
box = []
worker = threading.Thread(target=lambda: box.append(faults_of_second_step()))  # as XLA's threads
worker.start(); worker.join()
print(box[0])
"""


def _reallocate(**env):
  environ = {k: v for k, v in os.environ.items() if k != host_memory.MALLOC_ENV}
  out = subprocess.run(
    [sys.executable, "-c", _REALLOCATE],
    capture_output=True,
    text=True,
    check=True,
    env={**environ, **env},
  )
  in_force, async_dispatch, main, thread = out.stdout.split()
  return in_force == "True", async_dispatch == "True", int(main), int(thread)


@pytest.mark.skipif(not GLIBC, reason="needs glibc's mallopt (Linux)")
def test_reuse_freed_memory_takes_no_page_faults_for_a_repeated_large_block():
  # glibc's default: a fresh mmap per 96 MiB block, ~24,500 page faults each time it is touched.
  in_force, async_dispatch, main, thread = _reallocate(**{host_memory.MALLOC_ENV: "system"})
  assert not in_force and async_dispatch
  assert main > 20_000 and thread > 20_000
  # Reused from the main heap. Another thread's arena still maps a block this large
  # afresh, whatever the settings: hence CPU steps run on the calling (main) thread.
  in_force, async_dispatch, main, thread = _reallocate()
  assert in_force and not async_dispatch
  assert main < 100
  assert thread > 20_000


def test_reuse_freed_memory_is_a_no_op_without_glibc_or_when_asked(monkeypatch):
  monkeypatch.setattr(host_memory, "_reusing", False)
  assert not host_memory.reuse_freed_memory({host_memory.MALLOC_ENV: "System"})
  monkeypatch.setattr(host_memory, "_glibc", lambda: None)
  assert not host_memory.reuse_freed_memory({})


def test_the_cli_asks_for_it_before_any_command_runs(monkeypatch):
  from electra_jax import cli

  calls = []
  monkeypatch.setattr(host_memory, "reuse_freed_memory", lambda: calls.append("reuse"))
  assert cli.main(["bench", "--size", "tiny", "--batch", "0"]) == 2  # fails before any step
  assert calls == ["reuse"]
  with pytest.raises(SystemExit):
    cli.main(["--version"])  # exits while parsing: no JAX, so nothing to set up
  assert calls == ["reuse"]


def test_describe_malloc_says_which_settings_are_in_force(monkeypatch):
  monkeypatch.setattr(host_memory, "_reusing", True)
  monkeypatch.setattr(host_memory, "_heap_kept", False)  # asked for, before the first step
  assert host_memory.describe_malloc() == "reuse_freed_memory: CPU steps on the calling thread"
  monkeypatch.setattr(host_memory, "_heap_kept", True)  # after it
  assert host_memory.describe_malloc().endswith(", M_MMAP_MAX=0 M_TRIM_THRESHOLD=2**31-1")
  monkeypatch.setattr(host_memory, "_reusing", False)
  monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  assert host_memory.describe_malloc() == "defaults"
  monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
  assert host_memory.describe_malloc() == "GLIBC_TUNABLES=glibc.malloc.arena_max=1"
