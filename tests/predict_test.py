"""Tests for `predict`: batch prediction from files, label maps, workdir resolution.

The `classifier` and `regressor` fixtures (conftest.py) are tiny random
models saved with `save_pretrained`; predictions are checked against
`tiny_classifier.reference_logits`, a direct, unpadded `model.apply` on each
example, so bucketing, batch padding, sorting and re-ordering are all covered.
"""

import json
import os

import jax
import numpy as np
import pytest
from tiny_classifier import (
  LABELS,
  LONG,
  MAX_LEN,
  REPO,
  VOCAB_DIR,
  read_jsonl,
  reference_logits,
  save_tiny,
  softmax,
)

from electra_jax import export, predict
from electra_jax.errors import ElectraError
from electra_jax.model import build_model, init_params
from electra_jax.pretrained import save_pretrained


def test_predict_jsonl_malformed_empty_unknown_label_keeps_order(classifier, tmp_path):
  lines = [
    json.dumps({"text": "a gripping , funny film", "label": "pos"}),
    '{"text": "broken json',  # malformed
    "",  # empty line
    json.dumps({"text": "dull and slow", "label": "neg"}),
    json.dumps({"sentence": "no text field", "label": "neg"}),  # malformed
    json.dumps({"text": "fine", "label": "meh"}),  # unknown label
    json.dumps({"text": LONG, "label": "pos"}),
    json.dumps({"text": "   ", "label": "pos"}),  # whitespace only: empty
  ] + [json.dumps({"text": f"movie number {i} was ok", "label": "neu"}) for i in range(9)]
  src = tmp_path / "in.jsonl"
  src.write_text("\n".join(lines) + "\n", encoding="utf-8")
  out = tmp_path / "out.jsonl"
  log = open(tmp_path / "log.txt", "w+")
  summary = predict.predict_file(
    classifier, src, out, batch_size=4, evaluate=True, progress=False, log=log
  )
  rows = read_jsonl(out)
  assert [r["index"] for r in rows] == [0, 2, 3, 5, 6, 7] + list(range(8, 17))
  by_index = {r["index"]: r for r in rows}
  assert by_index[2] == {"index": 2, "error": "empty input"}
  assert by_index[7] == {"index": 7, "error": "empty input"}
  assert by_index[6]["truncated"] is True
  assert not any(r.get("truncated") for i, r in by_index.items() if i != 6)
  assert "unknown label 'meh'" in by_index[5]["label_error"] and "gold" not in by_index[5]
  assert by_index[0]["gold"] == "pos"
  assert [(m["row"], m["line"]) for m in summary["malformed"]] == [(1, 2), (4, 5)]
  assert "bad JSON" in summary["malformed"][0]["error"]
  assert "'text'" in summary["malformed"][1]["error"]
  assert [e["row"] for e in summary["label_errors"]] == [5]
  assert (summary["predicted"], summary["empty"], summary["truncated"]) == (13, 2, 1)
  log.seek(0)
  report = log.read()
  assert "row 1 (line 2)" in report and "row 5 (line 6)" in report

  # Probabilities equal a direct forward pass of each example.
  predicted = [i for i in by_index if "error" not in by_index[i]]
  texts = {0: "a gripping , funny film", 3: "dull and slow", 5: "fine", 6: LONG}
  texts.update({i: f"movie number {i - 8} was ok" for i in range(8, 17)})
  ref = softmax(reference_logits(classifier, [texts[i] for i in predicted]))
  got = np.array([[by_index[i]["probabilities"][k] for k in LABELS] for i in predicted])
  np.testing.assert_allclose(got, ref, atol=1e-5)
  assert [by_index[i]["label"] for i in predicted] == [LABELS[j] for j in ref.argmax(1)]
  # Accuracy over rows with known labels, recomputed from the output.
  scored = [r for r in rows if "gold" in r]
  assert summary["metrics"]["n"] == len(scored) == 12
  from sklearn import metrics as sk

  gold, pred = [r["gold"] for r in scored], [r["label"] for r in scored]
  assert summary["metrics"]["accuracy"] == pytest.approx(sk.accuracy_score(gold, pred))
  assert summary["metrics"]["macro_f1"] == pytest.approx(
    sk.f1_score(gold, pred, average="macro", labels=sorted(set(gold) | set(pred)))
  )


def test_glue_model_defaults_columns_and_scores_with_official_metrics(tmp_path, tiny_config):
  from sklearn import metrics as sk

  # A CoLA model: label names and the `sentence` column come from the task, MCC from its metrics.
  path = save_tiny(tmp_path / "cola", tiny_config, 2, {"task": "cola", "max_seq_length": MAX_LEN})
  src = tmp_path / "dev.tsv"
  lines = (VOCAB_DIR / "sst2_dev_sample.tsv").read_text(encoding="utf-8").splitlines()[:41]
  src.write_text("\n".join(lines) + "\n", encoding="utf-8")
  out = tmp_path / "out.jsonl"
  summary = predict.predict_file(
    path, src, out, batch_size=8, evaluate=True, progress=False, log=open(os.devnull, "w")
  )
  rows = read_jsonl(out)
  assert len(rows) == 40 and set(rows[0]["probabilities"]) == {"0", "1"}
  gold = [r["gold"] for r in rows]
  pred = [r["label"] for r in rows]
  assert gold == [line.split("\t")[1] for line in lines[1:]]
  m = summary["metrics"]
  assert set(m) == {"n", "mcc", "accuracy"}
  assert m["mcc"] == pytest.approx(sk.matthews_corrcoef(gold, pred), abs=1e-9)
  assert m["accuracy"] == pytest.approx(sk.accuracy_score(gold, pred), abs=1e-12)


