"""What a workdir remembers about the run that wrote it.

`WORKDIR/run_config.json` holds the whole resolved config of the run (and, when a
resume was allowed to change something, the earlier configs and what
changed). A re-run in the same workdir is compared with it before anything is
written: a change to a key that changes the run's arithmetic (learning rate,
schedule, steps, batch, seed, objective, data, model, ...) is refused with the
differing keys listed, unless the user names them in
`--config.allow_changed=key1,key2`. Keys that only change bookkeeping
(`NON_MATH_KEYS`: logging and checkpoint intervals, evaluation batch size,
the device mesh, ...) may change freely.

`WORKDIR/results.json` carries a `status`: `complete` or `stopped`; a re-run of
a complete job is a no-op.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from electra_jax import fileio
from electra_jax.errors import ElectraError

CONFIG_FILE = "run_config.json"  # not config.json: that names a HF model directory
RESULTS_FILE = "results.json"

# Changing these never changes a number the run computes (only how often it
# logs/saves, where it runs, or what else it writes), so a resume may change them.
NON_MATH_KEYS = frozenset(
  {
    "allow_changed",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "async_checkpoints",
    "eval_batch_size",
    "export_hf",
    "write_test_predictions",
    "seeds",
    "sharding_rules",
    "distributed",
    "coordinator_address",
    "num_processes",
    "process_id",
  }
)
NON_MATH_PREFIXES = ("mesh.",)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  """`{"a": {"b": 1}}` → `{"a.b": 1}` (JSON-normalised values)."""
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(flatten(value, name + "."))
    else:
      out[name] = json.loads(json.dumps(value, default=str))
  return out


def is_math_key(key: str) -> bool:
  return key not in NON_MATH_KEYS and not key.startswith(NON_MATH_PREFIXES)


def changed_keys(old: dict, new: dict) -> list[str]:
  """Keys present in both flattened configs whose values differ.

  A key only one side has comes from another version of the config file
  (a key added or removed since) and is not a change the user made.
  """
  a, b = flatten(old), flatten(new)
  return sorted(k for k in a.keys() & b.keys() if a[k] != b[k])


def read_json(path: str) -> dict | None:
  """The JSON object in `path`, or None when it is absent or unreadable (a torn write)."""
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


def stored_config(workdir: str) -> dict | None:
  record = read_json(os.path.join(workdir, CONFIG_FILE))
  return None if record is None else record.get("config")


def check_config(workdir: str, config: dict, *, resuming: bool) -> list[str]:
  """Compares `config` with the one stored in `workdir`.

  Args:
    workdir: the run's directory.
    config: the resolved config (`cfg.to_dict()`).
    resuming: whether the workdir holds training progress (a checkpoint or a
      finished run); without it the stored config is simply replaced.

  Returns:
    The keys that changed (all of them allowed or bookkeeping-only).

  Raises:
    ElectraError: a key that changes the run's math differs and is not named
      in `allow_changed`.
  """
  old = stored_config(workdir)
  if old is None or not resuming:
    return []
  changed = changed_keys(old, config)
  allowed = {k.strip() for k in str(config.get("allow_changed") or "").split(",") if k.strip()}
  refused = [k for k in changed if is_math_key(k) and k not in allowed]
  if refused:
    flat_old, flat_new = flatten(old), flatten(config)
    detail = "; ".join(f"{k}: {flat_old[k]!r} -> {flat_new[k]!r}" for k in refused)
    raise ElectraError(
      f"{workdir} was run with a different config ({detail}); resuming would change the run "
      f"half-way. Use a new --workdir, the original values, or --config.allow_changed={','.join(refused)}"
    )
  return changed


def record_config(workdir: str, config: dict, changed: list[str]) -> None:
  """Writes `run_config.json`; when `changed` is non-empty the earlier config is kept in `history`."""
  path = os.path.join(workdir, CONFIG_FILE)
  record = read_json(path) or {}
  history = list(record.get("history", []))
  if record.get("config") is not None and changed:
    history.append(
      {
        "config": record["config"],
        "replaced": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "changed": changed,
      }
    )
  elif record.get("config") is not None and not changed:
    return  # same config: leave the file as it is (a finished run's re-run writes nothing)
  fileio.atomic_write_text(path, json.dumps({"config": config, "history": history}, indent=2))


def config_history(workdir: str) -> list[dict]:
  record = read_json(os.path.join(workdir, CONFIG_FILE)) or {}
  return list(record.get("history", []))


def read_results(workdir: str) -> dict | None:
  return read_json(os.path.join(workdir, RESULTS_FILE))


def has_checkpoint(path: str) -> bool:
  """Whether `path/checkpoints` holds a finished Orbax step."""
  ckpt_dir = os.path.join(path, "checkpoints")
  return os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir))


def math_changes(changed: list[str]) -> list[str]:
  return [k for k in changed if is_math_key(k)]
