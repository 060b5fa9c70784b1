"""Token classification (NER, chunking) as a fine-tuning task: `task=token_classification`.

    electra-jax finetune --config experiments/configs/token_classification.py:size=small \
      --workdir W --config.train_file=train.txt --config.dev_file=dev.txt

Data: CoNLL column files (`electra_jax/tasks/conll.py`). Features follow the
official ELECTRA tagging code (`finetune/tagging/tagging_tasks.py`): each word
is word-pieced on its own, and only the first piece of a word carries the
word's label; the other pieces, `[CLS]`, `[SEP]` and padding are ignored by
the loss (label -1) and by the scores. Predictions are read back at the first
pieces, so every score is per word, in the file's own tags (the official code
re-encodes chunk tags as BIOES for training; here the model learns the file's
tags as they are). Segment ids are 0, HF's convention (the official code feeds 1).

Sentences longer than `max_seq_length` are not truncated (the official code
drops the words that do not fit, and so never scores them): they are split at
word boundaries into consecutive windows of at most `max_seq_length - 2`
pieces, each a feature of its own, and the windows' predictions are joined
back into the sentence. A single word with more pieces than a window keeps
only its first ones (its label sits on the first). Both are counted and
logged.

Labels are the training file's tags, sorted. A dev tag the training file
never has is an error naming it, unless `unseen_tags=keep`: then, as the
official code does (it builds the label map over all splits), it joins the
label map, the model can never predict it, its words count against recall,
and their number is logged.

The head is HF's `ElectraForTokenClassification` (dropout, then one dense
layer per token), so the model exports to HF. With `recipe=official` the
optimizer switches are the official ones and the loss is the official sum
over labelled words and batch; `standard` averages over labelled words (HF's
`CrossEntropyLoss(ignore_index=-100)`). Dev predictions are written per seed
to `seed_<k>/<split>_predictions.conll` (word, gold, predicted).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from electra_jax.errors import ElectraError
from electra_jax.tasks import adapters, conll

log = logging.getLogger(__name__)

IGNORE = -1  # label of positions the loss and the scores skip

# Recipe switches that do not apply: there is one token head (HF's), no
# sentence pairs to double and no regression.
_NOT_APPLICABLE = ("double_unordered", "scale_regression")


@dataclasses.dataclass
class WordPieceStats:
  """What featurisation had to do to long inputs (in the job's log line, `describe`)."""

  split_sentences: int = 0
  windows: int = 0
  truncated_words: int = 0

  def describe(self, length: int) -> str:
    return (
      f"{self.split_sentences} sentence(s) longer than {length} tokens split into "
      f"{self.windows} windows, {self.truncated_words} word(s) cut to fit a window"
    )


def _word_pieces(tokenizer, sentences: Sequence[conll.Sentence]) -> dict[str, list[int]]:
  """Word → its piece ids, each distinct word tokenized once (alone, as the official code does)."""
  vocab = sorted({w for s in sentences for w in s.words})
  pieces = tokenizer.encode_ids_batch(vocab)
  # A word the tokenizer drops entirely (e.g. only control characters) still needs a piece to carry its label.
  return {w: (p or [tokenizer.unk_id]) for w, p in zip(vocab, pieces)}


def _windows(lengths: Sequence[int], budget: int) -> list[tuple[int, int]]:
  """`[start, end)` word ranges whose piece counts (each capped at `budget`) fit in `budget`."""
  windows, start, used = [], 0, 0
  for i, n in enumerate(lengths):
    n = min(n, budget)
    if used + n > budget and i > start:
      windows.append((start, i))
      start, used = i, 0
    used += n
  windows.append((start, len(lengths)))
  return windows


def featurize(
  sentences: Sequence[conll.Sentence],
  tokenizer,
  max_seq_length: int,
  label_map: dict[str, int] | None,
) -> tuple[dict[str, np.ndarray], WordPieceStats]:
  """Sentences → fixed-shape features, one row per window.

  Returns:
    `({"input_ids", "input_mask", "segment_ids", "labels", "word_ids"}:
    int32 [n, max_seq_length], "example_index": int32 [n]}, stats)`.
    `labels` is the word's class id at its first piece, -1 elsewhere (and
    everywhere without `label_map` or tags); `word_ids` the word's index in
    its sentence at its first piece, -1 elsewhere; `example_index` the
    sentence of each row.
  """
  budget = max_seq_length - 2
  if budget < 1:
    raise ElectraError(f"max_seq_length {max_seq_length} leaves no room for a word")
  pieces = _word_pieces(tokenizer, sentences)
  stats = WordPieceStats()
  rows = []
  for index, sentence in enumerate(sentences):
    lengths = [len(pieces[w]) for w in sentence.words]
    windows = _windows(lengths, budget)
    if len(windows) > 1:
      stats.split_sentences += 1
      stats.windows += len(windows)
    stats.truncated_words += sum(n > budget for n in lengths)
    rows += [(index, a, b) for a, b in windows]
  n = len(rows)
  input_ids = np.full((n, max_seq_length), tokenizer.pad_id, np.int32)
  input_mask = np.zeros((n, max_seq_length), np.int32)
  labels = np.full((n, max_seq_length), IGNORE, np.int32)
  word_ids = np.full((n, max_seq_length), IGNORE, np.int32)
  for row, (index, start, end) in enumerate(rows):
    sentence = sentences[index]
    ids = [tokenizer.cls_id]
    for w in range(start, end):
      word_ids[row, len(ids)] = w
      if label_map is not None and sentence.tags is not None:
        # Train and dev tags are all in the map (checked when read); a test file's need not be.
        labels[row, len(ids)] = label_map.get(sentence.tags[w], IGNORE)
      ids += pieces[sentence.words[w]][:budget]
    ids.append(tokenizer.sep_id)
    input_ids[row, : len(ids)] = ids
    input_mask[row, : len(ids)] = 1
  features = {
    "input_ids": input_ids,
    "input_mask": input_mask,
    "segment_ids": np.zeros_like(input_ids),
    "labels": labels,
    "word_ids": word_ids,
    "example_index": np.asarray([r[0] for r in rows], np.int32).reshape(n),
  }
  return features, stats


def sentence_predictions(
  predicted: np.ndarray, features: dict[str, np.ndarray], sentences: Sequence[conll.Sentence]
) -> list[np.ndarray]:
  """Per-position class ids `[n, L]` → each sentence's per-word class ids."""
  out = [np.full(len(s.words), IGNORE, np.int32) for s in sentences]
  rows, positions = np.nonzero(features["word_ids"] >= 0)
  words = features["word_ids"][rows, positions]
  for row, position, word in zip(rows, positions, words):
    out[features["example_index"][row]][word] = predicted[row, position]
  if any((p < 0).any() for p in out):  # every word has a first piece in some window
    raise AssertionError("a word got no prediction")
  return out


def tag_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
  """`conll.entity_scores`, quiet about tags without a `B-`/`I-` prefix (POS tags)."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*seems not to be NE tag")
    return conll.entity_scores(gold, predicted)


@dataclasses.dataclass
class TokenClassificationAdapter(adapters.TaskAdapter):
  """A tag per word, from CoNLL files (see the module docstring).

  Attributes:
    label_list: tags in class-id order.
    splits: split name → sentences.
    recipe: resolved switches (`recipes.resolve`); the head is always HF's.
    unseen: dev tags absent from training → how many words carry them.
  """

  label_list: list[str]
  splits: dict[str, list[conll.Sentence]]
  dev_splits: tuple[str, ...]
  test_splits: tuple[str, ...]
  recipe: dict
  source: str
  unseen: dict[str, int] = dataclasses.field(default_factory=dict)
  stats: dict[str, WordPieceStats] = dataclasses.field(default_factory=dict)
  max_seq_length: int = 0
  tag_column: int = -1
  features: dict = dataclasses.field(default_factory=dict)  # split → rows, set by `featurize`

  name = "token_classification"
  primary_metric = "f1"
  head = "token_classification"

  @property
  def head_kwargs(self) -> dict:
    return {"num_labels": len(self.label_list)}

  def featurize(self, tokenizer, max_seq_length):
    label_map = {tag: i for i, tag in enumerate(self.label_list)}
    out = {}
    for split, sentences in self.splits.items():
      out[split], self.stats[split] = featurize(sentences, tokenizer, max_seq_length, label_map)
    self.max_seq_length, self.features = max_seq_length, out
    return out

  def forward(self, model):
    # Class ids, not logits: a dev set's [n, L, labels] logits are not needed.
    logits_fn = super().forward(model)

    def forward(params, ids, mask, types, deterministic=True, rngs=None):
      logits = logits_fn(params, ids, mask, types, deterministic, rngs)
      return logits.argmax(-1).astype(jnp.int32)

    return forward

  def loss_fn(self, model, weights):
    """Cross-entropy on first pieces: summed (official) or averaged over labelled words."""
    total = self.recipe["loss_reduction"] == "sum"
    forward = super().forward(model)  # logits (this class's `forward` returns tags)

    def loss_fn(params, batch, rng, deterministic):
      logits = forward(
        params, *(batch[k] for k in self.input_keys), deterministic, {"dropout": rng}
      )
      labels = batch["labels"]
      mask = (labels >= 0).astype(jnp.float32)
      per_token = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
      count = jnp.maximum(mask.sum(), 1.0)
      loss = (per_token * mask).sum()
      correct = ((logits.argmax(-1) == labels) * mask).sum()
      return (loss if total else loss / count), {"accuracy": correct / count}

    return loss_fn

  def predictions(self, outputs, split):
    tags = sentence_predictions(outputs, self.features[split], self.splits[split])
    return [[self.label_list[i] for i in p] for p in tags]

  def metrics(self, predictions, split_features, split):
    gold = [s.tags for s in self.splits[split]]
    return tag_scores(gold, predictions)

  def write_eval_outputs(self, predictions, out_dir, split):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{split}_predictions.conll")
    return conll.write_conll(path, self.splits[split], predictions)

  def write_submission(self, predictions, out_dir, split):
    os.makedirs(out_dir, exist_ok=True)
    return conll.write_conll(
      os.path.join(out_dir, f"{split}.conll"), self.splits[split], predictions
    )

  def describe(self):
    parts = [f"{len(self.label_list)} tags ({', '.join(self.label_list)})"]
    for split, stats in self.stats.items():
      if stats.windows or stats.truncated_words:
        parts.append(f"{split}: {stats.describe(self.max_seq_length)}")
    if self.unseen:
      parts.append(
        "dev tags never seen in training (kept, never predicted): "
        + ", ".join(f"{t} ({n} words)" for t, n in sorted(self.unseen.items()))
      )
    return "; ".join(parts)

  def model_extra(self):
    return {
      "task": self.name,
      "label_map": list(self.label_list),
      "id2label": {str(i): t for i, t in enumerate(self.label_list)},
      "tag_column": self.tag_column,  # where predict --eval finds gold tags
    }


def _unseen_tags(train, dev_splits: dict, policy: str) -> dict[str, int]:
  """Dev tags absent from training → word count; an error unless `policy == "keep"`."""
  known = {t for s in train for t in s.tags}
  unseen: dict[str, int] = {}
  for split, (path, sentences) in dev_splits.items():
    for s in sentences:
      for tag in s.tags:
        if tag not in known:
          if policy != "keep":
            raise ElectraError(
              f"{path}:{s.line}: {split} tag {tag!r} never occurs in the training file, so the "
              "model cannot predict it; fix the data or set --config.unseen_tags=keep to score it "
              "as always missed (the official code's behaviour)"
            )
          unseen[tag] = unseen.get(tag, 0) + 1
  return unseen


def token_classification_adapter(
  cfg: ml_collections.ConfigDict, recipe: dict
) -> TokenClassificationAdapter:
  """Reads and checks the CoNLL files of `cfg` (`train_file`, `dev_file`, `test_file`)."""
  if not cfg.train_file:
    raise ElectraError("task=token_classification needs --config.train_file (CoNLL columns)")
  column = int(cfg.tag_column)
  splits = {"train": conll.read_conll(cfg.train_file, column)}
  limit = int(cfg.max_train_examples)
  if limit:
    splits["train"] = splits["train"][:limit]
  dev = {}
  if cfg.dev_file:
    splits["dev"] = conll.read_conll(cfg.dev_file, column)
    dev["dev"] = (cfg.dev_file, splits["dev"])
  if cfg.test_file:
    splits["test"] = conll.read_conll(cfg.test_file, column, require_tags=False)
  unseen = _unseen_tags(splits["train"], dev, str(cfg.unseen_tags))
  labels = sorted({t for s in splits["train"] for t in s.tags} | set(unseen))
  if len(labels) < 2:
    raise ElectraError(
      f"{cfg.train_file} has {len(labels)} distinct tag(s); tagging needs 2 or more"
    )
  recipe = {k: v for k, v in recipe.items() if k not in _NOT_APPLICABLE}
  recipe["head"] = "hf"  # the only token head (HF's), whatever the recipe
  return TokenClassificationAdapter(
    label_list=labels,
    splits=splits,
    dev_splits=("dev",) if "dev" in splits else (),
    test_splits=("test",) if "test" in splits else (),
    recipe=recipe,
    source=os.path.abspath(cfg.train_file),
    unseen=unseen,
    tag_column=column,
  )


adapters.ADAPTERS["token_classification"] = token_classification_adapter
