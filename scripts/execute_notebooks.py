#!/usr/bin/env python3
"""Executes the notebooks in notebooks/ and stores their outputs, so they render on GitHub.

  .venv/bin/python scripts/execute_notebooks.py                # every notebook, outputs written in place
  .venv/bin/python scripts/execute_notebooks.py notebooks/02_training_dynamics.ipynb
  .venv/bin/python scripts/execute_notebooks.py --check        # execute copies, write nothing

Each notebook runs top to bottom in a fresh kernel of this interpreter (a
kernelspec written to a temp dir, so a `python3` kernelspec elsewhere on the
machine cannot point at another Python), with notebooks/ as the working
directory as in Jupyter, one CPU device and no XLA_FLAGS from the caller (the
sharding notebook sets its own). A notebook fails when a cell raises — the
notebooks assert their own claims — or when its outputs would not belong in
the repository: no image, or a path of this machine (the temp dir, the
checkout, the home directory) in an output. Written notebooks keep the
`python3` kernelspec and no per-cell timing metadata.

`tests/notebooks_test.py` uses `execute` and `problems` from here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
KERNEL_NAME = "electra-jax-notebooks"
CELL_TIMEOUT_S = 1800  # generous: a shared, loaded machine is many times slower than an idle one
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


# Absolute-path prefixes of temp dirs, checkouts and home directories.
_PATH_PREFIXES = ("/tmp/", "/var/folders/", "/home/", "/Users/", "/root/", "/work/")


def machine_paths() -> list[str]:
  """Strings that must not appear in a committed output: this machine's paths and common prefixes."""
  here = (tempfile.gettempdir(), str(REPO), str(pathlib.Path.home()))
  return sorted({p.rstrip("/") + "/" for p in here if p.strip("/")} | set(_PATH_PREFIXES))


@contextlib.contextmanager
def kernel_environment():
  """A kernelspec for this interpreter on JUPYTER_PATH, and the kernel's environment variables."""
  from ipykernel import kernelspec

  saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "XLA_FLAGS", "JAX_PLATFORMS")}
  with tempfile.TemporaryDirectory(prefix="electra_jax_kernel_") as prefix:
    kernelspec.install(kernel_name=KERNEL_NAME, prefix=prefix)
    os.environ["JUPYTER_PATH"] = os.path.join(prefix, "share", "jupyter")
    # One CPU device, as on a user's laptop (not the 8 fake devices the test
    # suite's conftest.py sets up); the sharding notebook asks for its own.
    os.environ.pop("XLA_FLAGS", None)
    os.environ["JAX_PLATFORMS"] = "cpu"
    try:
      yield KERNEL_NAME
    finally:
      for key, value in saved.items():
        if value is None:
          os.environ.pop(key, None)
        else:
          os.environ[key] = value


def execute(path: pathlib.Path, kernel_name: str):
  """Runs the notebook at `path`; returns the executed `NotebookNode` (the file is not touched).

  Raises:
    nbclient.exceptions.CellExecutionError: a cell raised.
  """
  import nbclient
  import nbformat

  nb = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(
    nb,
    kernel_name=kernel_name,
    timeout=CELL_TIMEOUT_S,
    record_timing=False,
    resources={"metadata": {"path": str(path.parent)}},
  )
  client.execute()
  nb.metadata["kernelspec"] = dict(KERNELSPEC)
  return nb


def _output_text(output) -> str:
  parts = []
  if "text" in output:
    parts.append(output["text"])
  for mime, value in output.get("data", {}).items():
    if mime.startswith("text/") or mime.endswith("json"):
      parts.append(value if isinstance(value, str) else str(value))
  parts.extend(output.get("traceback", []))
  return "".join(p if isinstance(p, str) else "".join(p) for p in parts)


def problems(nb) -> list[str]:
  """Why the executed notebook `nb` should not be committed as it is (empty: fine)."""
  found = []
  code_cells = [c for c in nb.cells if c.cell_type == "code"]
  counts = [c.get("execution_count") for c in code_cells]
  if counts != list(range(1, len(code_cells) + 1)):
    found.append(f"code cells not executed once each, top to bottom: execution counts {counts}")
  images = 0
  for i, cell in enumerate(nb.cells):
    for output in cell.get("outputs", []):
      if output.get("output_type") == "error":
        found.append(f"cell {i} raised {output.get('ename')}: {output.get('evalue')}")
      if "image/png" in output.get("data", {}):
        images += 1
      text = _output_text(output)
      for path in machine_paths():
        if path in text:
          found.append(f"cell {i} prints a path of this machine ({path}): {text[:200]!r}")
    source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
    shows = any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
    if cell.cell_type == "code" and "plt.show()" in source and not shows:
      found.append(f"cell {i} calls plt.show() but stores no image: outputs older than the source?")
  if not images:
    found.append("no image/png output: a notebook here shows at least one plot")
  return found


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("notebooks", nargs="*", type=pathlib.Path, help="default: notebooks/*.ipynb")
  parser.add_argument("--check", action="store_true", help="execute copies and write nothing")
  args = parser.parse_args(argv)
  import nbformat

  paths = args.notebooks or sorted(NOTEBOOK_DIR.glob("*.ipynb"))
  failed = 0
  with kernel_environment() as kernel_name:
    for path in paths:
      t0 = time.perf_counter()
      try:
        nb = execute(path.resolve(), kernel_name)
      except Exception as e:  # noqa: BLE001 (report and go on with the next notebook)
        print(f"FAIL {path}: {type(e).__name__}: {str(e)[-2000:]}", file=sys.stderr)
        failed += 1
        continue
      found = problems(nb)
      seconds = time.perf_counter() - t0
      if found:
        kept = pathlib.Path(tempfile.gettempdir()) / f"{path.stem}.failed.ipynb"
        nbformat.write(nb, kept)
        print(
          f"FAIL {path} ({seconds:.0f} s), executed copy in {kept}:",
          *found,
          sep="\n  ",
          file=sys.stderr,
        )
        failed += 1
      elif args.check:
        print(f"ok   {path} ({seconds:.0f} s)")
      else:
        nbformat.write(nb, path)
        print(f"wrote {path} ({seconds:.0f} s)")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
