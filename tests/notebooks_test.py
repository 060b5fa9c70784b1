"""Runs every notebook in notebooks/ top to bottom; a cell that raises fails the test.

The notebooks assert their own claims (JAX vs PyTorch logits, a falling
pretraining loss, ...), so executing them is the check. Each runs in a fresh
kernel of this interpreter (a kernelspec written to a temp dir, so a
`python3` kernelspec elsewhere on the machine cannot point at another
Python), with the notebook's own directory as the working directory, as in
Jupyter.
"""

import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "electra-jax-notebook-test"
CELL_TIMEOUT_S = 600


def test_notebooks_exist():
  names = [p.name for p in NOTEBOOKS]
  for name in (
    "01_model_and_conversion.ipynb",
    "02_pretraining_smoke.ipynb",
    "03_finetune_custom_data.ipynb",
  ):
    assert name in names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_without_outputs(path):
  # Outputs hold temp paths and timings: committing them makes every re-run a diff.
  nb = json.loads(path.read_text(encoding="utf-8"))
  for i, cell in enumerate(nb["cells"]):
    if cell["cell_type"] == "code":
      assert not cell.get("outputs"), f"{path.name} cell {i} has outputs; clear them"
      assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
  """A kernelspec for this interpreter, found through JUPYTER_PATH."""
  kernelspec = pytest.importorskip("ipykernel.kernelspec")
  prefix = tmp_path / "jupyter-prefix"
  kernelspec.install(kernel_name=KERNEL_NAME, prefix=str(prefix))
  monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
  # The kernel inherits this environment: one CPU device, as on a user's
  # laptop, not the 8 fake devices conftest.py sets up for the sharding tests.
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  return KERNEL_NAME


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, kernel_name):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  source = path.read_text(encoding="utf-8")
  if "import torch" in source:
    pytest.importorskip("torch", reason=f"{path.name} compares with PyTorch")
    pytest.importorskip("transformers", reason=f"{path.name} compares with transformers")
  nb = nbformat.reads(source, as_version=4)
  client = nbclient.NotebookClient(
    nb,
    kernel_name=kernel_name,
    timeout=CELL_TIMEOUT_S,
    resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
  )
  try:
    client.execute()
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f"{path.name} failed:\n{e}")
  executed = [c for c in nb.cells if c.cell_type == "code"]
  assert executed and all(c.execution_count is not None for c in executed)
