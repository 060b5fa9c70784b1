"""Fine-tune the same HF ELECTRA checkpoint with electra-jax and with HF PyTorch; compare dev accuracy.

Both sides use the `standard` recipe (what HF Trainer users get): HF's two-layer
classification head, AdamW (bias-corrected, eps 1e-6, weight decay 0.01 except
biases and LayerNorm), 10 % linear warmup then linear decay, mean loss, global
norm clip 1.0, dropout 0.1, batch 32. They see the same token ids (electra-jax's
tokenizer and features) and the same batches in the same order
(`run_finetuning.EpochBatches` with the seed); what differs is the framework,
the head's random init and the dropout masks. Each side runs several seeds; the
report gives the final model's dev accuracy per seed and the medians.

  python experiments/hf_comparison/finetune_vs_hf.py --model HF_DIR --workdir /tmp/cmp

Default data: the bundled SST-2 excerpt (4,000 train / 400 dev sentences).
Needs the test extra (torch, transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(REPO, "electra_jax", "sample_data")


def _args(argv):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--model", required=True, help="HF ElectraForPreTraining/ElectraModel directory")
  p.add_argument(
    "--workdir", required=True, help="output directory (electra-jax runs, report.json)"
  )
  p.add_argument("--train", default=os.path.join(SAMPLE, "sst2_train_sample.tsv"))
  p.add_argument("--dev", default=os.path.join(SAMPLE, "sst2_dev_sample.tsv"))
  p.add_argument("--text-column", default="sentence")
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--epochs", type=int, default=4)
  p.add_argument("--learning-rate", type=float, default=3e-4)
  p.add_argument("--max-seq-length", type=int, default=64)
  p.add_argument("--batch-size", type=int, default=32)
  return p.parse_args(argv)


def _electra_jax(args) -> list[float]:
  from electra_jax import experiment, run_finetuning

  cfg = experiment.load_config(
    os.path.join(REPO, "experiments", "configs", "glue.py") + ":task=custom,size=tiny",
    [
      f"--config.train_file={args.train}",
      f"--config.dev_file={args.dev}",
      f"--config.text_column={args.text_column}",
      f"--config.init_from={args.model}",
      "--config.recipe=standard",
      f"--config.epochs={args.epochs}",
      f"--config.learning_rate={args.learning_rate}",
      f"--config.max_seq_length={args.max_seq_length}",
      f"--config.batch_size={args.batch_size}",
      f"--config.seeds={args.seeds}",
      "--config.layerwise_lr_decay=1.0",
      "--config.log_every=100",
    ],
  )
  summary = run_finetuning.run(cfg, os.path.join(args.workdir, "electra_jax"), progress=False)
  return [summary["seeds"][s]["last"]["accuracy"] for s in sorted(summary["seeds"])]


def _hf_one_seed(args, feats, seed: int) -> float:
  import torch
  import transformers
  from torch.nn import functional as F

  from electra_jax.run_finetuning import EpochBatches

  torch.manual_seed(seed)
  model = transformers.ElectraForSequenceClassification.from_pretrained(args.model, num_labels=2)
  no_decay = [p for n, p in model.named_parameters() if "bias" in n or "LayerNorm" in n]
  decay = [p for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
  optimizer = torch.optim.AdamW(
    [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
    lr=args.learning_rate,
    eps=1e-6,
  )
  data = EpochBatches(feats["train"], args.batch_size, seed)
  total = args.epochs * data.steps_per_epoch
  scheduler = transformers.get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
  model.train()
  for _ in range(total):
    batch = next(data)
    logits = model(
      input_ids=torch.as_tensor(batch["input_ids"], dtype=torch.long),
      attention_mask=torch.as_tensor(batch["input_mask"], dtype=torch.long),
      token_type_ids=torch.as_tensor(batch["segment_ids"], dtype=torch.long),
    ).logits
    loss = F.cross_entropy(logits, torch.as_tensor(batch["labels"], dtype=torch.long))
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
  model.eval()
  dev = feats["dev"]
  with torch.no_grad():
    logits = model(
      input_ids=torch.as_tensor(dev["input_ids"], dtype=torch.long),
      attention_mask=torch.as_tensor(dev["input_mask"], dtype=torch.long),
      token_type_ids=torch.as_tensor(dev["segment_ids"], dtype=torch.long),
    ).logits.numpy()
  return float(np.mean(logits.argmax(-1) == dev["labels"]))


def _features(args):
  from electra_jax import tokenization
  from electra_jax.tasks import custom, features

  config = custom.CustomDataConfig(text_column=args.text_column)
  _, label_map, splits = custom.load_custom_task(config, args.train, args.dev, None)
  ids = {label: i for i, label in enumerate(label_map.labels)}
  tok = tokenization.load_tokenizer(args.model)
  return {k: features.featurize(v, tok, args.max_seq_length, ids) for k, v in splits.items()}


def _stats(values):
  return {
    "values": values,
    "median": statistics.median(values),
    "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
  }


def main(argv=None) -> int:
  args = _args(argv)
  os.makedirs(args.workdir, exist_ok=True)
  import torch

  torch.set_num_threads(2)
  t0 = time.time()
  ours = _electra_jax(args)
  t1 = time.time()
  feats = _features(args)
  theirs = [_hf_one_seed(args, feats, seed) for seed in range(args.seeds)]
  t2 = time.time()
  report = {
    "model": os.path.abspath(args.model),
    "data": {"train": args.train, "dev": args.dev},
    "recipe": "standard",
    "electra_jax": {**_stats(ours), "seconds": round(t1 - t0, 1)},
    "hf_pytorch": {**_stats(theirs), "seconds": round(t2 - t1, 1)},
    "args": vars(args),
  }
  report["median_difference"] = report["electra_jax"]["median"] - report["hf_pytorch"]["median"]
  with open(os.path.join(args.workdir, "report.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  print(
    json.dumps({k: report[k] for k in ("electra_jax", "hf_pytorch", "median_difference")}, indent=2)
  )
  return 0


if __name__ == "__main__":
  sys.path.insert(0, REPO)
  sys.exit(main())
