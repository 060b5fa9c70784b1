"""Fault injection for the interruption tests: named points that can kill the process.

Long jobs call `point("name")` at the places where an interruption is most
likely to lose or corrupt results (after a train step, while a checkpoint is
being written, during evaluation, between two renames of `best/`, between
seeds). Normally this is a dictionary lookup and nothing else. With

  ELECTRA_JAX_FAULT="after_step@3:SIGKILL"

the third time the process reaches `after_step` it sends itself SIGKILL (or
SIGTERM / SIGINT, which the job handles as a preemption). Several specs may be
given, separated by commas. `tests/faults_test.py` uses this to interrupt runs
at exact places and checks that the resumed run ends bitwise where an
uninterrupted one does.
"""

from __future__ import annotations

import os
import signal

ENV = "ELECTRA_JAX_FAULT"

_counts: dict[str, int] = {}
_specs: dict[str, tuple[int, signal.Signals]] | None = None


def _parse(text: str) -> dict[str, tuple[int, signal.Signals]]:
  specs = {}
  for item in filter(None, (s.strip() for s in text.split(","))):
    where, _, sig = item.partition(":")
    name, _, nth = where.partition("@")
    specs[name] = (int(nth or 1), signal.Signals[sig or "SIGKILL"])
  return specs


def point(name: str) -> None:
  """Counts a visit to `name`; sends the configured signal on the configured visit."""
  global _specs
  if _specs is None:
    _specs = _parse(os.environ.get(ENV, ""))
  if not _specs or name not in _specs:
    return
  _counts[name] = _counts.get(name, 0) + 1
  nth, sig = _specs[name]
  if _counts[name] == nth:
    os.kill(os.getpid(), sig)


def reset(spec: str | None = None) -> None:
  """Re-reads the spec (`spec`, else the environment) and zeroes the counters (tests)."""
  global _specs
  _specs = None if spec is None else _parse(spec)
  _counts.clear()
