"""Tests of `electra-jax glue-report` (electra_jax/glue_report.py).

Fake workdirs whose results.json the tests write, checked against medians and
GLUE averages computed here by hand; the error lines through `cli.main`; and
one end-to-end report over two real tiny fine-tuning runs.
"""

import json
import os
import statistics

import numpy as np
import pytest

from electra_jax import cli, glue_report
from electra_jax.errors import ElectraError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "experiments", "configs", "glue.py")
SAMPLE = os.path.join(REPO, "electra_jax", "sample_data")


def _write_run(path, task, last, best=None, *, status="complete", config=None, seed0=0, **extra):
  """A fine-tuning workdir with a results.json: `last`/`best` are per-seed metric dicts."""
  best = best or last
  seeds = {
    str(seed0 + k): {"status": "complete", "best_step": 10, "best": b, "last": f, "epochs": {}}
    for k, (f, b) in enumerate(zip(last, best))
  }
  # A `metrics` headline that disagrees with both selections: the report must not read it.
  names = sorted(last[0])
  bogus = {n: {"median": -1.0, "mean": -1.0, "std": 0.0, "values": [-1.0]} for n in names}
  results = {
    "status": status,
    "task": task,
    "primary_metric": names[0] if names else None,
    "metrics": bogus,
    "seeds": seeds,
    "config": config or {"task": task, "learning_rate": 1e-4, "seed": seed0},
    **extra,
  }
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "results.json"), "w") as f:
    json.dump(results, f)
  return str(path)


COLA = [0.50, 0.58, 0.54]  # MCC, final model
COLA_BEST = [0.60, 0.61, 0.62]
SST2 = [0.90, 0.92, 0.91, 0.95]  # even count: median is the mean of the middle two
STSB = [0.85, 0.87, 0.86]  # Spearman
MNLI_M = [0.80, 0.82, 0.81]
MNLI_MM = [0.79, 0.83, 0.78]


@pytest.fixture
def runs(tmp_path):
  """Four GLUE tasks (MNLI with both dev splits) and a custom task."""
  return {
    "cola": _write_run(
      tmp_path / "cola",
      "cola",
      [{"mcc": v, "accuracy": 0.7} for v in COLA],
      [{"mcc": v, "accuracy": 0.7} for v in COLA_BEST],
    ),
    "sst2": _write_run(tmp_path / "sst2", "sst2", [{"accuracy": v} for v in SST2]),
    "stsb": _write_run(tmp_path / "stsb", "stsb", [{"pearson": 0.5, "spearman": v} for v in STSB]),
    "mnli": _write_run(
      tmp_path / "mnli",
      "mnli",
      [
        {"dev_matched/accuracy": m, "dev_mismatched/accuracy": mm} for m, mm in zip(MNLI_M, MNLI_MM)
      ],
    ),
    "custom": _write_run(
      tmp_path / "mine",
      "custom",
      [{"accuracy": v, "macro_f1": 0.1, "mcc": 0.2} for v in (0.6, 0.7)],
    ),
  }


def test_rows_medians_and_glue_score(runs):
  rows = glue_report.collect(list(runs.values()))
  by_task = {r.task: r for r in rows}
  # Paper order, MNLI split into matched / mismatched, custom last.
  assert [r.task for r in rows] == ["cola", "sst2", "stsb", "mnli-m", "mnli-mm", "custom"]
  assert by_task["cola"].metric == "mcc" and by_task["stsb"].metric == "spearman"
  assert by_task["mnli-m"].key == "dev_matched/accuracy"
  assert by_task["cola"].median == pytest.approx(0.54)
  assert by_task["sst2"].median == pytest.approx((0.91 + 0.92) / 2)
  assert by_task["sst2"].std == pytest.approx(float(np.std(SST2)))
  assert (by_task["sst2"].minimum, by_task["sst2"].maximum) == (0.90, 0.95)
  assert by_task["mnli-m"].median == pytest.approx(0.81)
  assert by_task["mnli-mm"].median == pytest.approx(0.79)
  assert by_task["sst2"].seeds == (0, 1, 2, 3)
  assert not by_task["mnli-mm"].counted and not by_task["custom"].counted
  assert by_task["custom"].metric == "accuracy" and by_task["custom"].median == pytest.approx(0.65)

  summary = glue_report.glue_summary(rows)
  by_hand = (0.54 + 0.915 + 0.86 + 0.81) / 4  # CoLA, SST-2, STS-B, MNLI-m medians
  assert summary["score"] == pytest.approx(by_hand)
  assert summary["missing"] == ["mrpc", "qqp", "qnli", "rte"]
  assert glue_report.to_json(rows)["glue_score"] == pytest.approx(100 * by_hand)


