"""Fine-tuning config: `--config experiments/configs/glue.py:task=sst2,size=small`.

The recipe of the paper (Clark et al., 2020, Appendix A / Table 7) and the
official `configure_finetuning.py`: AdamW, layer-wise LR decay, 10 % warmup
then linear decay, batch 32, 3 epochs (10 for RTE and STS-B), max length 128,
dropout 0.1. `task` is a GLUE task name (cola, sst2, mrpc, stsb, qqp, mnli,
qnli, rte, wnli), spelt exactly (`sst-2` is an error suggesting `sst2`), or
`custom` for the user's own CSV/TSV/JSONL files. The argument is a comma list
of `key=value` (`task`, `size`; any other key is an error); every key below
can be overridden with `--config.<key>=<value>`.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from electra_jax import config as config_lib
from electra_jax import experiment, validate
from electra_jax.errors import ElectraError

# size: (lr, layer-wise decay); the model shape is electra_jax.config.SIZES.
_RECIPES = {
  "tiny": (1e-3, 1.0),
  "small": (3e-4, 0.8),
  "base": (1e-4, 0.8),
  "large": (5e-5, 0.9),
}
# Fine-tuning `tiny` from scratch has always used twice the pretraining tiny's
# width; the from-scratch SST-2 / STS-B numbers in experiments/results/README.md
# (1d) and notebooks/03 were measured with it. With init_from the shape comes
# from the checkpoint and this does not apply.
_SHAPES = {
  **{size: config_lib.shape(size) for size in config_lib.SIZES},
  "tiny": {**config_lib.shape("tiny"), "embedding_size": 64, "hidden_size": 128},
}
_LONG_TASKS = ("rte", "stsb")  # 10 epochs in the paper, 3 for the rest


def get_config(arg=None):
  """Returns the fine-tuning ConfigDict for `arg` (e.g. "task=sst2,size=small")."""
  args = experiment.parse_arg(
    arg, {"task": "sst2", "size": "small"}, choices={"size": config_lib.SIZES}
  )
  size, task = args["size"], args["task"].lower()
  try:  # exact names only: the name also picks the epochs below
    validate.check_task_name(task)
  except ElectraError as e:
    raise ValueError(str(e)) from None
  lr, decay = _RECIPES[size]

  c = ml_collections.ConfigDict()
  c.size = size
  c.task = task
  # A GLUE-layout directory (CoLA/, SST-2/, ...), or empty for ../shared/data/glue_data.
  c.data_dir = ""
  # For task=custom: the user's files and columns.
  c.train_file = ""
  c.dev_file = ""
  c.test_file = ""
  c.text_column = "text"
  c.text_pair_column = ""
  c.label_column = "label"
  c.regression = False  # custom task: float labels, num_labels 1
  # Class weights for imbalanced labels: "" (none), "balanced", or a JSON dict {label: weight}.
  c.class_weights = ""
  # Train-time noise injection (probabilities per token); 0 disables each.
  c.augment = ml_collections.ConfigDict(
    dict(token_dropout=0.0, local_shuffle=0.0, random_token=0.0)
  )

  # Initialisation: an electra-jax checkpoint, a HF directory, or "" (scratch, using `model` below).
  c.init_from = ""
  # Tokenizer: empty means the one stored with init_from, else the bundled BERT uncased vocab.
  c.tokenizer = ""
  c.model = ml_collections.ConfigDict(
    dict(
      **_SHAPES[size],
      max_position_embeddings=512,
    )
  )
  c.dropout = 0.1  # hidden and attention dropout while fine-tuning

  # The recipe (electra_jax/recipes.py): "official" reproduces google-research/
  # electra's fine-tuning switch by switch (the paper's numbers), "standard" is
  # what HF Trainer users get. Each switch below is None = the recipe's value;
  # set it to override just that switch (results.json records the values used).
  c.recipe = "standard" if task == "custom" else "official"
  c.head = placeholder(str)  # "official" (dropout + one dense on [CLS]) or "hf" (two-layer)
  c.official_adam = placeholder(bool)  # Adam without bias correction
  c.official_schedule = placeholder(bool)  # lr · (1 − t/T) · min(1, t/warmup)
  c.llrd_official_off_by_one = placeholder(bool)  # the official layer-wise depths
  c.loss_reduction = placeholder(str)  # "sum" (official) or "mean" over the batch
  c.double_unordered = placeholder(bool)  # MRPC/STS-B: both sentence orders in training
  c.scale_regression = placeholder(bool)  # STS-B targets / 5, predictions × 5

  c.epochs = 10 if task in _LONG_TASKS else 3
  c.learning_rate = lr
  c.layerwise_lr_decay = decay  # 1.0 disables
  c.warmup_fraction = 0.1
  c.weight_decay = 0.01
  c.adam_eps = 1e-6
  c.clip_norm = 1.0
  c.batch_size = 32
  c.eval_batch_size = 128
  # Tokens per training micro-batch (gradients summed, one update: the batch's math, other
  # dropout draws): -1 = auto (1,024 on CPU, where it is ~1.3x faster at 32 x 128 and needs
  # ~40 % less memory; off on GPU/TPU), 0 = off. Only for losses summed/averaged per example.
  c.microbatch_tokens = -1
  c.max_seq_length = 128
  c.max_train_examples = 0  # 0 = all; otherwise a prefix (quick experiments)

  c.seed = 0
  c.seeds = 1  # number of seeds (seed, seed+1, ...); results report median/mean/std
  # Resuming a workdir with a config that changes the run's math (learning
  # rate, steps, batch, seed, data, ...) is refused; list the keys you mean to
  # change here (comma separated, e.g. "total_steps,learning_rate").
  c.allow_changed = ""
  c.log_every = 50
  c.checkpoint_every = 1000
  c.write_test_predictions = True  # GLUE leaderboard files in WORKDIR/test_predictions

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
  c.sharding_rules = "dp"
  c.compute_dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU (params stay float32)
  return c
