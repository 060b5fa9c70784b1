"""ELECTRA pretraining config: `--config experiments/configs/pretrain.py:size=small`.

Presets follow the paper's Table 6 (Clark et al., 2020) for `small`, `base`
and `large`; `tiny` is for CPU smoke runs and tests. The model shape of each
size comes from `electra_jax.config.SIZES`. The argument is a comma
list of `key=value` (`size=tiny,objective=mlm`; any other key is an error).
Every key is documented below; override any of them with
`--config.<key>=<value>`.
"""

import ml_collections

from electra_jax import config as config_lib
from electra_jax import experiment

# The model shape of each size is electra_jax.config.SIZES; the training recipe is here.
# size: (lr, batch, seq, steps, mask_prob, generator fraction)
_RECIPES = {
  "tiny": (5e-4, 16, 128, 300, 0.15, 0.25),
  "small": (5e-4, 128, 128, 1_000_000, 0.15, 0.25),
  "base": (2e-4, 256, 512, 766_000, 0.15, 1 / 3),
  "large": (2e-4, 2048, 512, 400_000, 0.25, 0.25),
}


def get_config(arg=None):
  """Returns the pretraining ConfigDict for `arg` (e.g. "size=small")."""
  args = experiment.parse_arg(
    arg, {"size": "small", "objective": "electra"}, choices={"size": config_lib.SIZES}
  )
  size = args["size"]
  lr, batch, seq, steps, mask_prob, gen = _RECIPES[size]

  c = ml_collections.ConfigDict()
  c.size = size
  # The training objective: electra (replaced-token detection), electra_15
  # (discriminator loss on masked positions only), replace_mlm,
  # all_tokens_mlm, or mlm (BERT-style masked LM baseline).
  c.objective = args["objective"]

  # Discriminator architecture (HF ElectraConfig names). The vocabulary size
  # always comes from the tokenizer.
  c.model = ml_collections.ConfigDict(
    dict(
      **config_lib.shape(size),
      hidden_act="gelu",
      hidden_dropout_prob=0.1,
      attention_probs_dropout_prob=0.1,
      max_position_embeddings=512,
      type_vocab_size=2,
      layer_norm_eps=1e-12,
      initializer_range=0.02,
    )
  )
  # Generator width as a fraction of the discriminator's (1.0 reproduces ELECTRA-Small++).
  c.generator_hidden_size = gen
  c.disc_weight = 50.0  # lambda in the paper: weight of the discriminator loss
  c.gen_weight = 1.0
  c.mask_prob = mask_prob
  # Positions masked per sequence at most; 0 means int((mask_prob + 0.005) * max_seq_length).
  c.max_predictions_per_seq = 0
  c.temperature = 1.0  # Gumbel sampling temperature

  # Data: a directory written by `electra-jax prepare-pretraining`, or raw
  # text files / globs (comma separated) prepared on the fly into WORKDIR/data.
  c.data = ""
  # Tokenizer (vocab.txt, tokenizer dir, or SentencePiece model); empty means
  # the one saved in the prepared data (DATA/tokenizer), else init_from's,
  # else the bundled BERT uncased vocab.
  c.tokenizer = ""
  c.max_seq_length = seq
  c.shuffle = True

  # Optimisation (paper Table 6 / official run_pretraining.py).
  c.total_steps = steps
  c.warmup_steps = 10_000 if size != "tiny" else 30
  c.batch_size = batch  # global batch size (all hosts)
  c.learning_rate = lr
  c.weight_decay = 0.01
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999
  c.adam_eps = 1e-6
  c.clip_norm = 1.0
  c.official_adam = False  # True: AdamW without bias correction, as the TF code
  c.grad_accum_steps = 1

  c.seed = 0
  # Resuming a workdir with a config that changes the run's math (learning
  # rate, steps, batch, seed, data, ...) is refused; list the keys you mean to
  # change here (comma separated, e.g. "total_steps,learning_rate").
  c.allow_changed = ""
  c.log_every = 50 if size != "tiny" else 10
  c.checkpoint_every = 5000 if size != "tiny" else 100
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  # Start from converted weights: an electra-jax or HF discriminator directory
  # (and optionally `init_from_generator` for the generator).
  c.init_from = ""
  c.init_from_generator = ""

  # Parallelism: mesh axis sizes (-1 = all remaining devices) and the logical
  # axis rule preset: dp (data parallel), fsdp, fsdp_tp.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
  c.sharding_rules = "dp"
  c.distributed = False  # call jax.distributed.initialize() (multi-host TPU pods)
  # Only needed outside auto-detected clusters (Cloud TPU, SLURM, Open MPI):
  # "host:port" of process 0, the number of processes, and this process's id.
  # Empty / 0 / -1 leave them to JAX's detection (or JAX_COORDINATOR_ADDRESS).
  c.coordinator_address = ""
  c.num_processes = 0
  c.process_id = -1

  # auto: bfloat16 on GPU/TPU, float32 on CPU; or float32 / bfloat16 / float16 (params,
  # optimizer state, softmax and LayerNorm statistics stay float32).
  c.compute_dtype = "auto"
  c.remat = False
  c.scan_layers = False

  # After training, write HF-format copies of the discriminator and the
  # generator to WORKDIR/export/{discriminator,generator}.
  c.export_hf = True
  return c
