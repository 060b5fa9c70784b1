"""Tests for `predict_inputs`: the .txt, .tsv, .csv and .jsonl readers of `electra-jax predict`."""

import pytest

from electra_jax import predict_inputs
from electra_jax.errors import ElectraError


def test_readers_tsv_csv_txt(tmp_path):
  tsv = tmp_path / "a.tsv"
  # A field starting with a quote (GLUE style), a byte-order mark, a bad row, an empty line.
  tsv.write_bytes('\ufefftext\ttext_pair\tlabel\n"quoted start\tsecond\t1\nbad\n\n'.encode())
  rows = predict_inputs.read_input(tsv, need_labels=True)
  assert rows[0][2:5] == ('"quoted start', "second", "1")
  assert rows[1].error == "expected 3 fields, got 1"
  assert (rows[2].text, rows[2].error) == ("", None)
  csv_file = tmp_path / "b.csv"
  csv_file.write_text('id,body\n1,"commas, inside"\n2,"multi\nline"\n3,x\n', encoding="utf-8")
  rows = predict_inputs.read_input(csv_file, predict_inputs.Columns(text="body"))
  assert [(r.index, r.line, r.text) for r in rows] == [
    (0, 2, "commas, inside"),
    (1, 3, "multi\nline"),
    (2, 5, "x"),
  ]
  with pytest.raises(ElectraError, match="no column 'text'.*--text-column"):
    predict_inputs.read_input(csv_file)
  txt = tmp_path / "c.txt"
  txt.write_bytes(b"one\ttwo\tthree\nplain\n\xff\xfe bad bytes\n")
  rows = predict_inputs.read_input(txt)
  assert [(r.text, r.pair, r.error) for r in rows] == [
    ("one", "two\tthree", None),
    ("plain", None, None),
    ("", None, "not valid UTF-8"),
  ]
  with pytest.raises(ElectraError, match="no labels"):
    predict_inputs.read_input(txt, need_labels=True)
