"""Tests for electra_jax.tasks.metrics: numpy metrics vs sklearn/scipy, GLUE scores, submissions."""

import csv
import os

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from electra_jax.errors import ElectraError
from electra_jax.tasks import glue, metrics


def _random_classes(seed, n, k):
  rng = np.random.default_rng(seed)
  return rng.integers(0, k, n), rng.integers(0, k, n)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_classification_metrics_match_sklearn(seed, k):
  preds, labels = _random_classes(seed, 200 + 37 * seed, k)
  # Make predictions correlate with labels so values are not all near 0.
  preds = np.where(np.random.default_rng(seed + 100).random(len(preds)) < 0.6, labels, preds)
  assert metrics.accuracy(preds, labels) == pytest.approx(skm.accuracy_score(labels, preds))
  assert metrics.matthews_corrcoef(preds, labels) == pytest.approx(
    skm.matthews_corrcoef(labels, preds), abs=1e-12
  )
  # Class 1 against the rest (the binary score for k == 2).
  assert metrics.f1(preds, labels) == pytest.approx(skm.f1_score(labels == 1, preds == 1))
  assert metrics.macro_f1(preds, labels) == pytest.approx(
    skm.f1_score(labels, preds, average="macro")
  )


@pytest.mark.parametrize(
  "preds,labels",
  [
    ([1, 1, 1, 1], [0, 1, 0, 1]),  # constant predictions
    ([0, 1, 0, 1], [1, 1, 1, 1]),  # constant labels
    ([0, 0, 0], [0, 0, 0]),  # all one class
    ([1, 0, 1, 0], [1, 0, 1, 0]),  # perfect
    ([0, 1, 0, 1], [1, 0, 1, 0]),  # perfectly wrong
    ([2, 2, 0, 1, 1], [0, 2, 0, 1, 2]),
  ],
)
def test_mcc_and_f1_edge_cases_match_sklearn(preds, labels):
  assert metrics.matthews_corrcoef(preds, labels) == pytest.approx(
    skm.matthews_corrcoef(labels, preds), abs=1e-12
  )
  if max(preds + labels) <= 1:
    assert metrics.f1(preds, labels) == pytest.approx(
      skm.f1_score(labels, preds, zero_division=0.0)
    )


def test_constant_predictions_give_mcc_zero():
  assert metrics.matthews_corrcoef([1] * 10, [0, 1] * 5) == 0.0
  assert metrics.compute_metrics("cola", np.zeros(6, int), [0, 1, 1, 0, 1, 0])["mcc"] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy(seed):
  rng = np.random.default_rng(seed)
  labels = rng.uniform(0, 5, 300)
  preds = labels + rng.normal(0, 1.5, 300)
  assert metrics.pearson(preds, labels) == pytest.approx(stats.pearsonr(preds, labels)[0])
  assert metrics.spearman(preds, labels) == pytest.approx(stats.spearmanr(preds, labels)[0])
  # Heavy ties (STS-B labels are on a 0.2 grid).
  tied_labels = np.round(labels * 5) / 5
  tied_preds = np.round(preds)
  assert metrics.spearman(tied_preds, tied_labels) == pytest.approx(
    stats.spearmanr(tied_preds, tied_labels)[0]
  )
  assert metrics.mse(preds, labels) == pytest.approx(skm.mean_squared_error(labels, preds))


