"""checkpointing: the params of a saved step read back without the model (for looking at a run)."""

import numpy as np
import pytest

from electra_jax import checkpointing
from electra_jax.errors import ElectraError


def _state(scale):
  return {
    "step": np.int32(scale),
    "params": {"dense": {"kernel": np.full((2, 3), scale, np.float32)}, "bias": np.arange(3.0)},
    "opt_state": {"mu": np.zeros((2, 3), np.float32)},
  }


def test_restore_params_of_each_saved_step(tmp_path):
  directory = tmp_path / "checkpoints"
  ckpt = checkpointing.Checkpointer(str(directory), save_every=2, keep=None, async_save=False)
  for step in (2, 4):
    assert ckpt.save(step, _state(step), {"position": step})
  ckpt.close()
  assert checkpointing.saved_steps(str(directory)) == [2, 4]
  for step in (2, 4):
    params = checkpointing.restore_params(str(directory), step)
    np.testing.assert_array_equal(
      params["dense"]["kernel"], _state(step)["params"]["dense"]["kernel"]
    )
    np.testing.assert_array_equal(params["bias"], np.arange(3.0))
    assert set(params) == {"dense", "bias"}


def test_missing_step_and_directory(tmp_path):
  assert checkpointing.saved_steps(str(tmp_path / "none")) == []
  with pytest.raises(ElectraError, match=r"no checkpoint at step 3 .* saved steps: \[\]"):
    checkpointing.restore_params(str(tmp_path / "none"), 3)