def test_dev_selected_reads_each_seeds_best_epoch(runs):
  rows = glue_report.collect([runs["cola"]], dev_selected=True)
  assert rows[0].median == pytest.approx(statistics.median(COLA_BEST))
  assert rows[0].selection == glue_report.DEV_SELECTED
  assert "dev-selected" in glue_report.format_table(rows)
  assert "final model" in glue_report.format_table(glue_report.collect([runs["cola"]]))


def test_plain_and_markdown_output(runs):
  rows = glue_report.collect(list(runs.values()))
  plain = glue_report.format_table(rows)
  lines = plain.splitlines()
  assert lines[0].startswith("GLUE dev, final model of each seed")
  cola = next(line for line in lines if line.startswith("CoLA"))
  assert cola.split()[:6] == ["CoLA", "MCC", "54.0", "50.0–58.0", "3.3", "3"]
  mm = next(line for line in lines if line.startswith("MNLI-mm"))
  assert "not in the GLUE score: the paper averages MNLI matched only" in mm
  assert "not in the GLUE score: not a GLUE task" in next(
    line for line in lines if line.startswith("custom")
  )
  by_hand = 100 * (0.54 + 0.915 + 0.86 + 0.81) / 4
  assert f"GLUE score: {by_hand:.1f} (the paper's: mean of the medians, 4 of 8 tasks" in plain
  assert "missing from the average: MRPC, QQP, QNLI, RTE" in plain
  assert "|" not in plain

  md = glue_report.format_table(rows, markdown=True)
  assert "| CoLA | MCC | 54.0 | 50.0–58.0 | 3.3 | 3 |" in md
  assert "| SST-2 | Acc | 91.5 | 90.0–95.0 |" in md
  # The paper's layout: tasks as columns, missing ones as a dash, GLUE score last.
  assert "| CoLA | SST-2 | MRPC | STS-B | QQP | MNLI | QNLI | RTE | GLUE |" in md
  assert f"| 54.0 | 91.5 | – | 86.0 | – | 81.0 | – | – | {by_hand:.1f} (4/8) |" in md


def test_wnli_shown_not_counted_and_no_glue_task(tmp_path):
  wnli = _write_run(tmp_path / "wnli", "wnli", [{"accuracy": 0.56}])
  custom = _write_run(tmp_path / "c", "custom", [{"spearman": 0.3, "pearson": 0.2}])
  rows = glue_report.collect([custom, wnli])
  assert [r.task for r in rows] == ["wnli", "custom"]
  assert rows[0].note == "the paper leaves WNLI out"
  assert glue_report.glue_summary(rows)["score"] is None
  assert "GLUE score: – (no GLUE task" in glue_report.format_table(rows)


def test_pool_seeds(tmp_path):
  a = _write_run(tmp_path / "rte-a", "rte", [{"accuracy": v} for v in (0.6, 0.7)])
  b = _write_run(tmp_path / "rte-b", "rte", [{"accuracy": 0.65}], seed0=2)
  rows = glue_report.collect([a, b], pool_seeds=True)
  assert rows[0].seeds == (0, 1, 2) and rows[0].median == pytest.approx(0.65)
  assert rows[0].run_dirs == (a, b)
  with pytest.raises(ElectraError, match="appears twice.*--pool-seeds"):
    glue_report.collect([a, b])
  assert glue_report.collect([a, a + "/"])[0].seeds == (0, 1)  # one directory named twice
  same_seed = _write_run(tmp_path / "rte-c", "rte", [{"accuracy": 0.6}])
  with pytest.raises(ElectraError, match="seed 0 is in both"):
    glue_report.collect([a, same_seed], pool_seeds=True)
  other_lr = _write_run(
    tmp_path / "rte-d", "rte", [{"accuracy": 0.6}], seed0=5, config={"learning_rate": 3e-4}
  )
  with pytest.raises(ElectraError, match="different configs \\(learning_rate\\)"):
    glue_report.collect([a, other_lr], pool_seeds=True)


