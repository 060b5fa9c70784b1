"""Tests for electra_jax.tasks.custom: CSV/TSV/JSONL readers, label maps, policies, class weights."""

import json
import logging

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from electra_jax.errors import ElectraError
from electra_jax.tasks import custom, metrics
from electra_jax.tasks.glue import Example


def _write(path, text):
  path.write_text(text, encoding="utf-8")
  return path


@pytest.fixture
def files(tmp_path):
  train = _write(
    tmp_path / "train.csv",
    '\ufeffreview,stars,other\n"great, really",5,x\nmeh,2,y\n\n"he said ""no""",10,z\nok,2,w\n',
  )
  dev = _write(tmp_path / "dev.tsv", "review\tstars\nfine\t5\nbad\t3\n")
  test = _write(
    tmp_path / "test.jsonl",
    json.dumps({"review": "what", "id": 1}) + "\n\n" + json.dumps({"review": "now"}) + "\n",
  )
  return tmp_path, train, dev, test


def test_csv_quoting_bom_and_numeric_label_order(files):
  _, train, _, _ = files
  cfg = custom.CustomDataConfig(text_column="review", label_column="stars")
  examples = custom.read_examples(train, cfg)
  assert examples == [
    Example("train-2", "great, really", None, "5"),
    Example("train-3", "meh", None, "2"),
    Example("train-5", 'he said "no"', None, "10"),
    Example("train-6", "ok", None, "2"),
  ]
  label_map = custom.build_label_map(examples)
  assert label_map.labels == ("2", "5", "10")  # numeric, not "10" < "2"
  # Stable: the same set in another order gives the same map.
  assert custom.build_label_map(examples[::-1]) == label_map
  assert custom.build_label_map(
    [Example("a", "t", None, x) for x in ["pos", "neg", "neutral", "neg"]]
  ).labels == ("neg", "neutral", "pos")


def test_unknown_label_policies(files, caplog):
  tmp, train, dev, _ = files
  cfg = custom.CustomDataConfig(text_column="review", label_column="stars")
  with pytest.raises(ElectraError, match=r"dev.tsv:3: label '3' is not among the training labels"):
    custom.load_custom_task(cfg, train, dev)
  skip = custom.CustomDataConfig(text_column="review", label_column="stars", unknown_label="skip")
  with caplog.at_level(logging.WARNING):
    task, label_map, splits = custom.load_custom_task(skip, train, dev)
  assert [e.label for e in splits["dev"]] == ["5"]
  assert "skipped 1 row(s) with labels unknown to training (lines 3)" in caplog.text
  assert task.num_labels == 3 and task.label_list == ("2", "5", "10")
  assert task.label_map == {"2": 0, "5": 1, "10": 2}
  m = metrics.compute_metrics(task, [0, 1, 2, 0], [0, 1, 2, 1])
  assert m["accuracy"] == 0.75 and set(m) == {"accuracy", "macro_f1", "mcc"}


def test_label_column_absent_names_columns(files):
  _, train, _, test = files
  cfg = custom.CustomDataConfig(text_column="review", label_column="label")
  with pytest.raises(ElectraError) as e:
    custom.read_examples(train, cfg)
  assert str(e.value) == (
    f"{train}: no label column 'label'; columns present: ['review', 'stars', 'other']"
    " (set label_column)"
  )
  assert "\n" not in str(e.value)
  with pytest.raises(ElectraError, match=r"no text column 'text'; columns present: \['review'"):
    custom.read_examples(train, custom.CustomDataConfig(label_column="stars"))
  # Unlabelled test data is fine with require_labels=False.
  examples = custom.read_examples(test, cfg, split="test", require_labels=False)
  assert [(e.guid, e.text_a, e.label) for e in examples] == [
    ("test-1", "what", None),
    ("test-3", "now", None),
  ]


def test_empty_text_policies(tmp_path, caplog):
  path = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in [
    {"text": "a", "text_pair": "b", "label": 1},
    {"text": "  ", "text_pair": "b", "label": 0},
    {"text": "c", "text_pair": None, "label": 0},
    {"text": "d", "text_pair": "e", "label": True},
  ]))  # fmt: skip
  cfg = custom.CustomDataConfig(text_pair_column="text_pair")
  with pytest.raises(ElectraError, match=r"d.jsonl:2: empty text in column\(s\) \['text'\]"):
    custom.read_examples(path, cfg)
  cfg = custom.CustomDataConfig(text_pair_column="text_pair", empty_text="skip")
  with caplog.at_level(logging.WARNING):
    examples = custom.read_examples(path, cfg)
  assert [(e.text_a, e.text_b, e.label) for e in examples] == [("a", "b", "1"), ("d", "e", "true")]
  assert "skipped 2 row(s) with empty text (lines 2, 3)" in caplog.text


