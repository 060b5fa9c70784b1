"""End-to-end tests of `electra-jax finetune` on tiny models."""

import json
import os

import numpy as np
import pytest

from electra_jax import cli, experiment, recipes, run_finetuning
from electra_jax.errors import ElectraError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "experiments", "configs", "glue.py")
SAMPLE = os.path.join(REPO, "electra_jax", "sample_data")

TINY = {
  "model.embedding_size": 16,
  "model.hidden_size": 32,
  "model.num_hidden_layers": 2,
  "model.num_attention_heads": 2,
  "model.intermediate_size": 64,
  "max_seq_length": 32,
  "batch_size": 16,
  "eval_batch_size": 64,
  "log_every": 5,
  "checkpoint_every": 1000,
}


def _cfg(arg, **overrides):
  values = {**TINY, **overrides}
  return experiment.load_config(f"{CONFIG}:{arg}", [f"--config.{k}={v}" for k, v in values.items()])


def _custom(tmp_path, rows, name="train.jsonl"):
  path = tmp_path / name
  with open(path, "w") as f:
    for text, label in rows:
      f.write(json.dumps({"text": text, "label": label}) + "\n")
  return str(path)


def test_custom_data_two_seeds_best_last_and_predict(tmp_path):
  rng = np.random.RandomState(0)
  words = ["good", "great", "fine", "bad", "awful", "poor"]
  rows = []
  for _ in range(96):
    w = words[rng.randint(6)]
    rows.append((f"the movie was {w}", "pos" if w in ("good", "great", "fine") else "neg"))
  train = _custom(tmp_path, rows)
  dev = _custom(tmp_path, rows[:32], "dev.jsonl")
  cfg = _cfg("task=custom,size=tiny", train_file=train, dev_file=dev, epochs=2, seeds=2)
  work = tmp_path / "w"
  summary = run_finetuning.run(cfg, str(work), progress=False)
  assert set(summary["seeds"]) == {0, 1}
  acc = summary["metrics"]["accuracy"]
  # The headline is the final model of each seed (as the official code reports);
  # the best epochs are kept apart, labelled dev-selected.
  assert acc["values"] == [summary["seeds"][s]["last"]["accuracy"] for s in (0, 1)]
  selected = summary["dev_selected"]["metrics"]["accuracy"]["values"]
  assert selected == [summary["seeds"][s]["best"]["accuracy"] for s in (0, 1)]
  assert summary["recipe"] == {"recipe": "standard", **recipes.RECIPES["standard"]}
  assert acc["median"] == pytest.approx(float(np.median(acc["values"])))
  assert acc["std"] == pytest.approx(float(np.std(acc["values"])))
  for seed in (0, 1):
    for kind in ("best", "last"):
      meta = json.load(open(work / f"seed_{seed}" / kind / "electra_jax.json"))
      assert meta["extra"]["label_map"] == ["neg", "pos"]
    # evaluated every epoch: 96 // 16 = 6 steps per epoch
    assert sorted(int(s) for s in summary["seeds"][seed]["epochs"]) == [6, 12]
  inputs = tmp_path / "in.txt"
  inputs.write_text("the movie was great\n\nthe movie was awful\n")
  out = tmp_path / "out.jsonl"
  assert (
    cli.main(["predict", "--model", str(work), "--input", str(inputs), "--output", str(out)]) == 0
  )
  lines = [json.loads(line) for line in open(out)]
  assert len(lines) == 3 and "error" in lines[1]
  assert lines[0]["label"] in ("neg", "pos")


def test_regression_task_stsb_subset(tmp_path, shared_data):
  cfg = _cfg(
    "task=stsb,size=tiny",
    data_dir=str(shared_data / "glue_data"),
    epochs=1,
    max_train_examples=64,
    write_test_predictions=True,
  )
  summary = run_finetuning.run(cfg, str(tmp_path), progress=False)
  assert {"pearson", "spearman"} <= set(summary["metrics"])
  preds = tmp_path / "test_predictions" / "STS-B.tsv"
  assert preds.exists()
  assert len(preds.read_text().strip().splitlines()) == 1379 + 1  # header + GLUE STS-B test rows


