"""electra_jax.host_memory: freed memory handed back to the OS, after each compilation."""

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
