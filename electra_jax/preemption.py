"""Stop requests (SIGTERM, SIGINT) turned into a flag that long jobs poll.

A TPU VM being preempted gets SIGTERM; a user at a terminal presses Ctrl-C
(SIGINT). Either way the job should save a checkpoint at the next step
boundary and stop the whole command, with an exit status that says "stopped,
resumable" (`EXIT_STATUS`: 143 for SIGTERM, 130 for SIGINT, the shell's
128 + signal number). The train loop and the multi-seed fine-tuning loop poll
`requested()`; a second Ctrl-C aborts at once (KeyboardInterrupt) for a user
who does not want to wait for the save.

`handle_stop_signals()` is re-entrant: the CLI wraps a whole command in it and
the train loop wraps itself, so library callers get the same behaviour.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

EXIT_STATUS = {"SIGTERM": 128 + signal.SIGTERM, "SIGINT": 128 + signal.SIGINT}

_state = {"depth": 0, "requested": None, "previous": {}}


def requested() -> str | None:
  """The name of the first stop signal received ("SIGTERM"/"SIGINT"), else None."""
  return _state["requested"]


def request(name: str) -> None:
  """Records a stop request as if signal `name` had arrived (tests, hooks)."""
  if _state["requested"] is None:
    _state["requested"] = name


def _handle(signum, frame):
  del frame
  name = signal.Signals(signum).name
  if _state["requested"] is not None and signum == signal.SIGINT:
    raise KeyboardInterrupt  # second Ctrl-C: the user does not want to wait
  first = _state["requested"] is None
  request(name)
  if first:
    print(
      f"\nelectra-jax: {name} received: saving a checkpoint at the next step, then stopping"
      + (" (Ctrl-C again to abort without saving)" if signum == signal.SIGINT else ""),
      file=sys.stderr,
      flush=True,
    )


@contextlib.contextmanager
def handle_stop_signals():
  """Installs the SIGTERM/SIGINT handlers for the duration (main thread only).

  The outermost entry clears any earlier request and restores the previous
  handlers on exit.
  """
  main = threading.current_thread() is threading.main_thread()
  outermost = _state["depth"] == 0
  if outermost:
    _state["requested"] = None
    if main:
      for sig in (signal.SIGTERM, signal.SIGINT):
        _state["previous"][sig] = signal.signal(sig, _handle)
  _state["depth"] += 1
  try:
    yield
  finally:
    _state["depth"] -= 1
    if outermost:
      for sig, previous in _state["previous"].items():
        signal.signal(sig, previous)
      _state["previous"] = {}
