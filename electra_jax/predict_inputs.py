"""Input files for `electra-jax predict`: .txt, .tsv, .csv and .jsonl rows.

Formats, chosen by extension (or `fmt`):
  - `.txt`: one example per line; a tab splits the line into text and
    text pair (everything after the first tab is the pair). No header, no
    labels.
  - `.tsv` / `.csv`: a header row naming the columns. TSV is read with
    quoting off (a field may begin with a quote, as in GLUE); CSV with
    standard quoting (a quoted field may span lines).
  - `.jsonl`: one JSON object per line.
A byte-order mark is ignored. An empty line is an example with empty text
(the predictor answers "empty input"), not an error. A malformed row (bad
JSON, a missing field, a wrong field count, bytes that are not UTF-8) is
returned with `error` set, so the caller can report its row and line.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

from electra_jax import textfiles
from electra_jax.errors import ElectraError

FORMATS = ("txt", "tsv", "csv", "jsonl")


class InputRow(NamedTuple):
  """One data row of an input file."""

  index: int  # 0-based data row
  line: int  # 1-based line in the file where the row starts
  text: str
  pair: str | None
  label: Any = None  # raw label value (only read for --eval)
  error: str | None = None  # malformed: why; the row is not predicted


def input_format(path: str, fmt: str | None = None) -> str:
  """`fmt`, or the format the extension of `path` names."""
  if fmt:
    if fmt not in FORMATS:
      raise ElectraError(f"unknown input format {fmt!r}: use one of {', '.join(FORMATS)}")
    return fmt
  ext = os.path.splitext(path)[1].lower().lstrip(".")
  if ext not in FORMATS:
    raise ElectraError(
      f"cannot tell the format of {path} from its extension: name it .txt, .tsv, .csv or "
      ".jsonl, or pass --format"
    )
  return ext


def _lines(path: str) -> Iterator[tuple[int, str | None]]:
  """(line number, decoded line or None when not UTF-8), newline stripped."""
  with open(path, "rb") as f:
    for number, raw in enumerate(f, 1):
      if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # byte-order mark
      try:
        yield number, raw.decode("utf-8").rstrip("\r\n")
      except UnicodeDecodeError:
        yield number, None


def _as_text(value: Any, column: str) -> tuple[str | None, str | None]:
  """(text, error) for a field value; None/missing text is empty input."""
  if value is None:
    return "", None
  if isinstance(value, str):
    return value, None
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None, f"field {column!r} is a {type(value).__name__}, not text"
  return str(value), None


class Columns(NamedTuple):
  """Field names; `None` picks a default from the fields a row has.

  Attributes:
    text: the text field; default `text`, else the first column the model
      was trained on (stored with it by finetune, or its GLUE task's, e.g.
      `sentence` for SST-2) when present.
    pair: the second-segment field; default `text_pair` when present, else
      the second training column (e.g. `sentence2` for RTE) when present.
    label: the gold label field (read with --eval only).
    task_columns: the model's training columns, filled in by `predict_file`.
  """

  text: str | None = None
  pair: str | None = None
  label: str = "label"
  task_columns: tuple[str, ...] = ()

  def resolve(self, names) -> tuple[str, str | None, bool]:
    """(text field, pair field or None, whether the pair is required)."""
    if self.text:
      text = self.text
    elif "text" not in names and self.task_columns and self.task_columns[0] in names:
      text = self.task_columns[0]
    else:
      text = "text"
    if self.pair:
      return text, self.pair, True
    if "text_pair" in names:
      return text, "text_pair", False
    if len(self.task_columns) == 2 and text == self.task_columns[0]:
      return text, self.task_columns[1], False
    return text, None, False


DEFAULT_COLUMNS = Columns()


def read_input(
  path: str | os.PathLike,
  columns: Columns = DEFAULT_COLUMNS,
  fmt: str | None = None,
  need_labels: bool = False,
) -> list[InputRow]:
  """Reads every data row of an input file (malformed rows carry `error`).

  Args:
    path: the input file.
    columns: field names for text, pair and label.
    fmt: one of `FORMATS`; default from the extension.
    need_labels: `--eval`: the label column must exist.

  Returns:
    The rows in file order.

  Raises:
    ElectraError: unreadable file, a header without the named columns, or
      labels asked of a .txt file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ElectraError(f"--input {path} does not exist or is not a file")
  fmt = input_format(path, fmt)
  if fmt == "txt":
    if need_labels:
      raise ElectraError(f"{path}: a .txt input has no labels to evaluate; use .tsv/.csv/.jsonl")
    return list(_read_txt(path))
  if fmt == "jsonl":
    return list(_read_jsonl(path, columns, need_labels))
  return list(_read_table(path, fmt, columns, need_labels))


