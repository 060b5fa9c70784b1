"""Users' text files and UTF-8: one policy, one message, for every reader.

Every reader of user data (pretraining text, GLUE/custom task files, predict
inputs, vocabularies, SQuAD JSON) reports a file that is not UTF-8 the same
way: one line naming the file, the first invalid byte, its byte offset and
line, and how to fix it. Readers that decode in text mode only learn an
offset inside Python's read buffer, so `not_utf8` finds the place itself by
scanning the bytes.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterable, Iterator

from electra_jax.errors import ElectraError

_BOM = codecs.BOM_UTF8
_CHUNK = 1 << 20


def utf8_error_message(path: str, byte: int, offset: int, line: int, hint: str = "") -> str:
  """The one wording of "not UTF-8" (`hint`: extra ways out, e.g. a flag)."""
  return (
    f"{path} is not UTF-8: invalid byte 0x{byte:02x} at byte offset {offset} (line {line}); "
    f"re-encode it as UTF-8 (e.g. iconv -f latin1 -t utf-8){hint}"
  )


def find_invalid_utf8(path: str | os.PathLike) -> tuple[int, int, int] | None:
  """`(byte, byte offset, line)` of the first invalid UTF-8 in a file, or None.

  A leading byte-order mark is valid. Lines are split on b"\\n", which never
  occurs inside a multi-byte sequence, so each line decodes on its own.
  """
  offset = 0
  with open(path, "rb") as f:
    for line_no, raw in enumerate(f, 1):
      start = len(_BOM) if line_no == 1 and raw.startswith(_BOM) else 0
      try:
        raw[start:].decode("utf-8")
      except UnicodeDecodeError as e:
        position = start + e.start
        return raw[position], offset + position, line_no
      offset += len(raw)
  return None


def not_utf8(path: str | os.PathLike, hint: str = "") -> ElectraError:
  """The error to raise (`from None`) when decoding `path` failed."""
  path = os.fspath(path)
  found = find_invalid_utf8(path)
  if found is None:  # the file changed under us; still say what to do
    return ElectraError(f"{path} is not UTF-8; re-encode it as UTF-8{hint}")
  return ElectraError(utf8_error_message(path, *found, hint=hint))


def check_utf8(path: str | os.PathLike, hint: str = "") -> None:
  """Raises `not_utf8(path)` unless the whole file decodes as UTF-8.

  Streams the file in 1 MiB chunks (C-speed decoding), so checking a data
  file up front costs a fraction of reading it for training.
  """
  decoder = codecs.getincrementaldecoder("utf-8")()
  try:
    with open(path, "rb") as f:
      while chunk := f.read(_CHUNK):
        decoder.decode(chunk)
      decoder.decode(b"", final=True)
  except UnicodeDecodeError:
    raise not_utf8(path, hint) from None


def utf8_lines(lines: Iterable[str], path: str | os.PathLike) -> Iterator[str]:
  """Passes through the lines of a file opened in text mode as UTF-8.

  A decoding error becomes `not_utf8(path)` instead of a traceback; wrap the
  file object with it (`csv.reader(utf8_lines(f, path))` keeps line numbers).
  """
  try:
    yield from lines
  except UnicodeDecodeError:
    raise not_utf8(path) from None
