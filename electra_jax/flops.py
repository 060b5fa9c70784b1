"""Analytic pretraining FLOPs, counted by the rules of the official `flops_computation.py`.

This is the count for *matching compute* between ELECTRA and MLM (the paper's
convention, used by `electra-jax reproduce cpu`). Its sibling
`electra_jax/bench_flops.py` counts the FLOPs a step *executes* (3 × forward,
sparse lookups) for achieved FLOP/s and MFU in `electra-jax bench`; the two
differ on purpose (see bench_flops.py's list of deviations) and are not
interchangeable.

google-research/electra's `flops_computation.py` is how the paper puts ELECTRA
and BERT "at equal compute" (Table 1, Figure 4). `TransformerHparams` below is
that code, ported term by term (the same constants, the same dict of terms,
including its quirks), so the counts here can be compared with the paper's.

Rules (the official comments, restated):

* an operation is a mathematical one: a matmul of (m×n)·(n×k) is 2mnk, an exp,
  add or compare is 1; GELU 8, softmax 5, layer norm 5, dropout 4 per element;
* the backward pass costs as much as the forward pass: training = 2 × forward;
* embedding lookups are dense (a one-hot row times the table: `2·e·v` per
  token) unless `sparse_embed_lookup=True`;
* an output softmax over the vocabulary runs only at the masked positions, a
  fraction `output_frac` of the tokens (the official script hard-codes
  0.15625 = 20/128; here it is `max_predictions / max_seq_length`, what the
  training code actually scores: 19/128 at mask_prob 0.15).

Per training step, with batch B, sequence length s, depth l, width h,
embedding size e, FFN width i, vocabulary v, p = output_frac:

    block(h, i) = s · [ 6h² + 3h + 2hs + 10·s·heads + 2hs + 2h² + h + 4h + h + 5
                        + 2hi + 8i + i + 2hi + h + 4h + h + 5h ]
    embed_in    = s · [ 2ev (dense lookup) + 2e(s + 2) + 2e + 5e + 4e
                        + (2he + h if e ≠ h) ]
    mlm_head    = p · s · [ 2ev + 2he + e + 8e + 5e + 5v + 2v ]
    rtd_head    = s · [ 2h² + h + 8h + 2h ]

    train_flops(model, head) = 2 · B · steps · (l · block + embed_in + head)

    ELECTRA = train_flops(discriminator, rtd_head) + train_flops(generator, mlm_head)
              (the generator counted with its own dense input lookup, as the official
              `get_electra_train_flops` does for tied embeddings: embedding size e)
    MLM     = train_flops(encoder, mlm_head)          (BERT: one model, full size)

(The `5` in `block` is the official `attn_output_layer_norm = LAYER_NORM_FLOPS *
attn_mul`, missing a factor h; kept so the numbers match the official ones; it
is negligible.)

Not counted, as in the official script: the generator's Gumbel sampling, the
construction of the corrupted input, the optimizer update.
"""

from __future__ import annotations

from electra_jax import objectives
from electra_jax.config import ElectraConfig
from electra_jax.errors import ElectraError

DROPOUT_FLOPS = 4
LAYER_NORM_FLOPS = 5
ACTIVATION_FLOPS = 8
SOFTMAX_FLOPS = 5