def _read_txt(path: str) -> Iterator[InputRow]:
  for index, (line, text) in enumerate(_lines(path)):
    if text is None:
      yield InputRow(index, line, "", None, error="not valid UTF-8")
      continue
    text, tab, pair = text.partition("\t")
    yield InputRow(index, line, text, pair if tab else None)


def _read_jsonl(path: str, columns: Columns, need_labels: bool) -> Iterator[InputRow]:
  for index, (line, raw) in enumerate(_lines(path)):

    def bad(reason, index=index, line=line):
      return InputRow(index, line, "", None, error=reason)

    if raw is None:
      yield bad("not valid UTF-8")
      continue
    if not raw.strip():
      yield InputRow(index, line, "", None)
      continue
    try:
      obj = json.loads(raw)
    except json.JSONDecodeError as e:
      yield bad(f"bad JSON: {e.msg} at column {e.colno}")
      continue
    if not isinstance(obj, dict):
      yield bad(f"expected a JSON object, got {type(obj).__name__}")
      continue
    text_col, pair_col, pair_required = columns.resolve(obj)
    if text_col not in obj:
      yield bad(f"no {text_col!r} field (use --text-column)")
      continue
    if pair_required and pair_col not in obj:
      yield bad(f"no {pair_col!r} field")
      continue
    if need_labels and columns.label not in obj:
      yield bad(f"no {columns.label!r} field")
      continue
    text, err = _as_text(obj[text_col], text_col)
    pair, pair_err = (None, None)
    if pair_col in obj:
      pair, pair_err = _as_text(obj[pair_col], pair_col)
    if err or pair_err:
      yield bad(err or pair_err)
      continue
    yield InputRow(index, line, text, pair, obj.get(columns.label))


def _read_table(path: str, fmt: str, columns: Columns, need_labels: bool) -> Iterator[InputRow]:
  if fmt == "tsv":
    records = ((line, None if raw is None else raw.split("\t")) for line, raw in _lines(path))
  else:
    try:
      with open(path, encoding="utf-8-sig", newline="") as f:
        content = f.read()
    except UnicodeDecodeError:
      raise textfiles.not_utf8(path) from None
    records = _csv_records(content)
  header = None
  for line, fields in records:
    if header is None:
      if fields is None:
        raise textfiles.not_utf8(path)
      header = [h.strip() for h in fields]
      text_i, pair_i, label_i = _column_indices(path, header, columns, need_labels)
      index = 0
      continue
    row = index
    index += 1
    if fields is None:
      yield InputRow(row, line, "", None, error="not valid UTF-8")
    elif fields == [] or fields == [""]:
      yield InputRow(row, line, "", None)
    elif len(fields) != len(header):
      yield InputRow(row, line, "", None, error=f"expected {len(header)} fields, got {len(fields)}")
    else:
      yield InputRow(
        row,
        line,
        fields[text_i],
        None if pair_i is None else fields[pair_i],
        None if label_i is None else fields[label_i],
      )
  if header is None:
    raise ElectraError(f"{path} is empty: a .{fmt} input needs a header row naming its columns")


def _csv_records(content: str) -> Iterator[tuple[int, list[str] | None]]:
  reader = csv.reader(io.StringIO(content))
  start = 1
  while True:
    try:
      fields = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      # The reader cannot resynchronise inside a broken record: stop here.
      raise ElectraError(f"CSV syntax error at line {reader.line_num}: {e}") from None
    yield start, fields
    start = reader.line_num + 1


def _column_indices(path, header, columns: Columns, need_labels):
  def find(name, required, flag):
    if name in header:
      return header.index(name)
    if required:
      raise ElectraError(
        f"{path} has no column {name!r} (columns: {', '.join(header)}); pass {flag}"
      )
    return None

  text_col, pair_col, pair_required = columns.resolve(header)
  text_i = find(text_col, True, "--text-column")
  pair_i = None if pair_col is None else find(pair_col, pair_required, "--text-pair-column")
  label_i = find(columns.label, need_labels, "--label-column")
  return text_i, pair_i, label_i
