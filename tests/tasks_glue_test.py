"""Tests for electra_jax.tasks.glue: registry, GLUE-directory reader, tfds reader."""

import os

import pytest

from electra_jax.errors import ElectraError
from electra_jax.tasks import glue

# (task, split) -> rows, from ../shared/data/README.md (checked counts).
KNOWN_SIZES = {
  ("cola", "train"): 8551,
  ("cola", "dev"): 1043,
  ("cola", "test"): 1063,
  ("sst2", "train"): 67349,
  ("sst2", "dev"): 872,
  ("sst2", "test"): 1821,
  ("mrpc", "train"): 3668,
  ("mrpc", "dev"): 408,
  ("mrpc", "test"): 1725,
  ("stsb", "train"): 5749,
  ("stsb", "dev"): 1500,
  ("stsb", "test"): 1379,
  ("rte", "train"): 2490,
  ("rte", "dev"): 277,
  ("rte", "test"): 3000,
  ("wnli", "train"): 635,
  ("wnli", "dev"): 71,
  ("wnli", "test"): 146,
  ("qnli", "dev"): 5463,
  ("qnli", "test"): 5463,
  ("ax", "test"): 1104,
}


@pytest.fixture(scope="module")
def glue_dir(shared_data):
  path = shared_data / "glue_data"
  if not path.is_dir():
    pytest.skip(f"{path} not found")
  return path


def test_every_shared_glue_file_is_covered(glue_dir):
  # Every .tsv in the shared directory maps to a known (task, split).
  covered = {glue.split_path(t, glue_dir, s) for t, s in KNOWN_SIZES}
  present = {
    os.path.join(root, f)
    for root, _, files in os.walk(glue_dir)
    for f in files
    if f.endswith(".tsv") and f != "dev_ids.tsv"  # MRPC's split ids, not examples
  }
  assert present == covered


@pytest.mark.parametrize("task,split", sorted(KNOWN_SIZES))
def test_counts_match_known_sizes(glue_dir, task, split):
  t = glue.get_task(task)
  examples = glue.read_split(task, glue_dir, split)
  assert len(examples) == KNOWN_SIZES[(task, split)]
  assert len({e.guid for e in examples}) == len(examples)
  assert all(e.text_a for e in examples)
  assert all((e.text_b is not None) == t.is_pair for e in examples)
  if split == "test":
    assert all(e.label is None for e in examples)
  elif t.is_regression:
    assert all(isinstance(e.label, float) and 0.0 <= e.label <= 5.0 for e in examples)
  else:
    labels = {e.label for e in examples}
    assert labels == set(t.label_list)


def test_format_details(glue_dir):
  # MRPC: the BOM does not break the header; quoting is off, so a field that
  # starts with a quote is kept verbatim.
  mrpc = glue.read_split("mrpc", glue_dir, "dev")
  assert mrpc[0].label == "1" and mrpc[0].text_b.startswith('" The foodservice')
  # CoLA has no header: the first line is an example.
  cola = glue.read_split("cola", glue_dir, "train")
  assert cola[0].text_a.startswith("Our friends won't buy this analysis")
  # Test ids come from the index column.
  assert glue.read_split("rte", glue_dir, "test")[5].guid == "test-5"
  assert len(glue.read_split("sst2", glue_dir, "train", limit=10)) == 10


def test_registry():
  assert glue.get_task("SST-2") is glue.get_task("sst_2") is glue.TASKS["sst2"]
  assert glue.get_task("STS-B").num_labels == 1 and glue.get_task("stsb").is_regression
  assert glue.get_task("MNLI").label_list == ("contradiction", "entailment", "neutral")
  assert glue.get_task("diagnostic").name == "ax"
  assert set(glue.GLUE_TASK_NAMES) == {
    "cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "ax"
  }  # fmt: skip
  assert glue.get_task("rte").label_map == {"entailment": 0, "not_entailment": 1}
  assert glue.get_task("mnli").splits == (
    "train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched"
  )  # fmt: skip
  with pytest.raises(ElectraError, match=r"unknown task 'glue9'; valid GLUE tasks: cola, sst2"):
    glue.get_task("glue9")


# --- Synthetic files in the official layouts of the tasks not in shared data --

_MNLI_COMMON = (
  "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse"
  " sentence1_parse sentence2_parse sentence1 sentence2"
).split()


