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


def saved_steps(directory: str) -> list[int]:
  """The steps saved under `directory` (a run's `WORKDIR/checkpoints`), ascending."""
  if not os.path.isdir(directory):
    return []
  manager = ocp.CheckpointManager(
    os.path.abspath(directory), options=ocp.CheckpointManagerOptions(create=False)
  )
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def restore_params(directory: str, step: int) -> Any:
  """The params of the train state saved at `step` under `directory`.

  For looking at a run as it went (e.g. the discriminator at several
  pretraining steps): no model, optimizer or mesh is needed, the arrays come
  back on the default device as they were saved. Resuming a run is
  `train_loop`'s job, not this.

  Args:
    directory: a run's `WORKDIR/checkpoints`.
    step: one of `saved_steps(directory)`.

  Returns:
    The unboxed params pytree (for pretraining, `{embeddings, generator,
    discriminator}` of `pretraining.ElectraRTD`).

  Raises:
    ElectraError: no checkpoint at `step`.
  """
  steps = saved_steps(directory)
  if step not in steps:
    raise ElectraError(f"no checkpoint at step {step} in {directory}; saved steps: {steps}")
  manager = ocp.CheckpointManager(
    os.path.abspath(directory),
    options=ocp.CheckpointManagerOptions(create=False),
    item_names=("state", "data"),
  )
  try:
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  finally:
    manager.close()
  return restored["state"]["params"]
