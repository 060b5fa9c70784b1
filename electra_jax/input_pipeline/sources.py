"""Pretraining text sources: local text files and tfds datasets.

A source yields *documents*, each a list of text lines ("sentences" in the
official ELECTRA builder: the unit that goes whole into segment A or B).

Local files (`LocalTextSource`), two layouts, chosen per file:
  - plain (the official `build_pretraining_dataset.py` layout): one sentence
    or paragraph per line, a blank line between documents; the end of a file
    ends a document.
  - WikiText (`wiki.*.raw` / `.tokens`, detected by the first non-blank line
    being a ` = Title = ` heading): a top-level ` = Title = ` line starts a
    new article (= document) and is dropped; ` = = Section = = ` lines are
    dropped too (they are not sentences); blank lines inside an article do
    not split it; WikiText's escaped separators ` @-@ `, ` @,@ `, ` @.@ ` are
    joined back (`-`, `,`, `.`), and paragraphs are split into sentences.

tfds (`TfdsSource`): each record of a prepared tfds dataset (array_record
file format, read through `tfds.data_source`, no TensorFlow) is one
document; its text feature is split on newlines and, by default, into
sentences.

Text must be UTF-8 (a leading BOM is skipped). With `errors="strict"` (the
default) an invalid byte is a one-line error naming the file, line and byte
offset; `errors="replace"` substitutes U+FFFD for invalid bytes instead.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Sequence

from electra_jax import textfiles
from electra_jax.errors import ElectraError

_TFDS_READ_BATCH = 256  # records per batched array_record read
_WIKITEXT_TITLE = re.compile(r"^ ?= [^=].* = ?$")
_WIKITEXT_HEADING = re.compile(r"^ ?(= )+.*?( =)+ ?$")
_WIKITEXT_ESCAPES = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))
# End of a sentence: . ! or ? (optionally closing quotes/brackets) then a
# space and an upper-case letter, digit or opening quote. Simple on purpose:
# a missed split only makes a longer "sentence", which the builder handles.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?:[\"')\]]*)\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(paragraph: str) -> list[str]:
  """Splits a paragraph into sentences with a light punctuation rule.

  Args:
    paragraph: one line of text.

  Returns:
    the non-empty sentences, stripped.
  """
  parts = _SENTENCE_END.split(paragraph)
  return [p.strip() for p in parts if p and p.strip()]


def expand_paths(patterns: Sequence[str]) -> list[str]:
  """Expands globs and directories into a sorted, de-duplicated file list.

  Args:
    patterns: file paths, globs (`data/*.txt`, `**` allowed) or
      directories (every file below them, recursively).

  Returns:
    the files, in order of the patterns, each pattern's matches sorted.
  """
  files = []
  seen = set()
  for pattern in patterns:
    pattern = os.fspath(pattern)
    if os.path.isdir(pattern):
      matches = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(pattern)
        for name in names
        if not name.startswith(".")
      )
    else:
      matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not matches:
      raise ElectraError(f"input {pattern} matches no files: check the path or glob")
    for m in matches:
      m = os.path.abspath(m)  # the manifest records where the text came from
      if m not in seen:
        seen.add(m)
        files.append(m)
  return files


def iter_file_lines(files: Sequence[str], errors: str = "strict") -> Iterator[tuple[str, str]]:
  """Yields `(path, line)` for every line of `files`, newline stripped.

  Args:
    files: text files.
    errors: "strict" (invalid UTF-8 is an `ElectraError` naming the file,
      line and byte offset) or "replace" (invalid bytes become U+FFFD).

  Yields:
    (path, line) pairs.
  """
  if errors not in ("strict", "replace"):
    raise ElectraError(f"errors must be 'strict' or 'replace', not {errors!r}")
  for path in files:
    offset = 0
    try:
      f = open(path, "rb")  # noqa: SIM115 (closed below, offsets need bytes)
    except OSError as e:
      raise ElectraError(f"cannot read {path}: {e.strerror}") from None
    with f:
      for line_no, raw in enumerate(f, 1):
        if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
          raw = raw[3:]
          offset += 3
        try:
          text = raw.decode("utf-8", errors)
        except UnicodeDecodeError as e:
          # Both commands that read raw text take the flag; name them, since
          # `pretrain` on raw files (prepared on the fly) does not.
          raise ElectraError(
            textfiles.utf8_error_message(
              path,
              raw[e.start],
              offset + e.start,
              line_no,
              hint=", or pass --encoding-errors replace to prepare-pretraining or tokenizer train",
            )
          ) from None
        offset += len(raw)
        yield path, text.rstrip("\r\n")


def _is_wikitext(path: str, errors: str) -> bool:
  for _, line in iter_file_lines([path], errors):
    if line.strip():
      return bool(_WIKITEXT_TITLE.match(line))
  return False


def _wikitext_paragraph(line: str) -> str:
  for escaped, plain in _WIKITEXT_ESCAPES:
    line = line.replace(escaped, plain)
  return line.strip()


class LocalTextSource:
  """Documents from local text files (see the module docstring for layouts)."""

  def __init__(
    self,
    patterns: Sequence[str],
    *,
    layout: str = "auto",
    sentences: str = "auto",
    errors: str = "strict",
  ):
    """Creates the source.

    Args:
      patterns: files, globs or directories.
      layout: "auto" (detect WikiText per file), "plain" or "wikitext".
      sentences: "auto" (split WikiText paragraphs only), "split" (split
        every line into sentences) or "lines" (keep lines whole).
      errors: UTF-8 policy, "strict" or "replace".
    """
    if layout not in ("auto", "plain", "wikitext"):
      raise ElectraError(f"layout must be auto, plain or wikitext, not {layout!r}")
    if sentences not in ("auto", "split", "lines"):
      raise ElectraError(f"sentences must be auto, split or lines, not {sentences!r}")
    self.files = expand_paths(patterns)
    self.layout = layout
    self.sentences = sentences
    self.errors = errors

  def describe(self) -> dict:
    return {
      "type": "text",
      "files": self.files,
      "layout": self.layout,
      "sentences": self.sentences,
      "errors": self.errors,
    }

  def __iter__(self) -> Iterator[list[str]]:
    for path in self.files:
      wikitext = self.layout == "wikitext" or (
        self.layout == "auto" and _is_wikitext(path, self.errors)
      )
      split = self.sentences == "split" or (self.sentences == "auto" and wikitext)
      lines = (line for _, line in iter_file_lines([path], self.errors))
      docs = _wikitext_documents(lines) if wikitext else _plain_documents(lines)
      for doc in docs:
        if split:
          doc = [s for line in doc for s in split_sentences(line)]
        if doc:
          yield doc


def _plain_documents(lines) -> Iterator[list[str]]:
  doc = []
  for line in lines:
    line = line.strip()
    if line:
      doc.append(line)
    elif doc:
      yield doc
      doc = []
  if doc:
    yield doc


def _wikitext_documents(lines) -> Iterator[list[str]]:
  doc = []
  for line in lines:
    if _WIKITEXT_TITLE.match(line):
      if doc:
        yield doc
      doc = []
    elif _WIKITEXT_HEADING.match(line):
      continue
    else:
      text = _wikitext_paragraph(line)
      if text:
        doc.append(text)
  if doc:
    yield doc


class TfdsSource:
  """Documents from a prepared tfds dataset, read with `tfds.data_source`.

  The dataset must have been prepared in the array_record file format
  (`tfds build --file_format=array_record` or
  `builder.download_and_prepare(file_format="array_record")`); reading needs
  no TensorFlow.
  """

  def __init__(
    self,
    name: str,
    split: str = "train",
    *,
    data_dir: str | None = None,
    text_key: str = "text",
    sentences: str = "split",
  ):
    """Creates the source.

    Args:
      name: tfds name, e.g. "wikipedia/20230601.en" or "c4/en".
      split: split, slicing allowed ("train[:1%]").
      data_dir: tfds data directory (default: tfds's own default).
      text_key: the feature holding the document text.
      sentences: "split" (default) splits lines into sentences, "lines"
        keeps each line whole.
    """
    self.name = name
    self.split = split
    self.data_dir = data_dir
    self.text_key = text_key
    self.sentences = sentences

  @classmethod
  def from_spec(cls, spec: str, data_dir: str | None = None, **kwargs) -> TfdsSource:
    """Parses "tfds:NAME[:SPLIT]" (e.g. "tfds:wikipedia/20230601.en:train")."""
    body = spec[len("tfds:") :] if spec.startswith("tfds:") else spec
    name, _, split = body.partition(":")
    if not name:
      raise ElectraError(f"bad tfds input {spec!r}: use tfds:NAME[:SPLIT]")
    return cls(name, split or "train", data_dir=data_dir, **kwargs)

  def describe(self) -> dict:
    return {"type": "tfds", "name": self.name, "split": self.split, "data_dir": self.data_dir}

  def _open(self):
    import tensorflow_datasets as tfds

    try:
      return tfds.data_source(self.name, split=self.split, data_dir=self.data_dir, try_gcs=False)
    except Exception as e:  # tfds raises many types (DatasetNotFoundError, ...)
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise ElectraError(
        f"cannot open tfds dataset {self.name}:{self.split} (data_dir={self.data_dir}): {first} "
        "-- prepare it first with file_format=array_record"
      ) from None

  def __iter__(self) -> Iterator[list[str]]:
    source = self._open()
    for start in range(0, len(source), _TFDS_READ_BATCH):
      keys = list(range(start, min(start + _TFDS_READ_BATCH, len(source))))
      yield from self._documents(source.__getitems__(keys))

  def _documents(self, records) -> Iterator[list[str]]:
    for record in records:
      if self.text_key not in record:
        raise ElectraError(
          f"tfds dataset {self.name} has no feature {self.text_key!r} "
          f"(features: {', '.join(sorted(record))}); pass the right text key"
        )
      text = record[self.text_key]
      if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
      doc = [line.strip() for line in str(text).split("\n") if line.strip()]
      if self.sentences == "split":
        doc = [s for line in doc for s in split_sentences(line)]
      if doc:
        yield doc


def make_sources(inputs: Sequence[str], *, tfds_data_dir: str | None = None, **text_kwargs) -> list:
  """Turns CLI input specs into sources.

  Args:
    inputs: local paths/globs/directories, or "tfds:NAME[:SPLIT]" specs.
    tfds_data_dir: data_dir for the tfds specs.
    **text_kwargs: `LocalTextSource` options (layout, sentences, errors).

  Returns:
    a list of sources (local specs in a row are grouped into one source).
  """
  if not inputs:
    raise ElectraError("no input given: pass text files, globs or tfds:NAME[:SPLIT]")
  result, local = [], []
  for spec in inputs:
    if str(spec).startswith("tfds:"):
      if local:
        result.append(LocalTextSource(local, **text_kwargs))
        local = []
      result.append(TfdsSource.from_spec(spec, data_dir=tfds_data_dir))
    else:
      local.append(spec)
  if local:
    result.append(LocalTextSource(local, **text_kwargs))
  return result
