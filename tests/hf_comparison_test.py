"""Smoke test of experiments/hf_comparison/finetune_vs_hf.py on a tiny random HF checkpoint."""

import importlib.util
import json
import pathlib
import shutil

import pytest
from hf_reference import require_hf

REPO = pathlib.Path(__file__).resolve().parent.parent
SAMPLE = REPO / "electra_jax" / "sample_data"


@pytest.mark.slow  # two fine-tunes (electra-jax and PyTorch), ~40 s
def test_script_fine_tunes_both_sides_and_writes_the_report(tmp_path):
  _, transformers = require_hf()
  config = transformers.ElectraConfig(
    vocab_size=30522,
    embedding_size=16,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
  )
  model_dir = tmp_path / "hf"
  transformers.ElectraForPreTraining(config).save_pretrained(model_dir)
  shutil.copy(SAMPLE / "vocab.txt", model_dir / "vocab.txt")
  train = tmp_path / "train.tsv"
  train.write_text(
    "\n".join((SAMPLE / "sst2_train_sample.tsv").read_text().splitlines()[:65]) + "\n"
  )
  dev = tmp_path / "dev.tsv"
  dev.write_text("\n".join((SAMPLE / "sst2_dev_sample.tsv").read_text().splitlines()[:41]) + "\n")
  spec = importlib.util.spec_from_file_location(
    "finetune_vs_hf", REPO / "experiments" / "hf_comparison" / "finetune_vs_hf.py"
  )
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  args = ["--model", str(model_dir), "--workdir", str(tmp_path / "w"), "--train", str(train)]
  args += ["--dev", str(dev), "--seeds", "2", "--epochs", "1", "--max-seq-length", "16"]
  args += ["--batch-size", "16"]
  assert script.main(args) == 0
  report = json.load(open(tmp_path / "w" / "report.json"))
  for side in ("electra_jax", "hf_pytorch"):
    assert len(report[side]["values"]) == 2
    assert all(0.0 <= v <= 1.0 for v in report[side]["values"])
  assert report["median_difference"] == pytest.approx(
    report["electra_jax"]["median"] - report["hf_pytorch"]["median"]
  )
