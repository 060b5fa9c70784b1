"""Multiple-choice config: `--config experiments/configs/multiple_choice.py:size=small`.

SWAG-style CSV/TSV/JSONL rows (`electra_jax/tasks/multiple_choice.py`):

    electra-jax finetune --config experiments/configs/multiple_choice.py:size=small \
      --workdir W --config.train_file=train.csv --config.dev_file=val.csv

The keys fine-tuning shares with every task (model, optimizer, seeds, mesh,
recipe switches) are `glue.py`'s, with its values for `size`; this file drops
the ones sentence classification alone uses and adds the column names. The
official ELECTRA code has no multiple-choice task: the default recipe is
`standard` (HF Trainer's), with HF's multiple-choice head. The argument takes
`size` only; every key can be overridden with `--config.<key>=<value>`.
"""

from electra_jax import config as config_lib
from electra_jax import experiment


def get_config(arg=None):
  """Returns the multiple-choice ConfigDict for `arg` (e.g. "size=small")."""
  args = experiment.parse_arg(arg, {"size": "small"}, choices={"size": config_lib.SIZES})
  c = experiment.finetuning_base_config(__file__, args["size"], keep=("label_column",))
  c.task = "multiple_choice"
  c.context_column = "sent1"  # first segment of every choice
  c.prefix_column = "sent2"  # put before each ending in the second segment; "" = none
  c.ending_columns = "ending0,ending1,ending2,ending3"  # comma list: one column per choice
  c.label_column = "label"  # index of the right ending (0-based); may be absent in test_file
  c.recipe = "standard"
  return c