def test_init_from_pretrained_checkpoint_and_head_mismatch(tmp_path, tiny_config):
  import jax

  from electra_jax import model as model_lib
  from electra_jax import pretrained, tokenization

  tok = tokenization.load_tokenizer(os.path.join(SAMPLE, "vocab.txt"))
  config = tiny_config.replace(vocab_size=tok.vocab_size, max_position_embeddings=512)
  disc = model_lib.build_model(config, "pretraining")
  params = model_lib.init_params(disc, jax.random.key(1))
  src = tmp_path / "disc"
  pretrained.save_pretrained(str(src), config, params, head="pretraining", tokenizer_dir=SAMPLE)
  rows = [(f"text {i}", str(i % 2)) for i in range(40)]
  train = _custom(tmp_path, rows)
  cfg = _cfg(
    "task=custom,size=tiny", train_file=train, dev_file=train, epochs=1, init_from=str(src)
  )
  run_finetuning.run(cfg, str(tmp_path / "ft"), progress=False)
  _, tuned = pretrained.from_pretrained(str(tmp_path / "ft" / "seed_0" / "last"))
  assert "classifier" in tuned
  # A 3-label classifier cannot initialise a 2-label task.
  three = model_lib.build_model(config, "sequence_classification", num_labels=3)
  src3 = tmp_path / "three"
  pretrained.save_pretrained(
    str(src3),
    config,
    model_lib.init_params(three, jax.random.key(2)),
    head="sequence_classification",
    head_kwargs={"num_labels": 3},
  )
  cfg = _cfg("task=custom,size=tiny", train_file=train, epochs=1, init_from=str(src3))
  with pytest.raises(ElectraError, match="classifies 3 labels but this task has 2"):
    run_finetuning.run(cfg, str(tmp_path / "ft3"), progress=False)


def test_bad_inputs(tmp_path, capsys):
  assert cli.main(["finetune", "--config", f"{CONFIG}:task=nope", "--workdir", str(tmp_path)]) == 2
  assert "nope" in capsys.readouterr().err
  empty = tmp_path / "glue"
  (empty / "SST-2").mkdir(parents=True)
  code = cli.main(
    [
      "finetune",
      "--config",
      f"{CONFIG}:task=sst2,size=tiny",
      "--workdir",
      str(tmp_path / "w"),
      f"--config.data_dir={empty}",
    ]
  )
  err = capsys.readouterr().err
  assert code == 2 and "train" in err and len(err.strip().splitlines()) == 1
  train = _custom(tmp_path, [("a", "x")] * 20)
  code = cli.main(
    [
      "finetune",
      "--config",
      f"{CONFIG}:task=custom,size=tiny",
      "--workdir",
      str(tmp_path / "w2"),
      f"--config.train_file={train}",
      "--config.label_column=category",
    ]
  )
  err = capsys.readouterr().err
  assert code == 2 and "category" in err


def test_help(capsys):
  with pytest.raises(SystemExit):
    cli.main(["finetune", "--help"])
  assert "--seeds" in capsys.readouterr().out


def test_finetune_from_a_hugging_face_directory(tmp_path):
  """A HF `ElectraForPreTraining` directory (+ vocab.txt) initialises fine-tuning."""
  import shutil

  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  import electra_jax

  torch.manual_seed(0)
  hf_config = transformers.ElectraConfig(
    vocab_size=30522,  # the bundled BERT uncased vocab
    embedding_size=16,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
  )
  src = tmp_path / "hf"
  hf = transformers.ElectraForPreTraining(hf_config)
  hf.save_pretrained(str(src))
  shutil.copy(os.path.join(SAMPLE, "vocab.txt"), src / "vocab.txt")
  rows = [(f"the movie was {w}", "pos" if w == "good" else "neg") for w in ["good", "bad"] * 24]
  train = _custom(tmp_path, rows)
  cfg = _cfg(
    "task=custom,size=tiny", train_file=train, dev_file=train, epochs=1, init_from=str(src)
  )
  work = tmp_path / "ft"
  summary = run_finetuning.run(cfg, str(work), progress=False)
  assert 0.0 <= summary["metrics"]["accuracy"]["median"] <= 1.0
  rows = [json.loads(line) for line in open(work / "seed_0" / "metrics.jsonl")]
  losses = [r["loss"] for r in rows if "loss" in r]  # eval rows carry eval/* only
  assert losses and all(np.isfinite(losses))
  _, tuned = electra_jax.from_pretrained(str(work / "seed_0" / "best"))
  # The encoder started from the HF weights: the word embeddings moved only a little.
  hf_words = hf.electra.embeddings.word_embeddings.weight.detach().numpy()
  ours = np.asarray(tuned["electra"]["embeddings"]["word_embeddings"]["embedding"])
  assert ours.shape == hf_words.shape
  assert np.abs(ours - hf_words).max() < 0.05