@pytest.mark.parametrize(
  "extra,file,expected",
  [
    ({"label_map": ["b", "a"]}, None, ["b", "a"]),
    ({"label_map": {"labels": ["x", "y"], "regression": False}}, None, ["x", "y"]),
    ({"id2label": {"1": "POS", "0": "NEG"}}, None, ["NEG", "POS"]),
    ({}, {"labels": ["p", "q"], "regression": False}, ["p", "q"]),
    ({"task": "rte"}, None, ["entailment", "not_entailment"]),
    ({"task": "custom"}, None, None),
  ],
)
def test_label_map_sources(tmp_path, extra, file, expected):
  if file is not None:
    (tmp_path / "label_map.json").write_text(json.dumps(file))
  assert predict._label_map(str(tmp_path), extra, 2) == expected


def test_on_error_stop_raises_one_line_and_writes_nothing(classifier, tmp_path):
  src = tmp_path / "in.tsv"
  src.write_text("text\tlabel\ngood film\tpos\ntoo\tmany\tfields\n", encoding="utf-8")
  out = tmp_path / "out.jsonl"
  with pytest.raises(ElectraError, match=r"row 1 \(line 3\).*expected 2 fields, got 3"):
    predict.predict_file(classifier, src, out, on_error="stop", progress=False)
  assert not out.exists()
  assert os.listdir(tmp_path) == ["in.tsv"]  # no temp file left behind
  with pytest.raises(ElectraError, match="is a directory"):
    predict.predict_file(classifier, src, tmp_path, progress=False)
  with pytest.raises(ElectraError, match="does not exist"):
    predict.predict_file(classifier, src, tmp_path / "no" / "out.jsonl", progress=False)
  with pytest.raises(ElectraError, match="cannot tell the format"):
    predict.predict_file(classifier, tmp_path / "in.xml", out, progress=False)


def test_pairs_and_single_rows_in_one_file(classifier, tmp_path):
  src = tmp_path / "in.txt"
  src.write_text("the cat sat\ton the mat\nno pair here\n", encoding="utf-8")
  out = tmp_path / "out.jsonl"
  predict.predict_file(classifier, src, out, progress=False, log=open(os.devnull, "w"))
  rows = read_jsonl(out)
  ref = np.concatenate(
    [
      reference_logits(classifier, ["the cat sat"], ["on the mat"]),
      reference_logits(classifier, ["no pair here"]),
    ]
  )
  got = np.array([[r["probabilities"][k] for k in LABELS] for r in rows])
  np.testing.assert_allclose(got, softmax(ref), atol=1e-5)


def test_regression_scores_and_eval(regressor, tmp_path):
  from scipy import stats

  texts = ["a man is playing", "a woman sings", "the dog runs", "kids play", "rain falls"]
  gold = ["4.0", "1.5", "x", "2.25", "0.5"]
  src = tmp_path / "in.csv"
  src.write_text(
    "text,label\n" + "".join(f"{t},{g}\n" for t, g in zip(texts, gold)), encoding="utf-8"
  )
  out = tmp_path / "out.jsonl"
  summary = predict.predict_file(
    regressor, src, out, evaluate=True, progress=False, log=open(os.devnull, "w")
  )
  rows = read_jsonl(out)
  assert all(set(r) >= {"index", "score"} and "probabilities" not in r for r in rows)
  ref = reference_logits(regressor, texts)[:, 0]
  np.testing.assert_allclose([r["score"] for r in rows], ref, atol=1e-5)
  assert "not a number" in rows[2]["label_error"]
  keep = [0, 1, 3, 4]
  g = [float(gold[i]) for i in keep]
  p = [rows[i]["score"] for i in keep]
  assert summary["metrics"]["pearson"] == pytest.approx(stats.pearsonr(g, p)[0], abs=1e-9)
  assert summary["metrics"]["spearman"] == pytest.approx(stats.spearmanr(g, p)[0], abs=1e-9)


