"""Tests for the `electra-jax predict` and `export` commands: help text and one-line errors."""

import pytest
from tiny_classifier import read_jsonl

from electra_jax import cli


def test_cli_help_and_one_line_errors(classifier, tmp_path, capsys):
  for command in ("predict", "export"):
    with pytest.raises(SystemExit) as e:
      cli.main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--model" in text and "examples:" in text
  src = tmp_path / "in.jsonl"
  src.write_text('{"text": "ok", "label": "weird"}\n{oops\n', encoding="utf-8")
  out = tmp_path / "out.jsonl"
  code = cli.main(
    ["predict", "--model", classifier, "--input", str(src), "--output", str(out)]
    + ["--on-error", "stop", "--quiet"]
  )
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and "row 1 (line 2)" in err[0]
  assert not out.exists()
  code = cli.main(["predict", "--model", classifier, "--input", str(src), "--output", str(out)])
  rows = read_jsonl(out)
  # Without --eval the label column is not read: an unknown label is no error.
  assert code == 0 and [r["index"] for r in rows] == [0] and "label_error" not in rows[0]
  # The column the model was trained on ("review", stored by finetune) is the default.
  src = tmp_path / "reviews.csv"
  src.write_text("id,review\n1,great\n", encoding="utf-8")
  assert (
    cli.main(["predict", "--model", classifier, "--input", str(src), "--output", str(out)]) == 0
  )
  assert "label" in read_jsonl(out)[0]