def test_a_kill_between_the_two_renames_of_best_leaves_the_previous_model(tmp_path):
  """`_ModelSaver.save` moves best/ to best.old, then the new copy in; a kill between them is undone."""
  best = tmp_path / "best"
  (tmp_path / "best.old").mkdir()
  (tmp_path / "best.old" / "electra_jax.json").write_text('{"step": 4}')
  (tmp_path / "best.tmp").mkdir()  # the new copy, written but not yet renamed
  (tmp_path / "best.tmp" / "electra_jax.json").write_text('{"step": 8}')
  run_finetuning._recover_swap(str(best))
  assert json.load(open(best / "electra_jax.json")) == {"step": 4}
  assert sorted(os.listdir(tmp_path)) == ["best"]
  # Killed after the second rename: the new model stands, the old copy goes.
  (tmp_path / "best.old").mkdir()
  run_finetuning._recover_swap(str(best))
  assert json.load(open(best / "electra_jax.json")) == {"step": 4}
  assert sorted(os.listdir(tmp_path)) == ["best"]


def test_official_recipe_head_and_a_hf_classifier_keeps_its_head(tmp_path, tiny_config, caplog):
  """recipe=official: a discriminator gets the official head; a HF-headed classifier keeps its own (logged)."""
  import logging

  import jax

  from electra_jax import model as model_lib
  from electra_jax import pretrained, tokenization

  tok = tokenization.load_tokenizer(os.path.join(SAMPLE, "vocab.txt"))
  config = tiny_config.replace(vocab_size=tok.vocab_size, max_position_embeddings=512)
  rows = [(f"text {i}", str(i % 2)) for i in range(40)]
  train = _custom(tmp_path, rows)
  sources = {
    "pretraining": ({}, "task_specific"),
    "sequence_classification": ({"num_labels": 2}, "classifier"),
  }
  for head, (kwargs, scope) in sources.items():
    model = model_lib.build_model(config, head, **kwargs)
    src = tmp_path / head
    pretrained.save_pretrained(
      str(src), config, model_lib.init_params(model, jax.random.key(0)), head=head,
      head_kwargs=kwargs, tokenizer_dir=SAMPLE,
    )  # fmt: skip
    cfg = _cfg(
      "task=custom,size=tiny", train_file=train, dev_file=train, epochs=1, init_from=str(src),
      recipe="official",
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="electra_jax.run_finetuning"):
      summary = run_finetuning.run(cfg, str(tmp_path / f"ft_{head}"), progress=False)
    assert summary["recipe"]["head"] == "official" and summary["recipe"]["loss_reduction"] == "sum"
    _, tuned = pretrained.from_pretrained(str(tmp_path / f"ft_{head}" / "seed_0" / "last"))
    assert set(tuned) == {"electra", scope}
  assert "fine-tuning keeps its head" in caplog.text


def _final_loss(seed_dir):
  rows = [json.loads(line) for line in open(os.path.join(seed_dir, "metrics.jsonl"))]
  return [r["loss"] for r in rows if "loss" in r][-1]


def test_microbatched_training_matches_the_whole_batch_without_dropout(tmp_path, caplog):
  """16 rows × 32 tokens as 4 micro-batches of 128 tokens: the same run to float rounding."""
  caplog.set_level("INFO")
  rng = np.random.RandomState(1)
  rows = [(f"the film was {w}", w) for w in rng.choice(["good", "bad"], size=64)]
  train = _custom(tmp_path, rows)
  finals = {}
  for tokens in (0, 128):
    cfg = _cfg(
      "task=custom,size=tiny", train_file=train, epochs=2, dropout=0.0, microbatch_tokens=tokens
    )
    run_finetuning.run(cfg, str(tmp_path / f"w{tokens}"), progress=False)
    finals[tokens] = _final_loss(str(tmp_path / f"w{tokens}" / "seed_0"))
  np.testing.assert_allclose(finals[128], finals[0], rtol=1e-4)
  assert "runs as 4 micro-batches of 4 examples (microbatch_tokens=128)" in caplog.text


def test_microbatching_only_for_losses_summed_or_averaged_per_example():
  from electra_jax.tasks import adapters

  cfg = _cfg("task=sst2,size=tiny", microbatch_tokens=256)
  adapter = adapters.ClassificationAdapter.__new__(adapters.ClassificationAdapter)
  adapter.recipe = {"loss_reduction": "mean"}
  assert run_finetuning._microbatching(cfg, adapter, None) == {
    "microbatch_tokens": 256,
    "loss_reduction": "mean",
  }
  assert run_finetuning._microbatching(cfg, adapter, np.ones(2)) == {}  # a class-weighted mean
  adapter.recipe = {"loss_reduction": "sum"}
  assert run_finetuning._microbatching(cfg, adapter, np.ones(2))["loss_reduction"] == "sum"
  assert (
    run_finetuning._microbatching(_cfg("task=sst2,size=tiny", microbatch_tokens=0), adapter, None)
    == {}
  )