def _write(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")


def _mnli_row(i, n_extra, label=None):
  row = [str(i), f"p{i}", f"q{i}", "fiction", "(bp1)", "(bp2)", "(p1)", "(p2)", f"prem {i}"]
  row.append(f'"hyp {i}')  # starts with a quote: must survive quoting-off
  if label is not None:
    row += [label] * n_extra
  return row


@pytest.fixture
def synthetic_glue(tmp_path):
  labels = ["neutral", "entailment", "contradiction"]
  mnli = tmp_path / "MNLI"
  _write(
    mnli / "train.tsv",
    [_MNLI_COMMON + ["label1", "gold_label"]] + [_mnli_row(i, 2, labels[i]) for i in range(3)],
  )
  dev_header = _MNLI_COMMON + [f"label{k}" for k in range(1, 6)] + ["gold_label"]
  _write(mnli / "dev_matched.tsv", [dev_header] + [_mnli_row(i, 6, labels[i]) for i in range(3)])
  _write(mnli / "dev_mismatched.tsv", [dev_header] + [_mnli_row(7, 6, "entailment")])
  _write(mnli / "test_matched.tsv", [_MNLI_COMMON] + [_mnli_row(i, 0) for i in range(2)])
  _write(mnli / "test_mismatched.tsv", [_MNLI_COMMON] + [_mnli_row(5, 0)])
  qqp = tmp_path / "QQP"
  qqp_header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
  _write(qqp / "train.tsv", [qqp_header, ["12", "1", "2", "How?", '"Why?', "1"]])
  _write(qqp / "dev.tsv", [qqp_header, ["3", "5", "6", "A?", "B?", "0"]])
  _write(qqp / "test.tsv", [["id", "question1", "question2"], ["0", "C?", "D?"]])
  qnli = tmp_path / "QNLI"
  _write(
    qnli / "train.tsv",
    [["index", "question", "sentence", "label"], ["0", "Q?", "S.", "not_entailment"]],
  )
  return tmp_path


def test_mnli_layout(synthetic_glue):
  train = glue.read_split("mnli", synthetic_glue, "train")
  raw = (synthetic_glue / "MNLI" / "train.tsv").read_text().splitlines()[1].split("\t")
  # Official ELECTRA / HF: text_a = row[8], text_b = row[9], label = row[-1].
  assert (train[0].text_a, train[0].text_b, train[0].label) == (raw[8], raw[9], raw[-1])
  assert [e.label for e in train] == ["neutral", "entailment", "contradiction"]
  dev = glue.read_split("mnli", synthetic_glue, "dev_matched")
  assert [e.label for e in dev] == ["neutral", "entailment", "contradiction"]
  assert dev[2].text_b == '"hyp 2' and dev[2].guid == "dev_matched-2"
  assert glue.read_split("mnli", synthetic_glue, "dev") == dev  # dev means matched
  mm = glue.read_split("mnli", synthetic_glue, "dev_mismatched")
  assert [(e.text_a, e.label) for e in mm] == [("prem 7", "entailment")]
  test = glue.read_split("mnli", synthetic_glue, "test_matched")
  assert [(e.guid, e.label) for e in test] == [("test_matched-0", None), ("test_matched-1", None)]
  assert len(glue.read_split("mnli", synthetic_glue, "test_mismatched")) == 1


def test_qqp_and_qnli_layout(synthetic_glue):
  (train,) = glue.read_split("qqp", synthetic_glue, "train")
  assert train == glue.Example("train-12", "How?", '"Why?', "1")
  (dev,) = glue.read_split("qqp", synthetic_glue, "dev")
  assert dev.label == "0"
  (test,) = glue.read_split("qqp", synthetic_glue, "test")
  assert test == glue.Example("test-0", "C?", "D?", None)
  (qnli,) = glue.read_split("qnli", synthetic_glue, "train")
  assert qnli == glue.Example("train-0", "Q?", "S.", "not_entailment")


def test_bad_input(synthetic_glue, tmp_path):
  with pytest.raises(
    ElectraError, match="task qqp has no split .dev_matched.; its splits are: train, dev, test"
  ):
    glue.read_split("qqp", synthetic_glue, "dev_matched")
  with pytest.raises(ElectraError, match=r"qnli split 'dev': .*QNLI/dev.tsv not found"):
    glue.read_split("qnli", synthetic_glue, "dev")
  with pytest.raises(ElectraError, match="does not exist"):
    glue.read_split("rte", tmp_path / "nowhere", "train")
  with pytest.raises(ElectraError, match="has no split 'validation'"):
    glue.read_split("rte", synthetic_glue, "validation")
  bad = synthetic_glue / "RTE" / "train.tsv"
  _write(
    bad,
    [
      ["index", "sentence1", "sentence2", "label"],
      ["0", "a", "b", "entailment"],
      [],
      ["1", "a", "b", "maybe"],
      ["2", "a"],
      ["3", "c", "d", "not_entailment"],
    ],
  )
  with pytest.raises(ElectraError, match=r"train.tsv:4: malformed rte row: label 'maybe'"):
    glue.read_split("rte", synthetic_glue, "train")
  kept = glue.read_split("rte", synthetic_glue, "train", on_malformed="skip")
  assert [e.guid for e in kept] == ["train-0", "train-3"]
  _write(bad, [["index", "s1", "s2", "label"], ["0", "a", "b", "entailment"]])
  with pytest.raises(ElectraError, match=r"lacks column\(s\) \['sentence1', 'sentence2'\]"):
    glue.read_split("rte", synthetic_glue, "train")
  _write(synthetic_glue / "STS-B" / "dev.tsv", [["index", "sentence1", "sentence2", "score"]])
  assert glue.read_split("stsb", synthetic_glue, "dev") == []
  _write(synthetic_glue / "STS-B" / "train.tsv", [["index", "sentence1", "sentence2", "score"],
                                                  ["0", "a", "b", "high"]])  # fmt: skip
  with pytest.raises(ElectraError, match=r"train.tsv:2: .*'high' is not a number"):
    glue.read_split("stsb", synthetic_glue, "train")


# --- tfds ---------------------------------------------------------------------


def test_tfds_not_prepared_is_one_line_error(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(
    ElectraError, match=r"tfds glue/cola split 'validation' is not available"
  ) as e:
    glue.read_tfds_split("cola", "dev", data_dir=tmp_path)
  assert "\n" not in str(e.value)


def test_tfds_records_map_to_glue_labels(monkeypatch):
  # Preparing tfds glue needs TensorFlow and the network; this checks our
  # mapping of tfds records (feature names, label ids, idx) with a stand-in
  # data source shaped like tfds's decoded records.
  tfds = pytest.importorskip("tensorflow_datasets")
  records = {
    ("glue/mnli", "validation_mismatched"): [
      {"premise": b"p0", "hypothesis": b"h0", "label": 0, "idx": 0},
      {"premise": b"p1", "hypothesis": b"h1", "label": 2, "idx": 1},
    ],
    ("glue/stsb", "test"): [{"sentence1": b"a", "sentence2": b"b", "label": -1.0, "idx": 4}],
    ("glue/sst2", "train"): [{"sentence": b"nice", "label": 1, "idx": 9}],
    ("glue/wnli", "validation"): [{"sentence1": b"x", "sentence2": b"y", "label": 1, "idx": 0}],
  }
  calls = []

  def fake_data_source(name, *, split, data_dir, download):
    calls.append((name, split, data_dir, download))
    return records[(name, split)]

  monkeypatch.setattr(tfds, "data_source", fake_data_source)
  mm = glue.read_tfds_split("mnli", "dev_mismatched", "/data")
  # tfds MNLI order is entailment, neutral, contradiction.
  assert [(e.text_a, e.text_b, e.label) for e in mm] == [
    ("p0", "h0", "entailment"),
    ("p1", "h1", "contradiction"),
  ]
  assert calls[-1] == ("glue/mnli", "validation_mismatched", "/data", False)
  assert glue.read_tfds_split("stsb", "test") == [glue.Example("test-4", "a", "b", None)]
  assert glue.read_tfds_split("sst2", "train") == [glue.Example("train-9", "nice", None, "1")]
  assert glue.read_tfds_split("wnli", "dev")[0].label == "1"


def _prepare_tfds_glue(config, glue_src, data_dir):
  """Prepares the real tfds `glue/<config>` builder (array_record, no TensorFlow)
  from a local GLUE-layout directory instead of the download URL."""
  tfds = pytest.importorskip("tensorflow_datasets")
  try:
    from tensorflow_datasets.text import glue as tfds_glue
  except ImportError as e:  # pragma: no cover - depends on the tfds build
    pytest.skip(f"tfds glue builder unavailable: {e}")

  class Glue(tfds_glue.Glue, skip_registration=True):
    def _split_generators(self, dl_manager):
      dl_manager.download_and_extract = lambda url: str(glue_src)
      return super()._split_generators(dl_manager)

  builder = Glue(config=config, data_dir=str(data_dir), file_format="array_record")
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
  )


@pytest.mark.parametrize("task,directory", [("cola", "CoLA"), ("stsb", "STS-B"), ("rte", "RTE")])
def test_tfds_prepared_glue_matches_local_reader(glue_dir, tmp_path, task, directory):
  # A small GLUE directory: the first rows of the real files.
  src = tmp_path / "src"
  (src / directory).mkdir(parents=True)
  for split in ("train", "dev", "test"):
    lines = (glue_dir / directory / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    (src / directory / f"{split}.tsv").write_text("\n".join(lines[:40]) + "\n", encoding="utf-8")
  _prepare_tfds_glue(task, src, tmp_path / "tfds")
  for split in ("train", "dev", "test"):
    ours = glue.read_split(task, src, split)
    via_tfds = glue.read_tfds_split(task, split, tmp_path / "tfds")
    assert len(via_tfds) == len(ours) >= 38
    for a, b in zip(via_tfds, ours):
      assert (a.guid, a.text_a, a.text_b) == (b.guid, b.text_a, b.text_b)
      if isinstance(b.label, float):
        assert a.label == pytest.approx(b.label, abs=1e-6)  # tfds stores float32
      else:
        assert a.label == b.label
  assert len(glue.read_tfds_split(task, "dev", tmp_path / "tfds", limit=5)) == 5
