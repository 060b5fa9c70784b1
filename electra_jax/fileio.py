"""Atomic outputs (temp file or dir + rename) that keep the usual permissions.

`tempfile.mkstemp` makes 0600 files and `mkdtemp` 0700 directories (they are
meant to be private) and a rename keeps the mode, so an output published that
way would be readable by its owner only, unlike what a plain `open(..., "w")`
or `os.makedirs` leaves. Every writer that publishes through a temp file or
directory goes through here: the result gets `0o666 & ~umask` (files) or
`0o777 & ~umask` (directories) before it is renamed into place, as if it had
been created directly. Under the default umask 022 that is 0644 / 0755.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from typing import IO

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
  """The process umask, read without a window where it is permissive."""
  # Linux reports it in /proc (kernel >= 4.7): no need to change it to read it.
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  # Elsewhere os.umask is the only getter, and it sets as it reads. The umask is
  # process-wide: a file another thread creates in between gets the stricter
  # temporary 077, never a world-writable mode. The lock keeps two of our own
  # readers from restoring each other's temporary value.
  with _UMASK_LOCK:
    mask = os.umask(0o077)
    os.umask(mask)
  return mask


def file_mode() -> int:
  """Mode a new regular file gets from `open(path, "w")`: `0o666 & ~umask`."""
  return 0o666 & ~current_umask()


def dir_mode() -> int:
  """Mode a new directory gets from `os.mkdir`: `0o777 & ~umask`."""
  return 0o777 & ~current_umask()


@contextlib.contextmanager
def atomic_writer(
  path: str | os.PathLike,
  mode: str = "w",
  *,
  encoding: str | None = "utf-8",
  newline: str | None = None,
) -> Iterator[IO]:
  """Opens a temp file beside `path`; on success it becomes `path`, whole.

  The temp file sits in `path`'s directory (a rename across file systems is not
  atomic) and is removed if the body raises, so readers see the old file or
  the complete new one, never a part.

  Args:
    path: the file to write; its directory must exist.
    mode: "w" (text) or "wb" (bytes).
    encoding: text encoding (ignored for "wb").
    newline: as for `open` (e.g. "" to write "\\n" untranslated in a TSV).

  Yields:
    the open file object.
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"mode must be 'w' or 'wb', not {mode!r}")
  path = os.fspath(path)
  directory = os.path.dirname(path) or "."
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
  try:
    if mode == "wb":
      f = os.fdopen(fd, "wb")
    else:
      f = os.fdopen(fd, "w", encoding=encoding, newline=newline)
    with f:
      yield f
    os.chmod(tmp, file_mode())  # by path: os.fchmod is POSIX-only before Python 3.13
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
  """Writes `data` to `path` atomically (see `atomic_writer`). Returns the path."""
  with atomic_writer(path, "wb") as f:
    f.write(data)
  return os.fspath(path)


def atomic_write_text(
  path: str | os.PathLike, text: str, *, encoding: str = "utf-8", newline: str | None = None
) -> str:
  """Writes `text` to `path` atomically (see `atomic_writer`). Returns the path."""
  with atomic_writer(path, "w", encoding=encoding, newline=newline) as f:
    f.write(text)
  return os.fspath(path)


def fix_tree_permissions(root: str | os.PathLike) -> None:
  """Gives `root` and everything under it the modes a fresh mkdir/open would.

  For a directory staged with `mkdtemp` (0700) before it is renamed into place:
  directories get `0o777 & ~umask`, regular files `0o666 & ~umask`. Symlinks
  are left alone (chmod would follow them out of the tree).
  """
  dmode, fmode = dir_mode(), file_mode()
  root = os.fspath(root)
  os.chmod(root, dmode)
  for parent, dirs, files in os.walk(root):
    for name in dirs:
      path = os.path.join(parent, name)
      if not os.path.islink(path):
        os.chmod(path, dmode)
    for name in files:
      path = os.path.join(parent, name)
      if stat.S_ISREG(os.lstat(path).st_mode):
        os.chmod(path, fmode)
