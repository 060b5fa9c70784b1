"""Device meshes, logical-axis rule presets and helpers to place data on them.

The model names every param and activation dimension with a *logical* axis
(`vocab`, `embed`, `mlp`, `joined_kv`, `activation_batch`, ... see
`model.py`); a rule preset maps those names onto the three axes of the mesh:

  * `data`  — pure data parallelism (params replicated);
  * `fsdp`  — data parallelism whose params/optimizer state are sharded along
    their `embed` dimension (ZeRO-3 style), so each device holds 1/fsdp of them;
  * `model` — tensor parallelism over the `mlp`, attention (`joined_kv`,
    `heads`) and `vocab` dimensions.

Every mesh built here has all three axes (size 1 where unused), so every
preset works with every mesh.

Divisibility: a param dimension whose size is not a multiple of the mesh axes
it maps to (e.g. a 30,522-row vocabulary over a 4-way `model` axis) is
*replicated* along that dimension instead of failing; `param_shardings` logs
one warning naming those params. Batches are different — a batch whose size
is not a multiple of the data-parallel devices raises `ElectraError`, since
padding it silently would change the loss.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from electra_jax.errors import ElectraError

PyTree = Any
Rules = tuple[tuple[str, Any], ...]

MESH_AXES = ("data", "fsdp", "model")
PRESETS = ("dp", "fsdp", "fsdp_tp")

# Every logical axis name `model.py` uses (plus `batch` for input batches and
# `heads`/`kv` for split-head kernels); each preset maps all of them so that a
# name missing from the rules is a bug we notice, not a silent replication.
LOGICAL_AXES = (
  "batch",
  "vocab",
  "embed",
  "joined_kv",
  "heads",
  "kv",
  "mlp",
  "position",
  "token_type",
  "norm",
  "layers",
  "activation_batch",
  "activation_length",
  "activation_embed",
  "activation_mlp",
)

_log = logging.getLogger(__name__)


def make_mesh(mesh_shape: Mapping[str, int] | None = None, devices=None) -> Mesh:
  """Builds a `(data, fsdp, model)` mesh.

  Args:
    mesh_shape: sizes by axis name, e.g. `{"data": -1, "fsdp": 1, "model": 2}`.
      Missing axes have size 1; at most one axis may be -1 (all remaining
      devices). Default: `{"data": -1}`.
    devices: the devices to use (default `jax.devices()`, every process's).

  Returns:
    A `jax.sharding.Mesh` with axes `("data", "fsdp", "model")`, all of type
    `Auto` (sharding propagated by the compiler from the constraints).

  Raises:
    ElectraError: unknown axis names, or sizes that do not multiply to the
      number of devices.
  """
  shape = dict(mesh_shape or {"data": -1})
  unknown = sorted(set(shape) - set(MESH_AXES))
  if unknown:
    raise ElectraError(f"unknown mesh axes {', '.join(unknown)}: use only {', '.join(MESH_AXES)}")
  devices = list(jax.devices() if devices is None else devices)
  sizes = [int(shape.get(name, 1)) for name in MESH_AXES]
  wildcards = [i for i, s in enumerate(sizes) if s == -1]
  if len(wildcards) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ElectraError(
      f"bad mesh shape {shape}: sizes must be positive, with at most one -1 (= the remaining devices)"
    )
  known = math.prod(s for s in sizes if s != -1)
  if wildcards:
    if len(devices) % known:
      raise ElectraError(
        f"mesh shape {shape} does not divide the {len(devices)} devices: "
        f"the fixed axes multiply to {known}"
      )
    sizes[wildcards[0]] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ElectraError(
      f"mesh shape {shape} needs {math.prod(sizes)} devices but {len(devices)} are available: "
      "make the sizes multiply to the device count, or set one axis to -1"
    )
  return jax.make_mesh(
    tuple(sizes),
    MESH_AXES,
    axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
    devices=devices,
  )


def mesh_context(mesh: Mesh):
  """Context manager making `mesh` the ambient mesh.

  Flax's `nn.with_logical_constraint` is a no-op unless a mesh is set this
  way, so activations are only constrained inside this context.
  """
  return jax.set_mesh(mesh)


def logical_axis_rules(preset: str = "dp") -> Rules:
  """Logical-axis → mesh-axis rules for a preset (t5x / MaxText style).

  Args:
    preset: `"dp"` (params replicated, batch over `data`), `"fsdp"` (batch over
      `data`×`fsdp`, params sharded along `embed` over `fsdp`) or `"fsdp_tp"`
      (as `fsdp`, plus `mlp`, `joined_kv`, `heads` and `vocab` over `model`).

  Returns:
    A tuple of `(logical_name, mesh_axes)` pairs for `nn.logical_axis_rules`
    and `nn.logical_to_mesh_sharding`; every name in `LOGICAL_AXES` appears.

  Raises:
    ElectraError: unknown preset.
  """
  if preset not in PRESETS:
    raise ElectraError(f"unknown sharding preset {preset!r}: choose one of {', '.join(PRESETS)}")
  batch = "data" if preset == "dp" else ("data", "fsdp")
  embed = None if preset == "dp" else "fsdp"
  model = "model" if preset == "fsdp_tp" else None
  mapping = {
    "batch": batch,
    "activation_batch": batch,
    "embed": embed,
    "vocab": model,
    "mlp": model,
    "joined_kv": model,
    "heads": model,
    "activation_mlp": model,
    # Never sharded: small tables, the scanned-layer axis, sequence length
    # (no sequence parallelism) and the residual stream's width (sharding it
    # over `fsdp` too would conflict with the batch using that axis).
    "kv": None,
    "position": None,
    "token_type": None,
    "norm": None,
    "layers": None,
    "activation_length": None,
    "activation_embed": None,
  }
  assert set(mapping) == set(LOGICAL_AXES)
  return tuple((name, mapping[name]) for name in LOGICAL_AXES)


def _axis_size(mesh: Mesh, axes) -> int:
  if axes is None:
    return 1
  if isinstance(axes, str):
    axes = (axes,)
  return math.prod(mesh.shape[a] for a in axes)


def _divisible_spec(spec: P, shape: tuple[int, ...], mesh: Mesh) -> tuple[P, list[int]]:
  """`spec` with the mesh axes of non-divisible dimensions dropped."""
  entries = list(spec) + [None] * (len(shape) - len(spec))
  dropped = []
  for i, (axes, size) in enumerate(zip(entries, shape)):
    if axes is not None and size % _axis_size(mesh, axes):
      entries[i] = None
      dropped.append(i)
  return P(*entries), dropped


def param_shardings(tree: PyTree, mesh: Mesh, rules: Rules) -> PyTree:
  """`NamedSharding`s for a pytree of params (or a whole train state).

  Args:
    tree: either the *boxed* abstract params/state, as returned by
      `jax.eval_shape(model.init, ...)["params"]` (leaves are
      `nn.Partitioned` holding `ShapeDtypeStruct`s: names and shapes known,
      so non-divisible dimensions are replicated), or a pytree of logical
      `PartitionSpec`s such as `model.logical_axes(model)` (no shapes, no
      divisibility check). Unannotated leaves (optimizer step counts, RNG
      keys) are replicated.
    mesh: from `make_mesh`.
    rules: from `logical_axis_rules`.

  Returns:
    A pytree of `NamedSharding`, shaped like the unboxed `tree`.
  """
  replaced: list[str] = []

  def one(path, leaf):
    if isinstance(leaf, nn.Partitioned):
      spec = nn.logical_to_mesh_axes(leaf.names, rules)
      spec, dropped = _divisible_spec(spec, tuple(leaf.value.shape), mesh)
      if dropped:
        replaced.append(f"{jax.tree_util.keystr(path)} {tuple(leaf.value.shape)} dims {dropped}")
      return NamedSharding(mesh, spec)
    if isinstance(leaf, P):
      return NamedSharding(mesh, nn.logical_to_mesh_axes(tuple(leaf), rules))
    return NamedSharding(mesh, P())

  out = jax.tree_util.tree_map_with_path(
    one, tree, is_leaf=lambda x: isinstance(x, (nn.Partitioned, P))
  )
  if replaced:
    more = f"; and {len(replaced) - 6} more" if len(replaced) > 6 else ""
    _log.warning(
      "replicated along dimensions not divisible by their mesh axes: %s%s",
      "; ".join(replaced[:6]),
      more,
    )
  return out


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
  """Sharding of input batches: leading (batch) dimension over the data axes."""
  return NamedSharding(mesh, P(nn.logical_to_mesh_axes(("batch",), rules)[0]))


def shard_batch(host_batch: PyTree, sharding: NamedSharding) -> PyTree:
  """Places a host batch (numpy arrays) onto the mesh as global `jax.Array`s.

  Each process passes its own slice of the global batch (the data pipeline
  reads shard `jax.process_index()` of `jax.process_count()`); on one host
  that slice is the whole batch.

  Args:
    host_batch: pytree of arrays with the per-process batch as leading dim.
    sharding: from `batch_sharding`.

  Returns:
    The same pytree of global arrays, batch dimension
    `process_count × local batch`, split across the data-parallel devices.

  Raises:
    ElectraError: a leaf is a scalar, or the global batch size is not a
      multiple of the number of data-parallel devices.
  """
  spec = sharding.spec
  shards = _axis_size(sharding.mesh, spec[0] if len(spec) else None)

  def one(path, x):
    x = np.asarray(x)
    if x.ndim == 0:
      raise ElectraError(
        f"batch entry {jax.tree_util.keystr(path)} is a scalar; batches hold per-example arrays"
      )
    global_batch = x.shape[0] * jax.process_count()
    if global_batch % shards:
      raise ElectraError(
        f"global batch size {global_batch} is not divisible by the {shards} data-parallel devices: "
        "change batch_size or the mesh"
      )
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree_util.tree_map_with_path(one, host_batch)


def maybe_initialize_distributed(cfg: Mapping[str, Any] | Any | None = None) -> bool:
  """Calls `jax.distributed.initialize` when the config asks for multi-host.

  Args:
    cfg: a mapping (or `ConfigDict`) with `distributed` (bool; default False)
      and, optionally, `coordinator_address`, `num_processes`, `process_id`,
      `local_device_ids`. On Cloud TPU VMs and SLURM clusters the optional keys
      may stay unset: JAX detects them.

  Returns:
    True if this call (or an earlier one) initialised the distributed runtime,
    False when the config does not ask for it.

  Raises:
    ElectraError: initialisation failed (coordinator unreachable, missing
      settings outside an auto-detected cluster, ...).
  """
  get = (lambda k: cfg.get(k)) if cfg is not None else (lambda k: None)
  if not get("distributed"):
    return False
  if jax.distributed.is_initialized():
    return True
  # None, and the pretraining config's defaults ("", 0, -1), mean "let JAX detect it".
  unset = {"coordinator_address": "", "num_processes": 0, "process_id": -1}
  kwargs = {}
  for key in ("coordinator_address", "num_processes", "process_id", "local_device_ids"):
    value = get(key)
    if value is not None and value != unset.get(key):
      kwargs[key] = value
  try:
    jax.distributed.initialize(**kwargs)
  except (RuntimeError, ValueError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ElectraError(
      f"jax.distributed.initialize failed ({first}): run the same command on every host; "
      "outside Cloud TPU/SLURM set coordinator_address, num_processes and process_id"
    ) from None
  return True
