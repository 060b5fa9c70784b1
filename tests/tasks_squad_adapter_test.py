"""SQuAD fine-tuning end to end (`tasks/squad_adapter.py`): both heads, both versions, outputs, export."""

import json
import os
import re

import numpy as np
import pytest

from electra_jax import cli, experiment, run_finetuning
from electra_jax.errors import ElectraError
from electra_jax.tasks import squad_eval

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "experiments", "configs", "squad.py")
TINY = {
  "model.embedding_size": 16,
  "model.hidden_size": 32,
  "model.num_hidden_layers": 2,
  "model.num_attention_heads": 2,
  "model.intermediate_size": 64,
  "max_seq_length": 32,
  "max_query_length": 12,
  "doc_stride": 8,
  "batch_size": 16,
  "eval_batch_size": 64,
  "epochs": 1,
  "log_every": 5,
}
NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank"]
PLACES = ["Paris", "Berlin", "Rome", "Oslo", "Madrid", "Vienna"]


def _squad_file(path, n, *, v2=False, start=0):
  """`n` paragraphs "<name> lives in <place>. ..." with a "where" question (and an unanswerable one)."""
  paragraphs = []
  for i in range(start, start + n):
    name, place = NAMES[i % 6], PLACES[(5 * i + 1) % 6]
    context = f"{name} lives in {place}. The weather there is mild."
    qas = [
      {
        "id": f"q{i}",
        "question": f"Where does {name} live?",
        "answers": [{"text": place, "answer_start": context.index(place)}],
      }
    ]
    if v2:
      qas[0]["is_impossible"] = False
      qas.append({"id": f"n{i}", "question": "Who won?", "answers": [], "is_impossible": True})
    paragraphs.append({"context": context, "qas": qas})
  blob = {"version": "v2.0" if v2 else "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}
  path.write_text(json.dumps(blob))
  return str(path)


def _cfg(arg, **overrides):
  values = {**TINY, **overrides}
  return experiment.load_config(f"{CONFIG}:{arg}", [f"--config.{k}={v}" for k, v in values.items()])


def test_config_defaults_are_the_official_ones():
  small = experiment.load_config(f"{CONFIG}:version=2.0,size=small")
  assert (small.task, small.version, small.recipe) == ("squad", "2.0", "official")
  assert (small.max_seq_length, small.epochs, small.doc_stride) == (512, 2, 128)
  assert (small.max_query_length, small.max_answer_length, small.n_best_size) == (64, 30, 20)
  assert (small.learning_rate, small.layerwise_lr_decay) == (1e-4, 0.8)
  large = experiment.load_config(f"{CONFIG}:size=large")
  assert (large.version, large.learning_rate, large.layerwise_lr_decay) == ("1.1", 5e-5, 0.9)
  assert "augment" not in small and "class_weights" not in small


def test_v11_hf_head_end_to_end_and_export_to_hf(tmp_path):
  train = _squad_file(tmp_path / "train.json", 48)
  dev = _squad_file(tmp_path / "dev.json", 8, start=100)
  work = tmp_path / "w"
  cfg = _cfg("version=1.1,size=tiny", train_file=train, dev_file=dev, recipe="standard")
  summary = run_finetuning.run(cfg, str(work), progress=False)
  assert summary["status"] == "complete" and summary["primary_metric"] == "f1"
  assert set(summary["metrics"]) == {"exact_match", "f1"}
  assert summary["recipe"]["head"] == "hf" and summary["recipe"]["loss_reduction"] == "mean"
  preds = json.load(open(work / "seed_0" / "predictions.json"))
  assert sorted(preds) == sorted(f"q{i}" for i in range(100, 108))
  assert not (work / "seed_0" / "null_odds.json").exists()
  # The written predictions score what results.json says, by the official v1.1 rules.
  scored = squad_eval.evaluate_files(dev, work / "seed_0" / "predictions.json").metrics
  assert scored == pytest.approx(summary["seeds"][0]["last"])
  # predict with the workdir's final model gives the answers of the last evaluation.
  out_json = tmp_path / "answers.json"
  assert cli.main(["predict", "--model", str(work), "--input", dev, "--output", str(out_json)]) == 0
  assert json.load(open(out_json)) == preds
  # ... and so does its jax.export artifact, served by predict.
  exported, out_exp = tmp_path / "exported", tmp_path / "answers_exported.json"
  assert cli.main(["export", "--model", str(work), "--out", str(exported)]) == 0
  assert json.load(open(exported / "serving_config.json"))["head"] == "question_answering"
  assert (
    cli.main(["predict", "--model", str(exported), "--input", dev, "--output", str(out_exp)]) == 0
  )
  assert json.load(open(out_exp)) == preds
  # The HF head exports to HF, and HF PyTorch computes the same logits.
  out = tmp_path / "hf"
  assert cli.main(["convert", "--to-hf", str(work / "seed_0" / "last"), "--out", str(out)]) == 0
  assert json.load(open(out / "config.json"))["architectures"] == ["ElectraForQuestionAnswering"]
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from electra_jax import pretrained, tokenization

  model, params = pretrained.from_pretrained(str(work / "seed_0" / "last"))
  tok = tokenization.load_tokenizer(str(work / "seed_0" / "last"))
  ids = np.asarray([tok.encode("where does bob live?", "bob lives in oslo.").ids])
  ours = model.apply({"params": params}, ids, attention_mask=np.ones_like(ids))
  hf = transformers.ElectraForQuestionAnswering.from_pretrained(str(out)).eval()
  with torch.no_grad():
    theirs = hf(input_ids=torch.tensor(ids), attention_mask=torch.ones(ids.shape, dtype=torch.long))
  np.testing.assert_allclose(ours.start_logits, theirs.start_logits.numpy(), atol=1e-4)
  np.testing.assert_allclose(ours.end_logits, theirs.end_logits.numpy(), atol=1e-4)


def test_v20_official_head_end_to_end_null_odds_and_squad_eval(tmp_path, capsys):
  train = _squad_file(tmp_path / "train.json", 24, v2=True)
  dev = _squad_file(tmp_path / "dev.json", 4, v2=True, start=100)
  work = tmp_path / "w"
  summary = run_finetuning.run(
    _cfg("version=2.0,size=tiny", train_file=train, dev_file=dev), str(work), progress=False
  )
  assert summary["recipe"]["head"] == "official" and summary["recipe"]["loss_reduction"] == "sum"
  last = summary["seeds"][0]["last"]
  for key in ("exact", "f1", "HasAns_exact", "NoAns_f1", "best_exact", "best_f1_thresh"):
    assert key in last
  seed = work / "seed_0"
  null_odds = json.load(open(seed / "null_odds.json"))
  assert sorted(null_odds) == sorted(json.load(open(seed / "predictions.json")))
  assert len(null_odds) == 8
  meta = json.load(open(seed / "last" / "electra_jax.json"))
  assert meta["head"] == "question_answering_official"
  assert meta["extra"]["squad_version"] == "2.0" and meta["extra"]["na_threshold"] == -2.75
  # `squad-eval` on the written files at the official threshold gives the loop's numbers.
  args = ["squad-eval", dev, str(seed / "predictions.json"), "--na-prob-file"]
  assert cli.main([*args, str(seed / "null_odds.json"), "--na-prob-thresh", "-2.75"]) == 0
  assert json.loads(capsys.readouterr().out) == pytest.approx(last)
  # predict answers "" above the model's threshold and writes the no-answer scores beside.
  out_json = tmp_path / "answers.json"
  args = ["predict", "--model", str(work), "--input", dev, "--output", str(out_json), "--eval"]
  assert cli.main(args) == 0
  answers = json.load(open(out_json))
  spans = json.load(open(seed / "predictions.json"))
  assert answers == {q: "" if null_odds[q] > -2.75 else a for q, a in spans.items()}
  assert json.load(open(tmp_path / "answers.null_odds.json")) == pytest.approx(null_odds, abs=1e-4)
  assert json.loads(capsys.readouterr().err.strip().splitlines()[-1]) == pytest.approx(
    last, abs=1e-3
  )
  # The beam search exports at a fixed length only; the export then answers as the model does.
  exported, out_exp = tmp_path / "exported", tmp_path / "answers_exported.json"
  assert cli.main(["export", "--model", str(work), "--out", str(exported)]) == 2
  assert "--fixed-length" in capsys.readouterr().err and not exported.exists()
  assert cli.main(["export", "--model", str(work), "--out", str(exported), "--fixed-length"]) == 0
  assert (
    cli.main(["predict", "--model", str(exported), "--input", dev, "--output", str(out_exp)]) == 0
  )
  assert json.load(open(out_exp)) == answers
  odds = json.load(open(tmp_path / "answers_exported.null_odds.json"))
  assert odds == pytest.approx(null_odds, abs=1e-4)
  # The official head has no HF class: export to HF is refused in one line.
  assert cli.main(["convert", "--to-hf", str(seed / "last"), "--out", str(tmp_path / "hf")]) == 2
  assert "no HF transformers equivalent" in capsys.readouterr().err


def test_training_targets_and_dropped_answers(tmp_path):
  from electra_jax import job_setup, recipes, tokenization
  from electra_jax.tasks import squad_adapter

  context = "Alice lives in Paris.  Bob lives in Rome."
  blob = {
    "data": [
      {
        "title": "t",
        "paragraphs": [
          {
            "context": context,
            "qas": [
              {"id": "a", "question": "where?", "answers": [{"text": "Rome", "answer_start": 36}]},
              # The answer is the double space between the sentences: it covers no token.
              {"id": "b", "question": "gap?", "answers": [{"text": "  ", "answer_start": 21}]},
            ],
          }
        ],
      }
    ]
  }
  path = tmp_path / "t.json"
  path.write_text(json.dumps(blob))
  cfg = _cfg("version=1.1,size=tiny", train_file=str(path), max_seq_length=24, doc_stride=4)
  adapter = squad_adapter.squad_adapter(cfg, recipes.resolve(cfg))
  tok = tokenization.load_tokenizer(job_setup.BUNDLED_VOCAB)
  feats = adapter.featurize(tok, 24)["train"]
  assert adapter.dropped == ["b"] and set(feats["example_index"].tolist()) == {0}
  # Windows holding "rome" point at it; the others at [CLS], as the official code.
  rome = tok.encode("rome").ids[1]
  for ids, s, e in zip(feats["input_ids"], feats["start_positions"], feats["end_positions"]):
    if rome in ids.tolist():
      assert s == e and ids[s] == rome
    else:
      assert s == e == 0
  assert "1 training question(s) dropped" in adapter.describe()


def test_hf_head_loss_is_the_mean_of_start_and_end_cross_entropy(tmp_path, tiny_config):
  import jax

  from electra_jax import model as model_lib
  from electra_jax import recipes
  from electra_jax.tasks import squad_adapter

  train = _squad_file(tmp_path / "train.json", 4)
  model = model_lib.build_model(tiny_config, "question_answering")
  params = model_lib.init_params(model, jax.random.PRNGKey(0), length=16)
  rng = np.random.RandomState(0)
  batch = {
    "input_ids": rng.randint(1, 64, (3, 16)),
    "input_mask": np.ones((3, 16), np.int32),
    "segment_ids": np.zeros((3, 16), np.int32),
    "start_positions": np.asarray([0, 3, 7]),
    "end_positions": np.asarray([0, 5, 15]),
    "is_impossible": np.zeros(3, np.int32),
  }
  start, end = model.apply({"params": params}, batch["input_ids"])

  def ce(logits, gold):
    logits = np.asarray(logits, np.float64)
    logp = (
      logits
      - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
      - logits.max(-1, keepdims=True)
    )
    return -logp[np.arange(len(gold)), gold]

  per_example = (ce(start, batch["start_positions"]) + ce(end, batch["end_positions"])) / 2
  # recipe=official with a HF-headed model (an init_from QA checkpoint keeps its head):
  # the HF loss, summed as the recipe says, and the HF head's null threshold.
  for recipe, want in (("standard", per_example.mean()), ("official", per_example.sum())):
    cfg = _cfg("version=2.0,size=tiny", train_file=train, recipe=recipe)
    adapter = squad_adapter.squad_adapter(cfg, recipes.resolve(cfg))
    loss_fn = jax.jit(adapter.loss_fn(model, None), static_argnums=3)
    loss, _ = loss_fn(params, batch, jax.random.PRNGKey(1), True)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    assert adapter.na_threshold == 0.0 and not adapter.official


@pytest.mark.parametrize(
  "change, message",
  [
    ({"version": "2.0"}, None),
    ({"train_file": "MISSING"}, "training file .* not found"),
    ({"dev_file": "BAD"}, "is not valid JSON"),
    ({"dev_file": "NOTSQUAD"}, "has no 'data' list"),
    ({"dev_file": "OFFSET"}, r"answer_start 3 does not point at 'Berlin'"),
    ({"dev_file": "V2"}, "unanswerable questions .* set --config.version=2.0"),
    ({"max_seq_length": 15}, "leaves no room for context"),
    ({"doc_stride": 0}, "doc_stride"),
    ({"dev_file": "tfds:squad/v3.0:dev"}, "a tfds source is tfds:squad/v1.1:SPLIT"),
  ],
)
def test_bad_inputs_are_one_line_errors_and_leave_nothing(tmp_path, capsys, change, message):
  train = _squad_file(tmp_path / "train.json", 4)
  files = {
    "MISSING": str(tmp_path / "nope.json"),
    "BAD": str(tmp_path / "bad.json"),
    "NOTSQUAD": str(tmp_path / "list.json"),
    "OFFSET": str(tmp_path / "offset.json"),
    "V2": _squad_file(tmp_path / "v2.json", 2, v2=True),
  }
  (tmp_path / "bad.json").write_text('{"data": [')
  (tmp_path / "list.json").write_text("[1, 2]")
  blob = json.load(open(train))
  blob["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 3
  (tmp_path / "offset.json").write_text(json.dumps(blob))
  values = {"train_file": train, **{k: files.get(str(v), v) for k, v in change.items()}}
  work = tmp_path / "w"
  args = ["finetune", "--config", f"{CONFIG}:size=tiny", "--workdir", str(work), "--no-progress"]
  args += [f"--config.{k}={v}" for k, v in {**TINY, **values}.items() if k != "version"]
  if message is None:  # the sanity case: a v1.1 config may not be switched by a key alone
    args[2] = f"{CONFIG}:version=1.1,size=tiny"
    args.append("--config.version=3.0")
    message = "version"
  assert cli.main(args) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1, err
  assert re.search(message, err), err
  assert not work.exists()


def test_adapter_without_train_file_is_refused():
  from electra_jax import recipes
  from electra_jax.tasks import squad_adapter

  cfg = _cfg("size=tiny")
  with pytest.raises(ElectraError, match="needs --config.train_file"):
    squad_adapter.squad_adapter(cfg, recipes.resolve(cfg))


def _dev_split(shared_data, tmp_path, train_articles=4, dev_articles=2):
  """The README's split of SQuAD dev-v1.1: the first 4 articles train (1,680 questions), the next 2 dev (465)."""
  path = shared_data / "squad" / "dev-v1.1.json"
  if not path.exists():
    pytest.skip(f"{path} not found")
  blob = json.load(open(path))
  data = blob["data"]
  out = []
  for name, articles in (
    ("train", data[:train_articles]),
    ("dev", data[train_articles : train_articles + dev_articles]),
  ):
    file = tmp_path / f"{name}.json"
    file.write_text(json.dumps({"version": blob["version"], "data": articles}))
    out.append(str(file))
  return out


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["standard", "official"])
def test_tiny_model_on_a_split_of_squad_dev(shared_data, tmp_path, recipe):
  """A tiny model from scratch, one epoch at length 128: runs end to end and writes its outputs.

  Measured at load ~12 on the shared 2-core VM (2 epochs, `experiments/configs/squad.py:size=tiny`):
  recipe=standard 3 min 23 s, dev F1 9.2 (EM 0.2); recipe=official 4 min 39 s, F1 6.7 (EM 1.3).
  """
  train, dev = _dev_split(shared_data, tmp_path)
  work = tmp_path / "w"
  args = ["finetune", "--config", f"{CONFIG}:version=1.1,size=tiny", "--workdir", str(work)]
  args += [f"--config.train_file={train}", f"--config.dev_file={dev}", f"--config.recipe={recipe}"]
  args += ["--config.max_seq_length=128", "--config.doc_stride=64", "--config.max_query_length=32"]
  assert cli.main([*args, "--config.epochs=1", "--no-progress"]) == 0
  summary = json.load(open(work / "results.json"))
  predictions = json.load(open(work / "seed_0" / "predictions.json"))
  assert len(predictions) == 465
  print(recipe, summary["metrics"]["f1"]["median"], summary["metrics"]["exact_match"]["median"])
  scored = squad_eval.evaluate_files(dev, work / "seed_0" / "predictions.json").metrics
  assert scored["f1"] == pytest.approx(summary["metrics"]["f1"]["median"])


@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_tfds_source_reads_what_the_json_holds(tmp_path, version):
  """tfds `squad/vX` built offline by its own builder (the download pointed at local files)."""
  from unittest import mock

  tfds = pytest.importorskip("tensorflow_datasets")
  pytest.importorskip("importlib_resources")  # tfds's registered builders need it
  from electra_jax import recipes
  from electra_jax.tasks import squad, squad_adapter

  v2 = version == "2.0"
  files = {
    "train": _squad_file(tmp_path / "train.json", 6, v2=v2),
    "dev": _squad_file(tmp_path / "dev.json", 3, v2=v2, start=100),
  }
  name, data_dir = f"squad/v{version}", str(tmp_path / "tfds")
  builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  download = mock.patch.object(
    tfds.download.DownloadManager, "download_and_extract", lambda self, urls: files
  )
  with download:
    builder.download_and_prepare()
  cfg = _cfg(
    f"version={version},size=tiny",
    train_file=f"tfds:{name}:train",
    dev_file=f"tfds:{name}:validation",
    tfds_data_dir=data_dir,
  )
  adapter = squad_adapter.squad_adapter(cfg, recipes.resolve(cfg))
  for split, path in files.items():
    want = sorted(squad.read_squad(path))
    assert sorted(adapter.splits[split]) == want and len(want) == (12 if v2 else 6) // (
      2 if split == "dev" else 1
    )
  with pytest.raises(ElectraError, match="not available under"):
    squad.read_tfds_squad(name, "train", str(tmp_path / "empty"))
  with pytest.raises(ElectraError, match="not SQuAD"):
    squad.read_source("tfds:glue/sst2:train")
