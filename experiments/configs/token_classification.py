"""Token classification config: `--config experiments/configs/token_classification.py:size=small`.

NER or chunking on CoNLL column files (`electra_jax/tasks/token_classification.py`):

    electra-jax finetune --config experiments/configs/token_classification.py:size=small \
      --workdir W --config.train_file=train.txt --config.dev_file=dev.txt

The keys fine-tuning shares with every task (model, optimizer, seeds, mesh,
recipe switches) are `glue.py`'s, with its values for `size`; this file drops
the ones sentence classification alone uses and adds the CoNLL ones. The
default recipe is the official one (the official code fine-tunes CoNLL-2000
chunking with it); the head is always HF's token head. The argument takes
`size` only; every key can be overridden with `--config.<key>=<value>`.
"""

from electra_jax import config as config_lib
from electra_jax import experiment


def get_config(arg=None):
  """Returns the token-classification ConfigDict for `arg` (e.g. "size=small")."""
  args = experiment.parse_arg(arg, {"size": "small"}, choices={"size": config_lib.SIZES})
  c = experiment.finetuning_base_config(__file__, args["size"], keep=())
  c.task = "token_classification"
  # CoNLL column files: word first, tag in `tag_column` (0-based; -1 = last column).
  c.tag_column = -1
  # A dev tag never seen in training: "error", or "keep" (scored, never predicted; counted in the log).
  c.unseen_tags = "error"
  c.recipe = "official"
  return c
