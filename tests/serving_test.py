"""Tests for `serving`: the exported-model loader (no model or training code) and length buckets."""

import json
import os
import subprocess
import sys

import numpy as np
from tiny_classifier import LABELS, REPO

from electra_jax import export, predict, serving

_BLOCKED_LOADER = """
import json, sys
for name in ("flax", "optax", "orbax", "orbax.checkpoint", "electra_jax.model",
             "electra_jax.pretrained", "electra_jax.convert", "electra_jax.train",
             "electra_jax.predict", "electra_jax.export", "torch", "transformers"):
  sys.modules[name] = None  # any import of these now fails
from electra_jax.serving import load_exported
rows = load_exported(sys.argv[1]).predict(json.loads(sys.argv[2]))
print(json.dumps(rows))
"""


def test_exported_loader_runs_without_model_or_training_code(classifier, tmp_path):
  out = export.export_model(classifier, tmp_path / "exported")
  texts = ["a gripping film", "dull", ""]
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
    [sys.executable, "-c", _BLOCKED_LOADER, out, json.dumps(texts)],
    capture_output=True,
    text=True,
    env=env,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  rows = json.loads(proc.stdout.strip().splitlines()[-1])
  live = predict.load_predictor(classifier).predict(texts)
  assert rows[2] == live[2] == {"error": "empty input"}
  for a, b in zip(live[:2], rows[:2]):
    np.testing.assert_allclose(
      [a["probabilities"][k] for k in LABELS], [b["probabilities"][k] for k in LABELS], atol=1e-5
    )


def test_bucket_lengths():
  assert [serving.bucket_length(n, 128) for n in (1, 16, 17, 33, 100, 128)] == [
    16,
    16,
    32,
    64,
    128,
    128,
  ]
  assert serving.bucket_length(20, 24) == 24
