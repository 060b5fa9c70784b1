"""Files around a model: HF weight files read safely, tokenizer files, atomic output dirs.

`load_hf_state_dict` prefers `model.safetensors` (sharded or not; needs no
torch) and reads `pytorch_model.bin` only with `torch.load(...,
weights_only=True)`: a pickle can run arbitrary code, and that loader refuses
anything but tensors and plain containers. Outputs are written into a
temporary sibling directory and renamed when complete (`staged_dir`), so a
failure never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping

import numpy as np

from electra_jax import fileio
from electra_jax.errors import ElectraError

TOKENIZER_FILES = (
  "vocab.txt",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "spiece.model",
  "sentencepiece.model",
  "tokenizer.model",
)

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"


def one_line(error: BaseException, limit: int = 300) -> str:
  """The first line of an exception's message, shortened: CLI errors are one line."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  text = lines[0] if lines else type(error).__name__
  return text if len(text) <= limit else text[: limit - 3] + "..."


def read_hf_config(path: str | os.PathLike) -> dict:
  """The parsed `config.json` of a HF directory."""
  file = os.path.join(os.fspath(path), "config.json")
  if not os.path.isfile(file):
    raise ElectraError(f"no config.json in {path}: point at a HF model directory")
  try:
    with open(file, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ElectraError(f"cannot read {file}: {one_line(e)}") from None


def load_hf_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads the weights of a HF directory as numpy arrays.

  Prefers `model.safetensors` (or its sharded index); falls back to
  `pytorch_model.bin` (or its index) read with `torch.load(weights_only=True)`.

  Args:
    path: HF model directory.

  Returns:
    HF key -> numpy array (bf16 tensors come back as `ml_dtypes.bfloat16`).

  Raises:
    ElectraError: no weights file, or one that cannot be read safely.
  """
  path = os.fspath(path)
  for index_name, reader in (
    (SAFETENSORS_INDEX, _read_safetensors),
    (TORCH_BIN_INDEX, _read_torch),
  ):
    index = os.path.join(path, index_name)
    if os.path.isfile(index):
      try:
        with open(index, encoding="utf-8") as f:
          shards = sorted(set(json.load(f)["weight_map"].values()))
      except (OSError, json.JSONDecodeError, KeyError) as e:
        raise ElectraError(f"cannot read {index}: {one_line(e)}") from None
      out = {}
      for shard in shards:
        out.update(reader(os.path.join(path, shard)))
      return out
  if os.path.isfile(os.path.join(path, SAFETENSORS)):
    return _read_safetensors(os.path.join(path, SAFETENSORS))
  if os.path.isfile(os.path.join(path, TORCH_BIN)):
    return _read_torch(os.path.join(path, TORCH_BIN))
  raise ElectraError(
    f"no {SAFETENSORS} or {TORCH_BIN} in {path}: the directory has a config but no weights"
  )


def _read_safetensors(file: str) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file

  try:
    return load_file(file)
  except Exception as e:  # safetensors raises its own error types
    raise ElectraError(f"cannot read {file}: {one_line(e)}") from None


def _read_torch(file: str) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError:
    raise ElectraError(
      f"{file} is a PyTorch pickle and torch is not installed: install electra-jax[convert] "
      "or convert it to safetensors"
    ) from None
  try:
    # weights_only=True: a pickle can run arbitrary code; this loader only
    # rebuilds tensors and plain containers.
    state = torch.load(file, map_location="cpu", weights_only=True)
  except Exception as e:
    raise ElectraError(
      f"cannot load {file} safely with torch.load(weights_only=True): {one_line(e)}"
    ) from None
  if not isinstance(state, Mapping):
    raise ElectraError(f"{file} does not hold a state dict")
  out = {}
  for k, t in state.items():
    if not isinstance(t, torch.Tensor):
      raise ElectraError(f"{file}: entry {k!r} is not a tensor")
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
      import ml_dtypes

      out[k] = t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    else:
      out[k] = t.numpy()
  return out


def copy_tokenizer_files(src: str | os.PathLike | None, dst: str) -> list[str]:
  """Copies the tokenizer files present in `src` to `dst`; returns their names."""
  if src is None:
    return []
  copied = []
  for name in sorted(os.listdir(src)):
    if name in TOKENIZER_FILES or (name.endswith(".model") and "tokenizer" in name):
      shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
      copied.append(name)
  return copied


def prepare_output_dir(out: str | os.PathLike) -> str:
  out = os.path.abspath(os.fspath(out))
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ElectraError(f"output {out} already exists and is not empty: choose a new directory")
  parent = os.path.dirname(out)
  if not os.path.isdir(parent):
    raise ElectraError(f"parent directory of {out} does not exist")
  return out


class staged_dir:
  """Context manager: a temp dir next to `out`, renamed to `out` on success."""

  def __init__(self, out: str):
    self.out = out
    self.tmp = None

  def __enter__(self) -> str:
    self.tmp = tempfile.mkdtemp(
      prefix=f".{os.path.basename(self.out)}.tmp-", dir=os.path.dirname(self.out)
    )
    return self.tmp

  def __exit__(self, exc_type, exc, tb):
    if exc_type is not None:
      shutil.rmtree(self.tmp, ignore_errors=True)
      return False
    fileio.fix_tree_permissions(self.tmp)  # mkdtemp's 0700 would stick after the rename
    if os.path.isdir(self.out):
      os.rmdir(self.out)  # empty (checked by prepare_output_dir)
    os.rename(self.tmp, self.out)
    return False
