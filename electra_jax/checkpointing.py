"""A thin wrapper over Orbax's `CheckpointManager` for the train loop.

One manager per workdir (`WORKDIR/checkpoints`), holding at each saved step:
  - `state`: the `TrainState` pytree (params, optimizer state, step, RNG),
  - `data`: the input iterator's JSON state (so resume continues with the
    exact next batch).
Saves are asynchronous; `wait()` blocks until the last one is on disk. Orbax
writes each step into a temporary directory and renames it when complete, so
a killed run never leaves a step that looks finished but is not.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

from electra_jax.errors import ElectraError


class Checkpointer:
  """Save/restore `(state, data_state)` pairs under `directory`."""

  def __init__(
    self, directory: str, *, save_every: int, keep: int | None = 3, async_save: bool = True
  ):
    self.directory = os.path.abspath(directory)
    self._save_every = max(1, int(save_every))
    options = ocp.CheckpointManagerOptions(
      save_interval_steps=max(1, int(save_every)),
      max_to_keep=keep,
      enable_async_checkpointing=async_save,
      create=True,
    )
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, item_names=("state", "data")
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    # Only on the interval: Orbax's default policy also saves the first step of
    # a fresh run, an unasked-for full save right after step 1.
    return step % self._save_every == 0

  def save(self, step: int, state: Any, data_state: dict | None, *, force: bool = False) -> bool:
    """Saves if `step` is on the save interval (or `force`). Returns whether it saved."""
    return self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state or {}),
      ),
      force=force,
    )

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores step `step` onto the shardings/dtypes of `abstract_state`."""
    try:
      restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          data=ocp.args.JsonRestore(),
        ),
      )
    except (ValueError, KeyError, TypeError) as e:
      msg = str(e).splitlines()[0] if str(e) else type(e).__name__
      raise ElectraError(
        f"checkpoint step {step} in {self.directory} does not match this model/optimizer ({msg}); "
        "use a fresh --workdir or the config it was written with"
      ) from None
    return restored["state"], dict(restored["data"] or {})

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
