"""quickstart's closing lines: the commands to open the notebooks and the run's TensorBoard logs.

The stages themselves are stubbed (the real quickstart takes minutes; the
CLI end-to-end tests and the README's measured run cover it).
"""

import json
import logging
import os
import shlex

from electra_jax import predict, quickstart, run_finetuning, run_pretraining


def _stub_stages(monkeypatch):
  monkeypatch.setattr(
    run_pretraining,
    "run",
    lambda cfg, workdir, progress=True: {"status": "complete", "step": 3, "final_metrics": {}},
  )
  monkeypatch.setattr(
    run_finetuning,
    "run",
    lambda cfg, workdir, progress=True: {
      "status": "complete",
      "metrics": {"accuracy": {"median": 0.5}},
    },
  )

  def fake_predict(model, inputs, outputs, progress=True):
    with open(inputs, encoding="utf-8") as f, open(outputs, "w", encoding="utf-8") as out:
      for _ in f:
        out.write(json.dumps({"label": "1", "probabilities": {"0": 0.4, "1": 0.6}}) + "\n")

  monkeypatch.setattr(predict, "predict_file", fake_predict)


def test_quickstart_ends_with_the_look_commands(tmp_path, monkeypatch, caplog):
  _stub_stages(monkeypatch)
  workdir = str(tmp_path / "quick start")
  with caplog.at_level(logging.INFO, logger="electra_jax.quickstart"):
    summary = quickstart.run(workdir, pretrain_steps=3, finetune_epochs=1, progress=False)
  assert summary["status"] == "complete"
  lines = [r.getMessage() for r in caplog.records if r.name == "electra_jax.quickstart"]
  assert [line.strip() for line in lines[-2:]] == quickstart.look_commands(workdir)
  assert "pip install -e '.[notebooks]'" in lines[-3]


def test_look_commands_name_the_notebooks_and_the_workdir(tmp_path, monkeypatch):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(quickstart.__file__)))
  monkeypatch.chdir(repo)
  workdir = str(tmp_path / "a run")
  jupyter, tensorboard = quickstart.look_commands(workdir)
  assert shlex.split(jupyter) == ["jupyter", "lab", "notebooks" + os.sep]
  assert shlex.split(tensorboard) == ["tensorboard", "--logdir", workdir]
  assert os.path.isdir(os.path.join(repo, "notebooks"))
