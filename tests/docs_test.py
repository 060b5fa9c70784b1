"""The docs against the code: config keys, defaults, presets, CLI flags and paths.

The page is written by hand; these tests keep it honest. Each config key must
have a row in its file's "Keys" table with the current default, no row may
name a key the config lacks, and the preset tables must hold exactly what
`get_config` returns for each size (and the epochs per task). In the
experiment docs, every `--config.KEY` must be a config key, every
`electra-jax COMMAND --flag` a real command and flag of the CLI parser, and
every repo file path must exist.
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
  "squad.py": ("experiments/configs/squad.py", "version=1.1,size=small", "size={}"),
  "token_classification.py": (
    "experiments/configs/token_classification.py",
    "size=small",
    "size={}",
  ),
  "multiple_choice.py": ("experiments/configs/multiple_choice.py", "size=small", "size={}"),
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


# -- flags and paths named in the experiment docs ----------------------------------

DOCS = (
  "docs/configs.md",
  "experiments/README.md",
  "experiments/recipes/tpu_vm.md",
  "experiments/results/README.md",
)


def _code_segments(text: str) -> list[str]:
  """Fenced code blocks and inline code spans, shell line continuations joined."""
  fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
  prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S)
  inline = re.findall(r"`([^`\n]+)`", prose)
  return [re.sub(r"\\\n\s*", " ", s) for s in fenced + inline]


def _all_config_keys() -> set[str]:
  keys = set()
  for path, default_arg, _ in CONFIGS.values():
    keys |= set(_load(path, default_arg))
  return keys


@pytest.mark.parametrize("doc", DOCS)
def test_config_overrides_named_in_docs_exist(doc):
  keys = _all_config_keys()
  text = (REPO / doc).read_text(encoding="utf-8")
  named = set(
    re.findall(r"--config\.([a-z_][\w.]*[a-z0-9_])", text)
  )  # KEY placeholders are upper case
  assert named or doc == "docs/configs.md"
  unknown = sorted(named - keys)
  assert not unknown, f"{doc} names --config keys that neither config has: {unknown}"


def _subcommands(parser) -> dict:
  import argparse

  for action in parser._actions:
    if isinstance(action, argparse._SubParsersAction):
      return dict(action.choices)
  return {}


@pytest.mark.parametrize("doc", DOCS)
def test_cli_flags_named_in_docs_exist(doc):
  from electra_jax import cli

  commands = _subcommands(cli.build_parser())
  text = (REPO / doc).read_text(encoding="utf-8")
  checked = 0
  for segment in _code_segments(text):
    for match in re.finditer(r"electra-jax ([a-z][\w-]*)(.*)", segment):
      name, rest = match.group(1), match.group(2)
      assert name in commands, f"{doc}: `electra-jax {name}` is not a command"
      parser = commands[name]
      nested = _subcommands(parser)
      action = re.match(r"\s+([a-z][\w-]*)", rest)
      if nested and action and action.group(1) in nested:
        parser = nested[action.group(1)]
      rest = re.split(r"electra-jax ", rest)[0]  # the next command on the line checks itself
      flags = re.findall(r"(?<![\w-])(--[a-z][\w-]*)(?![\w.])", rest)
      unknown = [f for f in flags if f not in parser._option_string_actions]
      assert not unknown, f"{doc}: electra-jax {name} has no {unknown}"
      checked += 1
  assert checked or doc == "docs/configs.md", f"{doc}: no electra-jax command found"


@pytest.mark.parametrize("doc", DOCS)
def test_repo_paths_named_in_docs_exist(doc):
  text = (REPO / doc).read_text(encoding="utf-8")
  pattern = r"(?<![\w/.])((?:electra_jax|experiments|docs|notebooks|tests)/[\w./-]*\.(?:py|md|txt|tsv|ipynb))"
  missing = sorted({p for p in re.findall(pattern, text) if not (REPO / p).exists()})
  assert not missing, f"{doc} names files that do not exist: {missing}"
