"""SQuAD config: `--config experiments/configs/squad.py:version=1.1,size=small`.

Question answering on the official SQuAD JSON files
(`electra_jax/tasks/squad_adapter.py`):

    electra-jax finetune --config experiments/configs/squad.py:version=1.1,size=small \
      --workdir W --config.train_file=train-v1.1.json --config.dev_file=dev-v1.1.json

The keys fine-tuning shares with every task (model, optimizer, seeds, mesh,
recipe switches) are `glue.py`'s; this file drops the ones sentence
classification alone uses and adds the SQuAD ones with the official
`configure_finetuning.py` values for "squad" tasks: max length 512, 2 epochs,
doc stride 128, question length 64, answer length 30, n-best 20, and its
learning rates per size (1e-4 small and base, 5e-5 large; layer-wise decay
0.8, 0.9 for large). The argument takes `version` (1.1 or 2.0) and `size`;
every key can be overridden with `--config.<key>=<value>`.
"""

from ml_collections.config_dict import placeholder

from electra_jax import config as config_lib
from electra_jax import experiment

# size: (lr, layer-wise decay), the official configure_finetuning.py (its
# `learning_rate` 1e-4 is not changed for small; large gets 5e-5 and 0.9).
# tiny is not an official size: glue.py's.
_RECIPES = {
  "tiny": (1e-3, 1.0),
  "small": (1e-4, 0.8),
  "base": (1e-4, 0.8),
  "large": (5e-5, 0.9),
}


def get_config(arg=None):
  """Returns the SQuAD ConfigDict for `arg` (e.g. "version=2.0,size=base")."""
  args = experiment.parse_arg(
    arg,
    {"version": "1.1", "size": "small"},
    choices={"version": ("1.1", "2.0"), "size": config_lib.SIZES},
  )
  c = experiment.finetuning_base_config(__file__, args["size"], keep=("head",))
  c.task = "squad"
  c.version = args["version"]
  c.recipe = "official"
  c.learning_rate, c.layerwise_lr_decay = _RECIPES[args["size"]]
  c.epochs = 2
  c.max_seq_length = 512
  c.doc_stride = 128
  c.max_query_length = 64
  c.max_answer_length = 30
  c.n_best_size = 20
  # SQuAD 2.0: "no answer" when the question's no-answer score exceeds this;
  # None = the head's default (official -2.75, HF 0.0).
  c.na_threshold = placeholder(float)
  # tfds data directory for `tfds:squad/v1.1:train`-style files ("": tfds's default).
  c.tfds_data_dir = ""
  return c
