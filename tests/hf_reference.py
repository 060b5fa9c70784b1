"""Shared helpers for the tests that compare with HF `transformers` PyTorch.

Builds tiny randomly initialised HF ELECTRA models (no hub), padded batches
with token types, and runs both implementations. Every parameter, biases and
LayerNorm included, is perturbed away from its init so that a wrongly mapped
bias or LayerNorm cannot hide behind zeros and ones.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from electra_jax.heads import HEADS as HEAD_REGISTRY


def require_hf():
  """Returns (torch, transformers), skipping the calling test when either is missing."""
  torch = pytest.importorskip("torch", reason="HF parity needs torch (pip install -e '.[test]')")
  transformers = pytest.importorskip(
    "transformers", reason="HF parity needs transformers (pip install -e '.[test]')"
  )
  return torch, transformers


# Every registered head; those HF has (all but the official fine-tuning head),
# and the HF class each converts to and from.
ALL_HEADS = tuple(HEAD_REGISTRY)
HEADS = tuple(name for name, head in HEAD_REGISTRY.items() if head.hf_architecture)
HF_CLASS = {name: HEAD_REGISTRY[name].hf_architecture for name in HEADS}

# Tiny HF configs. "factorized": embedding_size != hidden_size (embeddings_project
# exists), like the released small/generator models; "square": equal, like base.
HF_CONFIGS = {
  "factorized": dict(
    vocab_size=99,
    embedding_size=16,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=40,
    type_vocab_size=2,
    hidden_act="gelu",
  ),
  "square": dict(
    vocab_size=101,
    embedding_size=32,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=24,
    type_vocab_size=3,
    hidden_act="gelu",
    num_labels=3,
  ),
}


def hf_model(head, config_name="factorized", seed=0, **overrides):
  """A HF ELECTRA model for `head` in eval mode, every weight randomised."""
  torch, transformers = require_hf()
  kwargs = dict(HF_CONFIGS[config_name])
  if head == "question_answering":
    kwargs["num_labels"] = 2  # start and end
  kwargs.update(overrides)
  config = transformers.ElectraConfig(**kwargs)
  torch.manual_seed(seed)
  model = getattr(transformers, HF_CLASS[head])(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("LayerNorm.weight"):
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
      else:
        p.add_(0.05 * torch.randn_like(p))
  return model


def batch(head, vocab_size, batch_size=3, length=9, choices=3, seed=0, type_vocab_size=2):
  """Token ids, a padding mask with zeros (no row all padding) and token types."""
  rng = np.random.RandomState(seed)
  shape = (batch_size, choices, length) if head == "multiple_choice" else (batch_size, length)
  input_ids = rng.randint(1, vocab_size, size=shape).astype(np.int32)
  # Row 0 unpadded, row 1 padded from 6, row 2 (and later) from 4.
  lengths = [length, 6] + [4] * (batch_size - 2)
  attention_mask = np.zeros(shape, np.int32)
  token_type_ids = np.zeros(shape, np.int32)
  for b in range(batch_size):
    attention_mask[b, ..., : lengths[b]] = 1
    input_ids[b, ..., lengths[b] :] = 0
    # A second segment from the middle of the real tokens.
    token_type_ids[b, ..., lengths[b] // 2 : lengths[b]] = min(1 + b % 2, type_vocab_size - 1)
  return {
    "input_ids": input_ids,
    "attention_mask": attention_mask,
    "token_type_ids": token_type_ids,
  }


def hf_output(model, head, inputs) -> np.ndarray:
  """The HF model's logits (hidden states for the bare encoder) as numpy."""
  torch, _ = require_hf()
  with torch.no_grad():
    out = model(**{k: torch.tensor(v, dtype=torch.long) for k, v in inputs.items()})
  if head is None:
    return out.last_hidden_state.numpy()
  if head == "question_answering":
    return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], axis=-1)
  return out.logits.numpy()


def jax_output(model, params, head, inputs, **kwargs) -> np.ndarray:
  """Our model's output in the same layout as `hf_output`."""
  import jax.numpy as jnp

  out = model.apply(
    {"params": params},
    jnp.asarray(inputs["input_ids"]),
    attention_mask=jnp.asarray(inputs["attention_mask"]),
    token_type_ids=jnp.asarray(inputs["token_type_ids"]),
    deterministic=True,
    **kwargs,
  )
  if head == "question_answering":
    out = out.logits
  if head == "question_answering_official":  # a dict of beams (qa_official.py); the start beam
    out = out["start_top_log_probs"]
  return np.asarray(out, np.float32)


def state_dict_numpy(model) -> dict[str, np.ndarray]:
  """The HF model's state dict as numpy (what a checkpoint file holds)."""
  return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def save_bin(model, directory) -> None:
  """Writes an old-style HF directory: config.json + pytorch_model.bin."""
  torch, _ = require_hf()
  os.makedirs(directory, exist_ok=True)
  model.config.save_pretrained(directory)
  torch.save(model.state_dict(), os.path.join(directory, "pytorch_model.bin"))
