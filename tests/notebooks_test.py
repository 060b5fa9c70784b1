"""The notebooks in notebooks/: committed with their outputs, and executable.

The notebooks are committed executed, plots included, so that they render on
GitHub; `scripts/execute_notebooks.py` writes them. The fast tests check what
is committed: valid nbformat, every code cell executed once, top to bottom,
no error output, at least one image/png per notebook, no path of the machine
that executed them.

Executing them takes minutes (each pretrains or fine-tunes a tiny model), so
that test is marked slow: `.venv/bin/python -m pytest -m slow
tests/notebooks_test.py` (README). It executes a copy of each notebook in a
fresh kernel and fails if a cell raises — the notebooks assert their own
claims (the loss falls, JAX matches PyTorch, sharding leaves the losses
alone, ...) — or if the outputs could not be committed as they are.
"""

import importlib.util
import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = (
  "01_rtd_up_close.ipynb",
  "02_training_dynamics.ipynb",
  "03_convert_and_finetune.ipynb",
  "04_sharding.ipynb",
)


def _runner():
  spec = importlib.util.spec_from_file_location(
    "execute_notebooks", REPO / "scripts" / "execute_notebooks.py"
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


runner = _runner()


def test_notebooks_exist():
  assert [p.name for p in NOTEBOOKS] == list(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_with_outputs(path):
  nbformat = pytest.importorskip("nbformat")
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  assert not runner.problems(nb), runner.problems(nb)
  assert nb.metadata["kernelspec"] == runner.KERNELSPEC
  for i, cell in enumerate(nb.cells):
    assert "execution" not in cell.get("metadata", {}), f"cell {i} keeps timing metadata"


def test_problems_are_found():
  nbformat = pytest.importorskip("nbformat")
  v4 = nbformat.v4
  nb = v4.new_notebook(
    cells=[
      v4.new_code_cell(
        "print(path)",
        execution_count=1,
        outputs=[v4.new_output("stream", name="stdout", text="/tmp/electra_jax_nb01_x/run\n")],
      ),
      v4.new_code_cell(
        "1 / 0",
        execution_count=3,
        outputs=[
          v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])
        ],
      ),
    ]
  )
  found = "\n".join(runner.problems(nb))
  assert "execution counts [1, 3]" in found
  assert "ZeroDivisionError" in found
  assert "/tmp/" in found
  assert "no image/png" in found


@pytest.fixture(scope="module")
def kernel_name():
  pytest.importorskip("ipykernel")
  pytest.importorskip("nbclient")
  with runner.kernel_environment() as name:
    yield name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, kernel_name):
  pytest.importorskip("matplotlib")
  source = path.read_text(encoding="utf-8")
  if "import torch" in source:
    pytest.importorskip("torch", reason=f"{path.name} compares with PyTorch")
    pytest.importorskip("transformers", reason=f"{path.name} compares with transformers")
  nbclient = pytest.importorskip("nbclient")
  try:
    nb = runner.execute(path, kernel_name)
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f"{path.name} failed:\n{e}")
  assert not runner.problems(nb), runner.problems(nb)
  # The committed outputs come from this source: the same cells draw plots.
  committed = json.loads(source)
  assert _plotting_cells(committed["cells"]) == _plotting_cells(nb.cells)


def _plotting_cells(cells):
  return [
    i
    for i, cell in enumerate(cells)
    if any("image/png" in output.get("data", {}) for output in cell.get("outputs", []))
  ]