def _error_line(capsys, argv) -> str:
  assert cli.main(["glue-report", *argv]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("electra-jax: error: "), err
  return err


def test_error_lines(tmp_path, capsys, runs):
  assert "no such directory" in _error_line(capsys, [str(tmp_path / "nope")])
  empty = tmp_path / "empty"
  empty.mkdir()
  assert "is not a fine-tuning workdir (no results.json)" in _error_line(capsys, [str(empty)])
  running = tmp_path / "running"
  (running / "seed_0").mkdir(parents=True)
  assert "not finished" in _error_line(capsys, [str(running)])

  stopped = _write_run(
    tmp_path / "stopped",
    "rte",
    [{"accuracy": 0.6}],
    status="stopped",
    stopped="SIGTERM",
    seed=1,
    step=40,
  )
  err = _error_line(capsys, [runs["cola"], stopped])
  assert "the rte fine-tuning is not complete (stopped by SIGTERM in seed 1 at step 40)" in err

  again = _write_run(tmp_path / "cola2", "cola", [{"mcc": 0.5, "accuracy": 0.7}])
  err = _error_line(capsys, [runs["cola"], runs["sst2"], again])
  assert f"cola appears twice: {runs['cola']} and {again}" in err

  seed_dir = tmp_path / "ft" / "seed_0"
  seed_dir.mkdir(parents=True)
  (seed_dir / "results.json").write_text(
    json.dumps({"status": "complete", "seed": 0, "summary": {}})
  )
  assert "is one seed of a fine-tuning run; pass its parent" in _error_line(capsys, [str(seed_dir)])

  pretrain = tmp_path / "pt"
  pretrain.mkdir()
  (pretrain / "results.json").write_text(json.dumps({"status": "complete", "step": 300}))
  assert "a pretraining run?" in _error_line(capsys, [str(pretrain)])

  torn = tmp_path / "torn"
  torn.mkdir()
  (torn / "results.json").write_text('{"status": "comp')
  assert "not readable as JSON" in _error_line(capsys, [str(torn)])

  no_dev = _write_run(tmp_path / "nodev", "custom", [{}, {}])
  assert "has no dev metric" in _error_line(capsys, [str(no_dev)])


def test_cli_outputs(capsys, runs):
  assert cli.main(["glue-report", runs["cola"], runs["sst2"], "--markdown"]) == 0
  assert "| CoLA | MCC | 54.0 |" in capsys.readouterr().out
  assert cli.main(["glue-report", runs["cola"], "--json", "--dev-selected"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["selection"] == "dev_selected"
  assert report["rows"][0]["median"] == pytest.approx(61.0)
  assert report["rows"][0]["values"] == pytest.approx([60.0, 61.0, 62.0])


def test_help(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["glue-report", "--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert "--dev-selected" in out and "example" in out


def test_end_to_end_two_real_runs(tmp_path, capsys, shared_data):
  """Two tiny fine-tuning jobs (GLUE RTE, 2 seeds; custom SST-2 excerpt) → the report."""
  if not (shared_data / "glue_data" / "RTE" / "dev.tsv").exists():
    pytest.skip(f"RTE not found under {shared_data / 'glue_data'}")
  tiny = [
    "--config.model.embedding_size=16",
    "--config.model.hidden_size=32",
    "--config.model.num_hidden_layers=2",
    "--config.model.num_attention_heads=2",
    "--config.model.intermediate_size=64",
    "--config.max_seq_length=32",
    "--config.batch_size=16",
    "--config.eval_batch_size=128",
    "--config.epochs=1",
    "--config.max_train_examples=64",
    "--config.checkpoint_every=1000",
    "--no-progress",
  ]
  rte, custom = str(tmp_path / "rte"), str(tmp_path / "sst2-excerpt")
  args = ["finetune", "--config", f"{CONFIG}:task=rte,size=tiny", "--workdir", rte, "--seeds", "2"]
  assert cli.main([*args, f"--config.data_dir={shared_data / 'glue_data'}", *tiny]) == 0
  args = ["finetune", "--config", f"{CONFIG}:task=custom,size=tiny", "--workdir", custom]
  dev = tmp_path / "dev.tsv"  # the excerpt's first 96 dev rows: evaluation time is not the point
  with open(os.path.join(SAMPLE, "sst2_dev_sample.tsv"), encoding="utf-8") as f:
    dev.write_text("".join(f.readlines()[:97]), encoding="utf-8")
  files = [
    f"--config.train_file={SAMPLE}/sst2_train_sample.tsv",
    f"--config.dev_file={dev}",
    "--config.text_column=sentence",
  ]
  assert cli.main([*args, *files, *tiny]) == 0
  capsys.readouterr()

  assert cli.main(["glue-report", rte, custom]) == 0
  out = capsys.readouterr().out
  print(out)  # shown with -s: the table the two runs give
  results = json.load(open(os.path.join(rte, "results.json")))
  finals = [results["seeds"][s]["last"]["accuracy"] for s in sorted(results["seeds"])]
  median = 100 * float(np.median(finals))
  rte_line = next(line for line in out.splitlines() if line.startswith("RTE"))
  assert rte_line.split()[:3] == ["RTE", "Acc", f"{median:.1f}"]
  assert rte_line.split()[5] == "2"
  assert f"GLUE score: {median:.1f} (the paper's: mean of the medians, 1 of 8 tasks" in out
  assert "custom (sst2-excerpt)" in out and "not a GLUE task" in out