def test_regression_and_malformed_rows(tmp_path):
  path = _write(tmp_path / "r.tsv", "text\tlabel\nx\t0.5\ny\t-2\n")
  cfg = custom.CustomDataConfig(regression=True)
  task, label_map, splits = custom.load_custom_task(cfg, path)
  assert [e.label for e in splits["train"]] == [0.5, -2.0]
  assert task.is_regression and task.num_labels == 1 and label_map.label_to_id is None
  assert set(metrics.compute_metrics(task, [0.1, 0.2], [0.5, -2.0])) == {
    "pearson",
    "spearman",
    "mse",
  }
  _write(path, "text\tlabel\nx\thigh\n")
  with pytest.raises(ElectraError, match=r"r.tsv:2: regression label 'high' is not a number"):
    custom.read_examples(path, cfg)
  _write(path, "text\tlabel\nx\t1\textra\n")
  with pytest.raises(ElectraError, match=r"r.tsv:2: expected 2 columns like the header, found 3"):
    custom.read_examples(path, cfg)
  _write(path, "text\tlabel\nx\t\n")
  with pytest.raises(ElectraError, match=r"r.tsv:2: empty 'label' value"):
    custom.read_examples(path, custom.CustomDataConfig())
  bad_json = _write(tmp_path / "b.jsonl", '{"text": "a", "label": 1}\n{oops\n')
  with pytest.raises(ElectraError, match=r"b.jsonl:2: not valid JSON"):
    custom.read_examples(bad_json, custom.CustomDataConfig())
  with pytest.raises(ElectraError, match="cannot tell the format"):
    custom.read_examples(_write(tmp_path / "x.parquet", ""), custom.CustomDataConfig())
  with pytest.raises(ElectraError, match="not found"):
    custom.read_examples(tmp_path / "missing.csv", custom.CustomDataConfig())
  one = _write(tmp_path / "one.csv", "text,label\na,x\nb,x\n")
  with pytest.raises(ElectraError, match="1 distinct label"):
    custom.load_custom_task(custom.CustomDataConfig(), one)
  with pytest.raises(ElectraError, match="unknown_label must be 'error' or 'skip'"):
    custom.CustomDataConfig(unknown_label="drop")


def test_label_map_round_trip(tmp_path):
  label_map = custom.LabelMap(("neg", "pos", "ünï"))
  path = label_map.save(tmp_path / "model" / "label_map.json")
  assert custom.LabelMap.load(path) == label_map
  assert json.loads(open(path, encoding="utf-8").read())["id2label"] == {
    "0": "neg", "1": "pos", "2": "ünï"
  }  # fmt: skip
  assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["label_map.json"]
  _write(tmp_path / "bad.json", '{"labels": [1, 2]}')
  with pytest.raises(ElectraError, match="is not a label map"):
    custom.LabelMap.load(tmp_path / "bad.json")
  with pytest.raises(ElectraError, match="not found"):
    custom.LabelMap.load(tmp_path / "nope.json")


def test_config_from_mapping():
  cfg = custom.CustomDataConfig.from_mapping(
    {"text_column": "q", "text_pair_column": "", "label_column": "y", "epochs": 3}
  )
  assert cfg.text_column == "q" and cfg.pair_column is None and cfg.label_column == "y"


@pytest.mark.parametrize("seed", range(4))
def test_balanced_class_weights_match_sklearn(seed):
  rng = np.random.default_rng(seed)
  label_list = ["a", "b", "c", "d"][: 2 + seed % 3]
  labels = list(rng.choice(label_list, size=50 + seed * 13, p=None))
  labels += label_list  # every class present
  ours = custom.class_weights("balanced", labels, label_list)
  ref = compute_class_weight("balanced", classes=np.array(label_list), y=np.array(labels))
  np.testing.assert_allclose(ours, ref, rtol=1e-6)
  assert ours.dtype == np.float32
  ids = [label_list.index(x) for x in labels]
  np.testing.assert_allclose(custom.class_weights("balanced", ids, label_list), ref, rtol=1e-6)
  # Without a label list the classes come from the labels (sorted).
  np.testing.assert_allclose(custom.class_weights("balanced", labels), ref, rtol=1e-6)
  np.testing.assert_allclose(custom.class_weights("balanced", ids), ref, rtol=1e-6)


def test_class_weight_specs():
  labels = ["neg", "pos", "pos"]
  np.testing.assert_array_equal(custom.class_weights(None, labels, ["neg", "pos"]), [1, 1])
  np.testing.assert_array_equal(custom.class_weights("", labels, ["neg", "pos"]), [1, 1])
  np.testing.assert_array_equal(custom.class_weights({"pos": 3}, labels, ["neg", "pos"]), [1, 3])
  np.testing.assert_array_equal(
    custom.class_weights('{"neg": 0.5}', labels, ["neg", "pos"]), [0.5, 1]
  )
  np.testing.assert_array_equal(custom.class_weights({1: 2.0}, [0, 1], ["0", "1"]), [1, 2])
  with pytest.raises(ElectraError, match=r"key 'maybe' is not a label"):
    custom.class_weights({"maybe": 1}, labels, ["neg", "pos"])
  with pytest.raises(ElectraError, match="must be a positive number"):
    custom.class_weights({"pos": -1}, labels, ["neg", "pos"])
  with pytest.raises(ElectraError, match=r"no training examples of label\(s\) \['mid'\]"):
    custom.class_weights("balanced", labels, ["neg", "mid", "pos"])
  with pytest.raises(ElectraError, match="must be 'balanced'"):
    custom.class_weights("inverse", labels, ["neg", "pos"])