class TransformerHparams:
  """The official `flops_computation.TransformerHparams`, ported unchanged."""

  def __init__(
    self,
    h,
    l,  # noqa: E741 (the official name)
    s=512,
    v=30522,
    e=None,
    i=None,
    heads=None,
    head_size=None,
    output_frac=0.15625,
    sparse_embed_lookup=False,
    decoder=False,
  ):
    self.h = h
    self.l = l
    self.s = s
    self.v = v
    self.e = h if e is None else e
    self.i = h * 4 if i is None else i
    self.kqv = h if head_size is None else head_size * heads
    self.heads = max(h // 64, 1) if heads is None else heads
    self.output_frac = output_frac
    self.sparse_embed_lookup = sparse_embed_lookup
    self.decoder = decoder

  def get_block_flops(self):
    """Forward FLOPs of one transformer block over the whole sequence."""
    attn_mul = 2 if self.decoder else 1
    block_flops = dict(
      kqv=3 * 2 * self.h * self.kqv * attn_mul,
      kqv_bias=3 * self.kqv * attn_mul,
      attention_scores=2 * self.kqv * self.s * attn_mul,
      attn_softmax=SOFTMAX_FLOPS * self.s * self.heads * attn_mul,
      attention_dropout=DROPOUT_FLOPS * self.s * self.heads * attn_mul,
      attention_scale=self.s * self.heads * attn_mul,
      attention_weighted_avg_values=2 * self.h * self.s * attn_mul,
      attn_output=2 * self.h * self.h * attn_mul,
      attn_output_bias=self.h * attn_mul,
      attn_output_dropout=DROPOUT_FLOPS * self.h * attn_mul,
      attn_output_residual=self.h * attn_mul,
      attn_output_layer_norm=LAYER_NORM_FLOPS * attn_mul,
      intermediate=2 * self.h * self.i,
      intermediate_act=ACTIVATION_FLOPS * self.i,
      intermediate_bias=self.i,
      output=2 * self.h * self.i,
      output_bias=self.h,
      output_dropout=DROPOUT_FLOPS * self.h,
      output_residual=self.h,
      output_layer_norm=LAYER_NORM_FLOPS * self.h,
    )
    return sum(block_flops.values()) * self.s

  def get_embedding_flops(self, output=False):
    """Forward FLOPs of the input embeddings, or (output=True) the MLM output softmax."""
    embedding_flops = {}
    if output or (not self.sparse_embed_lookup):
      embedding_flops["main_multiply"] = 2 * self.e * self.v
    if not output:
      embedding_flops.update(
        dict(
          tok_type_and_position=2 * self.e * (self.s + 2),
          add_tok_type_and_position=2 * self.e,
          emb_layer_norm=LAYER_NORM_FLOPS * self.e,
          emb_dropout=DROPOUT_FLOPS * self.e,
        )
      )
    if self.e != self.h or output:
      embedding_flops.update(
        dict(hidden_kernel=2 * self.h * self.e, hidden_bias=self.e if output else self.h)
      )
      if output:
        embedding_flops.update(
          dict(
            hidden_activation=ACTIVATION_FLOPS * self.e,
            hidden_layernorm=LAYER_NORM_FLOPS * self.e,
            output_softmax=SOFTMAX_FLOPS * self.v,
            output_target_word=2 * self.v,
          )
        )
        return self.output_frac * sum(embedding_flops.values()) * self.s
    return sum(embedding_flops.values()) * self.s

  def get_binary_classification_flops(self):
    """Forward FLOPs of the discriminator's per-token head."""
    classification_flops = dict(
      hidden=2 * self.h * self.h,
      hidden_bias=self.h,
      hidden_act=ACTIVATION_FLOPS * self.h,
      logits=2 * self.h,
    )
    return sum(classification_flops.values()) * self.s

  def get_train_flops(self, batch_size, train_steps, discriminator=False):
    """Training FLOPs: 2 (forward + backward) × batch × steps × forward FLOPs per example."""
    return (
      2
      * batch_size
      * train_steps
      * (
        (self.l * self.get_block_flops())
        + self.get_embedding_flops(output=False)
        + (
          self.get_binary_classification_flops()
          if discriminator
          else self.get_embedding_flops(output=True)
        )
      )
    )


def get_electra_train_flops(
  h_d, l_d, h_g, l_g, batch_size, train_steps, tied_embeddings, e=None, s=512, output_frac=0.15625
):
  """The official `get_electra_train_flops`, ported unchanged."""
  if e is None:
    e = h_d
  disc = TransformerHparams(h_d, l_d, s=s, e=e, output_frac=output_frac).get_train_flops(
    batch_size, train_steps, True
  )
  gen = TransformerHparams(
    h_g, l_g, s=s, e=e if tied_embeddings else None, output_frac=output_frac
  ).get_train_flops(batch_size, train_steps)
  return disc + gen


def _hparams(cfg: ElectraConfig, s: int, output_frac: float, sparse: bool) -> TransformerHparams:
  return TransformerHparams(
    cfg.hidden_size,
    cfg.num_hidden_layers,
    s=s,
    v=cfg.vocab_size,
    e=cfg.embedding_size,
    i=cfg.intermediate_size,
    heads=cfg.num_attention_heads,
    output_frac=output_frac,
    sparse_embed_lookup=sparse,
  )


def pretraining_flops_per_step(
  objective: str,
  disc_config: ElectraConfig,
  gen_config: ElectraConfig | None,
  *,
  batch_size: int,
  max_seq_length: int,
  max_predictions: int,
  sparse_embed_lookup: bool = False,
) -> dict[str, float]:
  """Training FLOPs of one pretraining step, by the official counting rules.

  Args:
    objective: `electra` / `electra_15` (discriminator with the per-token
      head + generator) or `mlm` (one masked LM, `disc_config`'s shape).
    disc_config: the main model (for `mlm`: the masked LM itself).
    gen_config: the generator's config (ignored for `mlm`).
    batch_size, max_seq_length: the step's examples and their length.
    max_predictions: masked positions per sequence (the output softmax runs
      on `max_predictions / max_seq_length` of the tokens).
    sparse_embed_lookup: count embedding lookups as free gathers instead of
      the official dense one-hot matmul.

  Returns:
    `{"total": ..., "discriminator": ..., "generator": ...}` (FLOPs per step;
    for `mlm` the generator entry is the whole model and discriminator is 0).
  """
  frac = max_predictions / max_seq_length
  if objective == "mlm":
    gen = _hparams(disc_config, max_seq_length, frac, sparse_embed_lookup).get_train_flops(
      batch_size, 1
    )
    return {"total": gen, "discriminator": 0.0, "generator": gen}
  if objective not in ("electra", "electra_15"):
    objectives.get(objective)  # an unknown name gets the registry's error
    raise ElectraError(f"FLOPs counting covers electra, electra_15 and mlm, not {objective!r}")
  if gen_config is None:
    raise ElectraError(f"objective {objective!r} needs the generator's config")
  disc = _hparams(disc_config, max_seq_length, frac, sparse_embed_lookup).get_train_flops(
    batch_size, 1, discriminator=True
  )
  gen = _hparams(gen_config, max_seq_length, frac, sparse_embed_lookup).get_train_flops(
    batch_size, 1
  )
  return {"total": disc + gen, "discriminator": disc, "generator": gen}