def test_correlation_with_constant_input_is_zero():
  assert metrics.pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
  assert metrics.spearman([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) == 0.0
  assert metrics.pearson([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == 1.0


def test_compute_metrics_per_task():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 100)
  logits = rng.normal(size=(100, 2))
  preds = logits.argmax(-1)
  m = metrics.compute_metrics("MRPC", logits, labels)
  assert set(m) == {"accuracy", "f1"}
  assert m["f1"] == pytest.approx(skm.f1_score(labels, preds))
  assert set(metrics.compute_metrics("cola", preds, labels)) == {"mcc", "accuracy"}
  assert set(metrics.compute_metrics("sst-2", preds, labels)) == {"accuracy"}
  scores = rng.uniform(0, 5, 50)
  m = metrics.compute_metrics("sts-b", scores[:, None] + 1, scores)
  assert m == {"pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0)}
  m3 = metrics.compute_metrics("mnli", rng.normal(size=(30, 3)), rng.integers(0, 3, 30))
  assert set(m3) == {"accuracy"}


def test_compute_metrics_bad_input():
  with pytest.raises(ElectraError, match="unknown task 'glu'"):
    metrics.compute_metrics("glu", [0], [0])
  with pytest.raises(ElectraError, match="3 predictions for 2 labels"):
    metrics.compute_metrics("sst2", [0, 1, 1], [0, 1])
  with pytest.raises(ElectraError, match="class ids"):
    metrics.compute_metrics("sst2", [0, 1], [0, 2])
  with pytest.raises(ElectraError, match="3 scores per example"):
    metrics.compute_metrics("sst2", np.zeros((2, 3)), [0, 1])
  with pytest.raises(ElectraError, match="empty"):
    metrics.compute_metrics("sst2", [], [])


def _full_results(value):
  out = {}
  for name in ("cola", "sst2", "mrpc", "stsb", "qqp", "qnli", "rte", "wnli"):
    out[name] = {m: value for m in glue.get_task(name).metric_names}
  out["mnli-m"] = {"accuracy": value}
  out["mnli-mm"] = {"accuracy": value}
  return out


def test_glue_score_hand_worked():
  # BERT-large's GLUE leaderboard row (Devlin et al. 2019, test set): the
  # leaderboard score 80.5 is the mean over 9 tasks of the per-task means,
  # with MNLI = (m + mm) / 2.
  results = {
    "CoLA": {"mcc": 60.5},
    "SST-2": {"accuracy": 94.9},
    "MRPC": {"f1": 89.3, "accuracy": 85.4},
    "STS-B": {"pearson": 87.6, "spearman": 86.5},
    "QQP": {"f1": 72.1, "accuracy": 89.3},
    "mnli-m": {"accuracy": 86.7},
    "mnli-mm": {"accuracy": 85.9},
    "QNLI": {"accuracy": 92.7},
    "RTE": {"accuracy": 70.1},
    "WNLI": {"accuracy": 65.1},
    "ax": {"mcc": 39.6},
  }
  score = metrics.glue_score(results)
  expected_board = (60.5 + 94.9 + 87.35 + 87.05 + 80.7 + 86.3 + 92.7 + 70.1 + 65.1) / 9
  assert score["leaderboard"] == pytest.approx(expected_board)
  assert round(score["leaderboard"], 1) == 80.5
  # Paper score: CoLA MCC, STS-B Spearman, accuracy elsewhere, MNLI-m, no WNLI.
  expected_paper = (60.5 + 94.9 + 85.4 + 86.5 + 89.3 + 86.7 + 92.7 + 70.1) / 8
  assert score["paper"] == pytest.approx(expected_paper)
  assert score["missing"] == []
  assert "wnli" not in score["paper_tasks"] and "ax" not in score["leaderboard_tasks"]


def test_glue_score_partial_and_aliases():
  results = _full_results(0.5)
  results["mnli"] = results.pop("mnli-m")
  results["rte"] = {"accuracy": 0.9}
  score = metrics.glue_score(results)
  assert score["paper"] == pytest.approx((0.5 * 7 + 0.9) / 8)
  del results["wnli"], results["mnli-mm"]
  score = metrics.glue_score(results)
  assert score["missing"] == ["mnli-mm", "wnli"]
  assert score["leaderboard_tasks"]["mnli"] == 0.5
  with pytest.raises(ElectraError, match="lack metric 'f1'"):
    metrics.glue_score({"mrpc": {"accuracy": 1.0}})


def test_result_keys_feed_glue_score():
  task = glue.get_task("mnli")
  assert [task.result_key(s) for s in task.dev_splits] == ["mnli-m", "mnli-mm"]
  assert glue.get_task("rte").result_key("dev") == "rte"


def _read_tsv(path):
  with open(path, newline="") as f:
    return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_write_glue_submission(tmp_path):
  p = metrics.write_glue_submission("mnli", [0, 1, 2, 1], tmp_path, split="test_mismatched")
  assert os.path.basename(p) == "MNLI-mm.tsv"
  assert _read_tsv(p) == [
    ["index", "prediction"],
    ["0", "contradiction"],
    ["1", "entailment"],
    ["2", "neutral"],
    ["3", "entailment"],
  ]
  p = metrics.write_glue_submission("mnli", np.eye(3)[[1, 1]], tmp_path, split="test")
  assert os.path.basename(p) == "MNLI-m.tsv"
  assert [r[1] for r in _read_tsv(p)[1:]] == ["entailment", "entailment"]
  p = metrics.write_glue_submission("sts-b", np.array([[0.5], [4.25]]), tmp_path)
  rows = _read_tsv(p)
  assert os.path.basename(p) == "STS-B.tsv" and [float(r[1]) for r in rows[1:]] == [0.5, 4.25]
  p = metrics.write_glue_submission("cola", ["1", "0"], tmp_path, ids=[7, 9])
  assert _read_tsv(p)[1:] == [["7", "1"], ["9", "0"]]
  p = metrics.write_glue_submission("ax", [2], tmp_path)
  assert os.path.basename(p) == "AX.tsv" and _read_tsv(p)[1] == ["0", "neutral"]
  names = {metrics.submission_file_name(t) for t in ("sst2", "qqp", "qnli", "rte", "wnli")}
  assert names == {"SST-2.tsv", "QQP.tsv", "QNLI.tsv", "RTE.tsv", "WNLI.tsv"}
  assert sorted(os.listdir(tmp_path)) == [
    "AX.tsv",
    "CoLA.tsv",
    "MNLI-m.tsv",
    "MNLI-mm.tsv",
    "STS-B.tsv",
  ]


def test_write_glue_submission_bad_input_leaves_nothing(tmp_path):
  with pytest.raises(ElectraError, match="not a class id"):
    metrics.write_glue_submission("rte", [0, 5], tmp_path)
  with pytest.raises(ElectraError, match="not one of"):
    metrics.write_glue_submission("rte", ["yes"], tmp_path)
  with pytest.raises(ElectraError, match="no GLUE submission file"):
    metrics.write_glue_submission("rte", [0], tmp_path, split="dev")
  with pytest.raises(ElectraError, match="2 ids for 1 predictions"):
    metrics.write_glue_submission("rte", [0], tmp_path, ids=[1, 2])
  assert os.listdir(tmp_path) == []