def test_workdir_resolution(tmp_path):
  def ckpt(*parts):
    d = tmp_path.joinpath(*parts)
    d.mkdir(parents=True)
    (d / "electra_jax.json").write_text("{}")
    return str(d)

  last = ckpt("single", "last")
  best = ckpt("single", "best")
  # The final model (what results.json reports), unless best/ is asked for.
  assert predict.resolve_model_dir(tmp_path / "single") == last
  assert predict.resolve_model_dir(tmp_path / "single", "best") == best
  assert predict.resolve_model_dir(best) == best
  last_only = ckpt("lastonly", "last")
  assert predict.resolve_model_dir(tmp_path / "lastonly") == last_only
  assert predict.resolve_model_dir(tmp_path / "lastonly", "best") == last_only
  seed0 = ckpt("seeds", "seed_0", "best")
  ckpt("seeds", "seed_10", "best")
  seed2 = ckpt("seeds", "seed_2", "best")
  assert predict.resolve_model_dir(tmp_path / "seeds") == seed0
  (tmp_path / "seeds" / "results.json").write_text(json.dumps({"best_seed": 2}))
  assert predict.resolve_model_dir(tmp_path / "seeds") == seed2
  (tmp_path / "empty").mkdir()
  with pytest.raises(ElectraError, match="neither a model directory"):
    predict.resolve_model_dir(tmp_path / "empty")


def test_workdir_predict_and_non_classifier_error(classifier, tmp_path, tiny_config):
  import shutil

  shutil.copytree(classifier, tmp_path / "run" / "best")
  src = tmp_path / "in.txt"
  src.write_text("good\n", encoding="utf-8")
  summary = predict.predict_file(
    tmp_path / "run", src, tmp_path / "o.jsonl", progress=False, log=open(os.devnull, "w")
  )
  assert summary["predicted"] == 1
  params = init_params(build_model(tiny_config, None), jax.random.key(0))
  enc = save_pretrained(tmp_path / "encoder", tiny_config, params, head=None)
  with pytest.raises(ElectraError, match="sequence_classification"):
    export.export_model(enc, tmp_path / "x")


def test_hf_classifier_directory_predicts_like_its_checkpoint(classifier, tmp_path):
  from electra_jax import pretrained

  hf_dir = pretrained.convert_to_hf(classifier, tmp_path / "hf")
  texts = ["good film", "a dull , long movie"]
  from_hf = predict.load_predictor(hf_dir).predict(texts)
  live = predict.load_predictor(classifier).predict(texts)
  for a, b in zip(from_hf, live):
    # HF's config.json names the classes by the checkpoint's label map (id2label), not LABEL_i.
    assert a["label"] == b["label"] and list(a["probabilities"]) == list(b["probabilities"])
    np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()))
  hf_config = json.load(open(os.path.join(hf_dir, "config.json")))
  assert list(hf_config["id2label"].values()) == list(live[0]["probabilities"])
  assert hf_config["label2id"] == {v: int(k) for k, v in hf_config["id2label"].items()}
  with pytest.raises(ElectraError, match="max sequence length 100 is not usable"):
    predict.load_predictor(hf_dir, max_seq_length=100)


@pytest.mark.slow  # ~30 s of CPU (two fine-tuning seeds), ~60 s on a busy 2-core machine
def test_finetune_workdir_predict_and_export_match_finetune_dev_metrics(tmp_path):
  """End to end: `predict --model WORKDIR` takes the best seed's final model (last/) and reproduces its dev scores."""
  import importlib.util

  from electra_jax import run_finetuning

  spec = importlib.util.spec_from_file_location(
    "glue_config", REPO / "experiments" / "configs" / "glue.py"
  )
  glue_config = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(glue_config)
  dev = tmp_path / "dev.tsv"
  lines = (VOCAB_DIR / "sst2_dev_sample.tsv").read_text(encoding="utf-8").splitlines()
  dev.write_text("\n".join(lines[:61]) + "\n", encoding="utf-8")
  cfg = glue_config.get_config("task=custom,size=tiny")
  cfg.train_file = str(VOCAB_DIR / "sst2_train_sample.tsv")
  cfg.dev_file = str(dev)
  cfg.text_column = "sentence"
  cfg.epochs, cfg.seeds, cfg.batch_size = 1, 2, 16
  cfg.max_seq_length, cfg.max_train_examples = 32, 32
  workdir = tmp_path / "run"
  summary = run_finetuning.run(cfg, str(workdir), progress=False)
  best = summary["best_seed"]
  assert predict.resolve_model_dir(workdir) == str(workdir / f"seed_{best}" / "last")
  seeds = sorted(int(d.name[5:]) for d in workdir.glob("seed_*"))
  expected = {
    name: summary["metrics"][name]["values"][seeds.index(best)] for name in ("accuracy", "macro_f1")
  }
  quiet = open(os.devnull, "w")
  # No --text-column: the `sentence` column is the one finetune stored with the model.
  got = predict.predict_file(
    workdir, dev, tmp_path / "p.jsonl", evaluate=True, progress=False, log=quiet
  )
  exported = export.export_model(workdir, tmp_path / "exported")
  got_export = predict.predict_file(
    exported, dev, tmp_path / "q.jsonl", evaluate=True, progress=False, log=quiet
  )
  for metrics in (got["metrics"], got_export["metrics"]):
    assert metrics["n"] == 60
    for name, value in expected.items():
      assert metrics[name] == pytest.approx(value, abs=1e-9), name
