"""docs/configs.md against the config files: every key, default and preset value.

The page is written by hand; these tests keep it honest. Each config key must
have a row in its file's "Keys" table with the current default, no row may
name a key the config lacks, and the preset tables must hold exactly what
`get_config` returns for each size (and the epochs per task).
"""

import ast
import math
import pathlib
import re

import pytest

from electra_jax import experiment

REPO = pathlib.Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "configs.md"
CONFIGS = {
  "pretrain.py": ("experiments/configs/pretrain.py", "size=small", "size={}"),
  "glue.py": ("experiments/configs/glue.py", "task=sst2,size=small", "task=sst2,size={}"),
}
SIZES = ("tiny", "small", "base", "large")
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "custom")


def _section(name: str) -> str:
  """Text of the `## experiments/configs/<name>` section."""
  text = DOC.read_text(encoding="utf-8")
  parts = re.split(r"^## ", text, flags=re.M)
  matches = [p for p in parts if p.startswith(f"`experiments/configs/{name}`")]
  assert len(matches) == 1, f"docs/configs.md needs one '## `experiments/configs/{name}`' section"
  return matches[0]


def _tables(section: str) -> list[list[list[str]]]:
  """Markdown tables of `section` as rows of stripped cells (separator rows dropped)."""
  tables, current = [], []
  for line in section.splitlines() + [""]:
    if line.startswith("|"):
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      if not all(re.fullmatch(r"-+", c) for c in cells):
        current.append(cells)
    elif current:
      tables.append(current)
      current = []
  return tables


def _table(section: str, first_header: str) -> list[list[str]]:
  found = [t for t in _tables(section) if t[0][0] == first_header]
  assert len(found) == 1, f"expected one table whose first column is {first_header!r}"
  return found[0]


def _literal(cell: str):
  assert cell.startswith("`") and cell.endswith("`"), f"value cell {cell!r} is not `code`"
  return ast.literal_eval(cell.strip("`"))


def _leaves(cfg, prefix: str = "") -> dict:
  out = {}
  for key, value in cfg.items():
    if hasattr(value, "items"):
      out.update(_leaves(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _same(doc_value, cfg_value) -> bool:
  if isinstance(cfg_value, float) and not isinstance(doc_value, bool):
    return isinstance(doc_value, int | float) and math.isclose(doc_value, cfg_value, rel_tol=1e-12)
  return type(doc_value) is type(cfg_value) and doc_value == cfg_value


def _load(path: str, arg: str) -> dict:
  with pytest.MonkeyPatch.context() as mp:
    mp.chdir(REPO)
    return _leaves(experiment.load_config(f"{path}:{arg}"))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_key_documented_with_its_default(name):
  path, default_arg, _ = CONFIGS[name]
  cfg = _load(path, default_arg)
  rows = _table(_section(name), "key")[1:]
  documented = {}
  for row in rows:
    assert len(row) == 3 and row[2], f"{name}: row {row} needs key | default | meaning"
    documented[row[0].strip("`")] = _literal(row[1])
  missing = sorted(set(cfg) - set(documented))
  stale = sorted(set(documented) - set(cfg))
  assert not missing, f"{name} keys missing from docs/configs.md: {missing}"
  assert not stale, f"docs/configs.md documents keys {name} no longer has: {stale}"
  wrong = {k: (documented[k], v) for k, v in cfg.items() if not _same(documented[k], v)}
  assert not wrong, f"{name} defaults differ (doc, code): {wrong}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_size_presets_match(name):
  path, _, size_arg = CONFIGS[name]
  table = _table(_section(name), "size")
  header = [h.strip("`") for h in table[0][1:]]
  sizes = [row[0].strip("`") for row in table[1:]]
  assert sizes == list(SIZES)
  for row in table[1:]:
    cfg = _load(path, size_arg.format(row[0].strip("`")))
    for key, cell in zip(header, row[1:], strict=True):
      assert key in cfg, f"preset column {key} is not a config key"
      assert _same(_literal(cell), cfg[key]), (
        f"{name} {row[0]} {key}: doc {cell}, code {cfg[key]!r}"
      )


def test_glue_epochs_per_task_match():
  table = _table(_section("glue.py"), "task")
  assert [row[0].strip("`") for row in table[1:]] == list(GLUE_TASKS)
  for row in table[1:]:
    cfg = _load("experiments/configs/glue.py", f"task={row[0].strip('`')}")
    assert _literal(row[1]) == cfg["epochs"], row
