"""What both sides of `electra-jax bench` share: the spec, the configs, the synthetic batches, the meters.

Imports neither jax nor torch at module level: `bench` (the JAX side) and
`bench_torch` (the HF side) both build on it.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys

from electra_jax.errors import ElectraError

WORKLOADS = ("pretrain", "finetune", "inference")
SIZES = ("tiny", "small", "base", "large")
# Alternating turns of the two sides with --compare-torch.
ROUNDS = 5
ROUND_WARMUP = 1  # untimed steps opening each side's turn in a round (bench.py)
# BERT uncased vocabulary (the bundled `sample_data/vocab.txt`): the special ids
# the masking must never pick, and the first id of an ordinary word piece.
VOCAB_SIZE = 30522
CLS_ID, SEP_ID, PAD_ID, MASK_ID = 101, 102, 0, 103
FIRST_WORD_ID = 999
NUM_LABELS = 2
_BATCH_POOL = 4  # distinct synthetic batches, cycled

_CONFIG_DIR = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "configs"
)


@dataclasses.dataclass(frozen=True)
class Spec:
  """What to benchmark; JSON-serialisable (it travels to the worker processes)."""

  workload: str = "inference"
  size: str = "small"
  batch: int = 8
  seq: int = 128
  steps: int = 10
  warmup: int = 2
  seed: int = 0
  overrides: tuple[str, ...] = ()
  torch_threads: int = 0  # 0: one per usable core
  # inference / finetune: tokens per micro-batch on CPU (electra_jax.inference, train); -1 the
  # default, 0 off.
  microbatch_tokens: int = -1
  # Use the persistent compilation cache (compile_s is then a cache load on a hit).
  compilation_cache: bool = False

  def check(self) -> None:
    """Raises `ElectraError` (one line) for a value the benchmark cannot run."""
    if self.workload not in WORKLOADS:
      raise ElectraError(f"--workload {self.workload!r}: choose one of {', '.join(WORKLOADS)}")
    if self.size not in SIZES:
      raise ElectraError(f"--size {self.size!r}: choose one of {', '.join(SIZES)}")
    for name in ("batch", "steps", "warmup"):
      if getattr(self, name) < (0 if name == "warmup" else 1):
        raise ElectraError(f"--{name} must be >= {0 if name == 'warmup' else 1}")
    if not 8 <= self.seq <= 512:
      raise ElectraError(f"--seq {self.seq}: use a length from 8 to 512 (the position table)")
    if self.torch_threads < 0:
      raise ElectraError("--torch-threads must be >= 0")
    if self.microbatch_tokens < -1:
      raise ElectraError("--microbatch-tokens must be >= 0 (0: off)")
    bad = [o for o in self.overrides if not o.startswith("--config.")]
    if bad:
      raise ElectraError(f"unrecognized arguments: {' '.join(bad)}")

  @property
  def tokens(self) -> int:
    return self.batch * self.seq


def load_config(spec: Spec):
  """The experiment config the workload runs (pretrain.py or glue.py for sst2, standard recipe)."""
  from electra_jax import experiment

  if spec.workload == "pretrain":
    path = os.path.join(_CONFIG_DIR, f"pretrain.py:size={spec.size}")
    overrides = list(spec.overrides)
  else:
    path = os.path.join(_CONFIG_DIR, f"glue.py:task=sst2,size={spec.size}")
    overrides = ["--config.recipe=standard", *spec.overrides]
  if not os.path.exists(path.split(":")[0]):
    raise ElectraError(
      f"{path.split(':')[0]} not found: `electra-jax bench` runs from a source checkout"
    )
  return experiment.load_config(path, overrides)


def model_kwargs(cfg) -> dict:
  """Architecture keys of `cfg.model` (HF `ElectraConfig` names), plus the vocabulary."""
  kw = dict(cfg.model.to_dict(), vocab_size=VOCAB_SIZE, pad_token_id=PAD_ID)
  if "dropout" in cfg:  # fine-tuning configs set both dropouts with one key
    kw.update(
      hidden_dropout_prob=float(cfg.dropout), attention_probs_dropout_prob=float(cfg.dropout)
    )
  return kw


def max_predictions(cfg, seq: int) -> int:
  from electra_jax import pretraining

  return int(cfg.max_predictions_per_seq) or pretraining.max_predictions_per_seq(
    float(cfg.mask_prob), seq
  )


def generator_shape(cfg) -> dict:
  """The generator's hidden / heads / FFN (the official `get_generator_config`)."""
  hidden = int(round(int(cfg.model.hidden_size) * float(cfg.generator_hidden_size)))
  return dict(
    hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=max(1, hidden // 64)
  )


def synthetic_batches(spec: Spec, count: int = _BATCH_POOL) -> list[dict]:
  """`[CLS] a [SEP] b [SEP]` rows with a random split point, no padding (numpy int32)."""
  import numpy as np

  rng = np.random.default_rng(spec.seed)
  out = []
  for _ in range(count):
    b, length = spec.batch, spec.seq
    ids = rng.integers(FIRST_WORD_ID, VOCAB_SIZE, size=(b, length), dtype=np.int32)
    segment_ids = np.zeros((b, length), np.int32)
    ids[:, 0] = CLS_ID
    ids[:, -1] = SEP_ID
    for row in range(b):
      split = int(rng.integers(2, length - 2))
      ids[row, split] = SEP_ID
      segment_ids[row, split + 1 :] = 1
    out.append(
      {
        "input_ids": ids,
        "input_mask": np.ones((b, length), np.int32),
        "segment_ids": segment_ids,
        "labels": rng.integers(0, NUM_LABELS, size=(b,), dtype=np.int32),
      }
    )
  return out


def usage() -> tuple[float, float, int]:
  """(user + system CPU s, system CPU s, minor page faults) of this process (all threads) so far."""
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime, r.ru_stime, r.ru_minflt


def usage_since(before: tuple[float, float, int]) -> tuple[float, float, int]:
  """What `usage()` grew by since `before`: one step's CPU, kernel CPU and page faults."""
  return tuple(now - then for then, now in zip(before, usage(), strict=True))


def usage_lists(samples: list[tuple[float, float, int]]) -> dict:
  """Per-step samples of `usage_since` as the report's `cpu_times`, `sys_times`, `page_faults`."""
  return {
    "cpu_times": [s[0] for s in samples],
    "sys_times": [s[1] for s in samples],
    "page_faults": [s[2] for s in samples],
  }


def peak_rss_mib() -> float:
  """This process's peak resident set size so far (`ru_maxrss`), MiB."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1
