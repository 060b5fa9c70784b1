"""WordPiece and SentencePiece tokenizers behind one interface.

`load_tokenizer(path)` accepts
  - a WordPiece `vocab.txt` (the English ELECTRA / BERT-uncased vocab),
  - a SentencePiece `.model` file,
  - a `tokenizer.json` written by the HF `tokenizers` library,
  - a directory holding one of those (a tokenizer directory written by
    `Tokenizer.save`, a HF model directory or an electra-jax checkpoint).

Both kinds report the ids the model and the masking need (`pad_id`, `cls_id`,
`sep_id`, `mask_id`, `vocab_size`), so nothing downstream hard-codes 103 or
30522. WordPiece follows BERT/ELECTRA: lower-casing, accent stripping, text
clean-up and CJK splitting (`BertNormalizer`), punctuation splitting
(`BertPreTokenizer`) and greedy longest-match word pieces. Pairs are
`[CLS] A [SEP] B [SEP]` with token types 0/1.

Truncation is "longest first" with the tie rule of the official BERT/ELECTRA
code (`_truncate_seq_pair`) and HF's Python tokenizer: while too long, drop
the last token of the longer sequence, of the second one when they are equal.
HF's Rust (`tokenizers`) truncation splits ties the other way, so we truncate
in Python on top of the library's (parallel) batch encoding.
"""

from __future__ import annotations

import abc
import dataclasses
import glob
import hashlib
import itertools
import json
import os
from collections.abc import Iterator, Sequence

import numpy as np

from electra_jax import fileio
from electra_jax.errors import ElectraError
from electra_jax.textfiles import not_utf8

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Ids that `train_sentencepiece` gives the special tokens (documented in
# docs/data.md); WordPiece vocabularies keep their own ids (BERT: 0/100/101/102/103).
SENTENCEPIECE_SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}

VOCAB_FILE = "vocab.txt"
SPM_FILE = "spiece.model"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


@dataclasses.dataclass
class Encoding:
  """One encoded text (or text pair), special tokens included.

  Attributes:
    ids: token ids.
    type_ids: 0 for `[CLS] A [SEP]`, 1 for `B [SEP]`.
    attention_mask: 1 for every token (no padding in a single encoding).
    offsets: (start, end) character spans into the original text the token
      came from ((0, 0) for special tokens); for a pair, spans of B tokens index
      into `text_pair`.
    tokens: the token strings.
  """

  ids: list[int]
  type_ids: list[int]
  attention_mask: list[int]
  offsets: list[tuple[int, int]]
  tokens: list[str]


def truncate_pair_lengths(len_a: int, len_b: int | None, max_tokens: int) -> tuple[int, int]:
  """Lengths after longest-first truncation to `max_tokens` (specials excluded).

  Same result as popping from the longer sequence (the second on ties) one
  token at a time, as the official BERT/ELECTRA `_truncate_seq_pair` does.

  Args:
    len_a: length of the first sequence.
    len_b: length of the second sequence, or None for a single sequence.
    max_tokens: room for non-special tokens.

  Returns:
    (new_len_a, new_len_b); new_len_b is 0 when `len_b` is None.
  """
  if len_b is None:
    return min(len_a, max_tokens), 0
  if len_a + len_b <= max_tokens:
    return len_a, len_b
  # Trim the longer one down to the shorter, then alternate starting with b.
  half_b = max_tokens // 2  # b gets the smaller half when the budget is odd
  half_a = max_tokens - half_b
  if len_a >= half_a and len_b >= half_b:
    return half_a, half_b
  if len_a < half_a:
    return len_a, max_tokens - len_a
  return max_tokens - len_b, len_b


class Tokenizer(abc.ABC):
  """Common interface of the WordPiece and SentencePiece tokenizers."""

  kind: str = ""

  def __init__(self):
    self._special = {}

  # ------------------------------------------------------------------ ids
  def _find_specials(self, source: str, aliases: dict[str, Sequence[str]]):
    """Looks up the special tokens; a missing one is a one-line error."""
    missing = []
    for name, names in aliases.items():
      found = None
      for candidate in names:
        idx = self._piece_id(candidate)
        if idx is not None:
          found = idx
          break
      if found is None:
        missing.append(name)
      self._special[name] = found
    if missing:
      raise ElectraError(
        f"tokenizer {source} lacks the special token(s) {', '.join(missing)}: ELECTRA needs "
        f"{' '.join(SPECIAL_TOKENS)} in the vocabulary (train one with `electra-jax tokenizer train`)"
      )

  @abc.abstractmethod
  def _piece_id(self, token: str) -> int | None:
    """Id of `token` if it is in the vocabulary exactly, else None."""

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids (embedding rows needed)."""

  @property
  def pad_id(self) -> int:
    return self._special["[PAD]"]

  @property
  def unk_id(self) -> int:
    return self._special["[UNK]"]

  @property
  def cls_id(self) -> int:
    return self._special["[CLS]"]

  @property
  def sep_id(self) -> int:
    return self._special["[SEP]"]

  @property
  def mask_id(self) -> int:
    return self._special["[MASK]"]

  @property
  def special_ids(self) -> dict[str, int]:
    """{"pad": ..., "unk": ..., "cls": ..., "sep": ..., "mask": ...}."""
    return {
      "pad": self.pad_id,
      "unk": self.unk_id,
      "cls": self.cls_id,
      "sep": self.sep_id,
      "mask": self.mask_id,
    }

  @property
  @abc.abstractmethod
  def fingerprint(self) -> str:
    """Stable hash of the vocabulary and normalisation settings."""

  # ------------------------------------------------------------- encoding
  @abc.abstractmethod
  def _encode_pieces(self, text: str) -> tuple[list[int], list[str], list[tuple[int, int]]]:
    """(ids, tokens, char offsets) of `text`, no special tokens."""

  @abc.abstractmethod
  def encode_ids_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (fast batch path).

    Args:
      texts: the texts.

    Returns:
      one list of ids per text.
    """

  @abc.abstractmethod
  def tokenize(self, text: str) -> list[str]:
    """Token strings of `text`, without special tokens."""

  @abc.abstractmethod
  def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
    """Ids of tokens (unknown tokens map to `unk_id`)."""

  @abc.abstractmethod
  def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | list[str]:
    """Token strings of ids."""

  @abc.abstractmethod
  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    """Text of `ids` (special tokens dropped by default)."""

  @abc.abstractmethod
  def save(self, directory: str | os.PathLike) -> str:
    """Writes the tokenizer files; `load_tokenizer(directory)` reloads it.

    Args:
      directory: created when missing; existing tokenizer files are replaced.

    Returns:
      the directory.
    """

  def _check_max_length(self, max_length: int | None, pair: bool) -> None:
    need = 3 if pair else 2
    if max_length is not None and max_length < need:
      raise ElectraError(
        f"max_length={max_length} leaves no room for text: it must be at least {need + 1}"
      )

  def encode(
    self, text: str, text_pair: str | None = None, max_length: int | None = None
  ) -> Encoding:
    """Encodes `text` (and `text_pair`) as `[CLS] A [SEP] (B [SEP])`.

    Args:
      text: first segment.
      text_pair: optional second segment.
      max_length: total length (special tokens included) to truncate to,
        longest first; None for no truncation.

    Returns:
      an `Encoding`.
    """
    pair = text_pair is not None
    self._check_max_length(max_length, pair)
    ids_a, tok_a, off_a = self._encode_pieces(text)
    ids_b, tok_b, off_b = self._encode_pieces(text_pair) if pair else ([], [], [])
    if max_length is not None:
      n_a, n_b = truncate_pair_lengths(
        len(ids_a), len(ids_b) if pair else None, max_length - (3 if pair else 2)
      )
      ids_a, tok_a, off_a = ids_a[:n_a], tok_a[:n_a], off_a[:n_a]
      ids_b, tok_b, off_b = ids_b[:n_b], tok_b[:n_b], off_b[:n_b]
    cls_tok, sep_tok = self.convert_ids_to_tokens([self.cls_id, self.sep_id])
    ids = [self.cls_id, *ids_a, self.sep_id]
    tokens = [cls_tok, *tok_a, sep_tok]
    offsets = [(0, 0), *off_a, (0, 0)]
    type_ids = [0] * len(ids)
    if pair:
      ids += [*ids_b, self.sep_id]
      tokens += [*tok_b, sep_tok]
      offsets += [*off_b, (0, 0)]
      type_ids += [1] * (len(ids_b) + 1)
    return Encoding(ids, type_ids, [1] * len(ids), offsets, tokens)

  def encode_batch(
    self,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    max_length: int | None = None,
    pad_to: int | None = None,
  ) -> dict[str, np.ndarray]:
    """Encodes many texts (pairs) into padded int32 arrays.

    Args:
      texts: first segments.
      pairs: optional second segments, one per text.
      max_length: truncate each example to this many tokens (specials
        included); None for no truncation.
      pad_to: pad to this length (must be >= the longest example); None pads
        to the longest example in the batch.

    Returns:
      {"input_ids", "attention_mask", "token_type_ids"}: int32 [batch, length].
    """
    texts = list(texts)
    if pairs is not None and len(pairs) != len(texts):
      raise ElectraError(f"encode_batch got {len(texts)} texts but {len(pairs)} pairs")
    self._check_max_length(max_length, pairs is not None)
    ids_a = self.encode_ids_batch(texts)
    ids_b = self.encode_ids_batch(list(pairs)) if pairs is not None else None
    rows_ids, rows_types = [], []
    for i, a in enumerate(ids_a):
      b = ids_b[i] if ids_b is not None else None
      if max_length is not None:
        n_a, n_b = truncate_pair_lengths(
          len(a), None if b is None else len(b), max_length - (2 if b is None else 3)
        )
        a = a[:n_a]
        b = None if b is None else b[:n_b]
      row = [self.cls_id, *a, self.sep_id]
      types = [0] * len(row)
      if b is not None:
        row += [*b, self.sep_id]
        types += [1] * (len(b) + 1)
      rows_ids.append(row)
      rows_types.append(types)
    longest = max((len(r) for r in rows_ids), default=0)
    length = longest if pad_to is None else pad_to
    if length < longest:
      raise ElectraError(
        f"pad_to={pad_to} is shorter than the longest example ({longest} tokens): "
        f"set max_length={pad_to} to truncate"
      )
    input_ids = np.full((len(rows_ids), length), self.pad_id, np.int32)
    mask = np.zeros((len(rows_ids), length), np.int32)
    types = np.zeros((len(rows_ids), length), np.int32)
    for i, (row, t) in enumerate(zip(rows_ids, rows_types)):
      input_ids[i, : len(row)] = row
      mask[i, : len(row)] = 1
      types[i, : len(row)] = t
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}

  def __repr__(self) -> str:
    return (
      f"{type(self).__name__}(vocab_size={self.vocab_size}, special_ids={self.special_ids}, "
      f"fingerprint={self.fingerprint!r})"
    )


# ---------------------------------------------------------------- WordPiece
def _read_vocab(path: str) -> list[str]:
  try:
    with open(path, encoding="utf-8") as f:
      # Like BERT's load_vocab: one token per line, only the newline stripped.
      tokens = [line.rstrip("\n") for line in f]
  except UnicodeDecodeError:
    raise not_utf8(path) from None
  except OSError as e:
    raise ElectraError(f"cannot read vocab file {path}: {e.strerror}") from None
  while tokens and tokens[-1] == "":
    tokens.pop()  # a trailing newline is not a token
  if not tokens:
    raise ElectraError(f"vocab file {path} is empty")
  return tokens


class WordPieceTokenizer(Tokenizer):
  """BERT/ELECTRA WordPiece tokenizer built on the HF `tokenizers` library."""

  kind = "wordpiece"

  def __init__(
    self,
    vocab: Sequence[str] | None = None,
    *,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    tokenize_chinese_chars: bool = True,
    clean_text: bool = True,
    backend=None,
    source: str = "<vocab>",
  ):
    """Builds the tokenizer.

    Args:
      vocab: tokens in id order (a vocab.txt's lines). Either this or
        `backend`.
      lowercase: lower-case input (uncased vocabularies).
      strip_accents: strip accents; None follows `lowercase` (as BERT).
      tokenize_chinese_chars: put spaces around CJK characters.
      clean_text: drop control characters, normalise whitespace.
      backend: an existing `tokenizers.Tokenizer` (from a tokenizer.json)
        whose model is WordPiece; its post-processor is replaced.
      source: where it came from, for error messages.
    """
    super().__init__()
    from tokenizers import Tokenizer as _Backend
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    self._settings = {
      "lowercase": lowercase,
      "strip_accents": strip_accents,
      "tokenize_chinese_chars": tokenize_chinese_chars,
      "clean_text": clean_text,
    }
    if backend is None:
      if vocab is None:
        raise ElectraError("WordPieceTokenizer needs a vocab or a tokenizers backend")
      self._vocab_list = list(vocab)
      vocab_map = {}
      for i, token in enumerate(self._vocab_list):
        vocab_map[token] = i  # a duplicate keeps its last id, as BERT's load_vocab
      unk = "[UNK]" if "[UNK]" in vocab_map else None
      if unk is None:
        raise ElectraError(
          f"tokenizer {source} lacks the special token(s) [UNK]: ELECTRA needs "
          f"{' '.join(SPECIAL_TOKENS)} in the vocabulary"
        )
      backend = _Backend(models.WordPiece(vocab_map, unk_token=unk, max_input_chars_per_word=100))
      backend.normalizer = normalizers.BertNormalizer(
        clean_text=clean_text,
        handle_chinese_chars=tokenize_chinese_chars,
        strip_accents=strip_accents,
        lowercase=lowercase,
      )
      backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
      backend.decoder = decoders.WordPiece(prefix="##")
      self._json_fingerprint = None
    else:
      vocab_map = backend.get_vocab(with_added_tokens=True)
      self._vocab_list = None
      spec = json.loads(backend.to_str())
      spec.pop("truncation", None)
      spec.pop("padding", None)
      spec.pop("post_processor", None)
      self._json_fingerprint = json.dumps(spec, sort_keys=True)
    backend.no_truncation()
    backend.no_padding()
    backend.post_processor = None
    self._backend = backend
    self._vocab_map = vocab_map
    self._vocab_size = max(vocab_map.values()) + 1
    self._find_specials(source, {t: (t,) for t in SPECIAL_TOKENS})
    # Special tokens in the text are kept whole, as HF's BERT tokenizers do.
    self._backend.add_special_tokens(list(SPECIAL_TOKENS))
    self._fingerprint = None

  def __reduce__(self):
    # Picklable for multiprocessing workers: rebuilt from vocab or JSON.
    if self._vocab_list is not None:
      return (_rebuild_wordpiece, (self._vocab_list, self._settings, None))
    return (_rebuild_wordpiece, (None, self._settings, self._backend.to_str()))

  @classmethod
  def from_vocab_file(cls, path: str, **settings) -> WordPieceTokenizer:
    """Reads a `vocab.txt` (one token per line, id = line number)."""
    return cls(_read_vocab(path), source=path, **settings)

  def _piece_id(self, token):
    return self._vocab_map.get(token)

  @property
  def vocab_size(self):
    return self._vocab_size

  @property
  def fingerprint(self):
    if self._fingerprint is None:
      h = hashlib.sha256()
      if self._json_fingerprint is not None:
        h.update(b"tokenizers-json\0" + self._json_fingerprint.encode())
      else:
        h.update(b"wordpiece\0" + json.dumps(self._settings, sort_keys=True).encode() + b"\0")
        h.update("\n".join(self._vocab_list).encode("utf-8"))
      self._fingerprint = "wordpiece-" + h.hexdigest()[:16]
    return self._fingerprint

  def _encode_pieces(self, text):
    enc = self._backend.encode(text, add_special_tokens=False)
    return list(enc.ids), list(enc.tokens), [tuple(o) for o in enc.offsets]

  def encode_ids_batch(self, texts):
    # encode_batch_fast (tokenizers >= 0.21) skips the offsets: ~20% faster.
    encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
    return [e.ids for e in encode(list(texts), add_special_tokens=False)]

  def tokenize(self, text):
    return self._backend.encode(text, add_special_tokens=False).tokens

  def convert_tokens_to_ids(self, tokens):
    if isinstance(tokens, str):
      return self._vocab_map.get(tokens, self.unk_id)
    return [self._vocab_map.get(t, self.unk_id) for t in tokens]

  def convert_ids_to_tokens(self, ids):
    if isinstance(ids, int | np.integer):
      return self._backend.id_to_token(int(ids))
    return [self._backend.id_to_token(int(i)) for i in ids]

  def decode(self, ids, skip_special_tokens=True):
    return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def save(self, directory):
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    if self._vocab_list is not None:
      _atomic_write(directory, VOCAB_FILE, "".join(t + "\n" for t in self._vocab_list).encode())
      # HF-compatible config, so `transformers.AutoTokenizer` reads it too.
      config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": self._settings["lowercase"],
        "strip_accents": self._settings["strip_accents"],
        "tokenize_chinese_chars": self._settings["tokenize_chinese_chars"],
        "clean_text": self._settings["clean_text"],
        "electra_jax_fingerprint": self.fingerprint,
      }
      _atomic_write(directory, TOKENIZER_CONFIG, json.dumps(config, indent=2).encode())
    else:
      _atomic_write(directory, TOKENIZER_JSON, self._backend.to_str().encode())
    return directory


def _rebuild_wordpiece(vocab, settings, backend_json):
  if backend_json is None:
    return WordPieceTokenizer(vocab, **settings)
  from tokenizers import Tokenizer as _Backend

  return WordPieceTokenizer(backend=_Backend.from_str(backend_json))


# ------------------------------------------------------------ SentencePiece
class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model (unigram or BPE) with ELECTRA's special tokens."""

  kind = "sentencepiece"

  def __init__(self, model_proto: bytes, source: str = "<sentencepiece>"):
    """Loads a serialized SentencePiece model.

    Args:
      model_proto: the bytes of a `.model` file.
      source: where it came from, for error messages.
    """
    super().__init__()
    import sentencepiece as spm

    self._proto = bytes(model_proto)
    self._sp = spm.SentencePieceProcessor()
    try:
      self._sp.LoadFromSerializedProto(self._proto)
    except Exception as e:  # sentencepiece raises RuntimeError/OSError variants
      raise ElectraError(f"{source} is not a SentencePiece model ({e})") from None
    self._find_specials(
      source,
      {
        "[PAD]": ("[PAD]", "<pad>"),
        "[UNK]": ("[UNK]", "<unk>"),
        "[CLS]": ("[CLS]", "<cls>"),
        "[SEP]": ("[SEP]", "<sep>"),
        "[MASK]": ("[MASK]", "<mask>"),
      },
    )

  def __reduce__(self):
    return (SentencePieceTokenizer, (self._proto,))

  @classmethod
  def from_file(cls, path: str) -> SentencePieceTokenizer:
    try:
      with open(path, "rb") as f:
        return cls(f.read(), source=path)
    except OSError as e:
      raise ElectraError(f"cannot read SentencePiece model {path}: {e.strerror}") from None

  def _piece_id(self, token):
    idx = self._sp.piece_to_id(token)
    # piece_to_id maps unknown pieces to unk; check the round trip.
    return idx if self._sp.id_to_piece(idx) == token else None

  @property
  def vocab_size(self):
    return self._sp.get_piece_size()

  @property
  def fingerprint(self):
    return "sentencepiece-" + hashlib.sha256(self._proto).hexdigest()[:16]

  def _encode_pieces(self, text):
    proto = self._sp.encode(text, return_type="proto")
    raw = text.encode("utf-8")
    # Byte offsets -> character offsets: count the UTF-8 lead bytes before.
    is_lead = np.frombuffer(raw, np.uint8) & 0xC0 != 0x80
    char_at = np.concatenate([[0], np.cumsum(is_lead)]).tolist()
    ids, tokens, offsets = [], [], []
    for p in proto.pieces:
      ids.append(p.id)
      tokens.append(p.piece)
      start, end = char_at[p.begin], char_at[p.end]
      # SentencePiece spans include the space a "▁" piece stands for;
      # trim it so spans cover the word, as the WordPiece ones do.
      while start < end and text[start].isspace():
        start += 1
      offsets.append((start, end))
    return ids, tokens, offsets

  def encode_ids_batch(self, texts):
    return self._sp.encode(list(texts), out_type=int)

  def tokenize(self, text):
    return self._sp.encode(text, out_type=str)

  def convert_tokens_to_ids(self, tokens):
    if isinstance(tokens, str):
      return self._sp.piece_to_id(tokens)
    return [self._sp.piece_to_id(t) for t in tokens]

  def convert_ids_to_tokens(self, ids):
    if isinstance(ids, int | np.integer):
      return self._sp.id_to_piece(int(ids))
    return [self._sp.id_to_piece(int(i)) for i in ids]

  def decode(self, ids, skip_special_tokens=True):
    ids = [int(i) for i in ids]
    if skip_special_tokens:
      special = set(self.special_ids.values()) - {self.unk_id}
      ids = [i for i in ids if i not in special]
    return self._sp.decode(ids)

  def save(self, directory):
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    _atomic_write(directory, SPM_FILE, self._proto)
    config = {
      "tokenizer_class": "electra_jax.SentencePieceTokenizer",
      "electra_jax_fingerprint": self.fingerprint,
      "special_ids": self.special_ids,
    }
    _atomic_write(directory, TOKENIZER_CONFIG, json.dumps(config, indent=2).encode())
    return directory


def _atomic_write(directory: str, name: str, data: bytes) -> None:
  fileio.atomic_write_bytes(os.path.join(directory, name), data)


# ------------------------------------------------------------------ loading
def _wordpiece_settings(directory: str) -> dict:
  path = os.path.join(directory, TOKENIZER_CONFIG)
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise ElectraError(f"cannot read {path}: {e}") from None
  settings = {}
  for ours, theirs in (
    ("lowercase", "do_lower_case"),
    ("strip_accents", "strip_accents"),
    ("tokenize_chinese_chars", "tokenize_chinese_chars"),
    ("clean_text", "clean_text"),
  ):
    if theirs in config:
      settings[ours] = config[theirs]
  return settings


def load_tokenizer(path: str | os.PathLike, **wordpiece_settings) -> Tokenizer:
  """Loads a tokenizer from a file or directory.

  Args:
    path: a `vocab.txt`, a SentencePiece `.model`, a `tokenizer.json`, or a
      directory with one of them (`vocab.txt` first, then `*.model`, then
      `tokenizer.json`). A `tokenizer_config.json` next to a `vocab.txt`
      supplies `do_lower_case` / `strip_accents` / `tokenize_chinese_chars`.
    **wordpiece_settings: overrides for a vocab.txt (`lowercase`,
      `strip_accents`, `tokenize_chinese_chars`, `clean_text`).

  Returns:
    a `Tokenizer`.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    vocab = os.path.join(path, VOCAB_FILE)
    if os.path.exists(vocab):
      settings = {**_wordpiece_settings(path), **wordpiece_settings}
      return WordPieceTokenizer.from_vocab_file(vocab, **settings)
    models = sorted(glob.glob(os.path.join(path, "*.model")))
    preferred = [m for m in models if os.path.basename(m) in (SPM_FILE, "tokenizer.model")]
    if preferred or len(models) == 1:
      return SentencePieceTokenizer.from_file((preferred or models)[0])
    if os.path.exists(os.path.join(path, TOKENIZER_JSON)):
      return _from_tokenizer_json(os.path.join(path, TOKENIZER_JSON))
    raise ElectraError(
      f"no tokenizer in {path}: expected vocab.txt, spiece.model or tokenizer.json"
      + (f" (found several .model files: {models})" if models else "")
    )
  if not os.path.exists(path):
    raise ElectraError(f"tokenizer path {path} does not exist")
  if path.endswith(".model"):
    return SentencePieceTokenizer.from_file(path)
  if path.endswith(".json"):
    return _from_tokenizer_json(path)
  return WordPieceTokenizer.from_vocab_file(path, **wordpiece_settings)


def _from_tokenizer_json(path: str) -> Tokenizer:
  from tokenizers import Tokenizer as _Backend

  try:
    backend = _Backend.from_file(path)
  except Exception as e:  # the Rust side raises a bare Exception
    raise ElectraError(f"cannot read {path} as a tokenizers JSON file ({e})") from None
  model_type = json.loads(backend.to_str()).get("model", {}).get("type")
  if model_type != "WordPiece":
    raise ElectraError(
      f"{path} holds a {model_type} model; only WordPiece tokenizer.json files are supported "
      "(use a SentencePiece .model for the others)"
    )
  return WordPieceTokenizer(backend=backend, source=path)


# ----------------------------------------------------------------- training
def train_sentencepiece(
  inputs: Sequence[str],
  vocab_size: int,
  out_dir: str | os.PathLike,
  *,
  model_type: str = "unigram",
  lowercase: bool = False,
  character_coverage: float = 0.9995,
  max_sentences: int = 0,
  seed: int = 0,
  num_threads: int | None = None,
  encoding_errors: str = "strict",
) -> SentencePieceTokenizer:
  """Trains a SentencePiece model with ELECTRA's special tokens at fixed ids.

  [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4 (control symbols: they never
  come out of ordinary text). Text is read like `prepare-pretraining` reads
  it (`input_pipeline.sources.LocalTextSource`: UTF-8 checks, WikiText
  handling); each line (sentence) is one SentencePiece training sentence.

  Args:
    inputs: text files or globs.
    vocab_size: number of pieces, special tokens included.
    out_dir: directory to write `spiece.model` (+ `spiece.vocab`,
      `tokenizer_config.json`) to.
    model_type: "unigram" or "bpe".
    lowercase: case-fold while normalising (NFKC + case folding).
    character_coverage: share of characters covered by the alphabet.
    max_sentences: sample this many lines (0 = all lines).
    seed: seed for the line sampling.
    num_threads: trainer threads (default: all cores).
    encoding_errors: invalid UTF-8 in the inputs: "strict" (an error naming
      the file, line and byte offset) or "replace" (U+FFFD), as
      `prepare-pretraining --encoding-errors`.

  Returns:
    the trained tokenizer.
  """
  if model_type not in ("unigram", "bpe"):
    raise ElectraError(f"model_type must be unigram or bpe, not {model_type!r}")
  if vocab_size <= len(SPECIAL_TOKENS) + 1:
    raise ElectraError(f"vocab_size={vocab_size} is too small: use at least a few hundred")
  lines, read_error = _training_lines(inputs, encoding_errors)
  model = _train_sentencepiece_model(
    lines,
    read_error,
    seed=seed,
    vocab_size=vocab_size,
    model_type=model_type,
    character_coverage=character_coverage,
    normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
    input_sentence_size=max_sentences,
    num_threads=num_threads or os.cpu_count() or 1,
  )
  tokenizer = SentencePieceTokenizer(model, source="trained model")
  out_dir = os.fspath(out_dir)
  tokenizer.save(out_dir)
  # A readable piece list next to the model, as spm_train writes.
  with open(os.path.join(out_dir, "spiece.vocab"), "w", encoding="utf-8") as f:
    for i in range(tokenizer.vocab_size):
      f.write(f"{tokenizer.convert_ids_to_tokens(i)}\t{tokenizer._sp.get_score(i)}\n")
  return tokenizer


def _training_lines(
  inputs: Sequence[str], encoding_errors: str
) -> tuple[Iterator[str], list[ElectraError]]:
  """The corpus's lines for SentencePiece, and a list that receives a read error.

  The same reader as prepare-pretraining, so the vocabulary is learnt on the
  text the model will see (WikiText headings dropped, paragraphs split into
  sentences). A generator: the corpus is streamed (SentencePiece samples
  `max_sentences` lines itself), not held as a Python list.
  """
  from electra_jax.input_pipeline import sources

  corpus = sources.LocalTextSource(inputs, errors=encoding_errors)
  lines = (line for doc in corpus for line in doc)
  first = next(lines, None)
  if first is None:
    raise ElectraError(f"no text in {', '.join(inputs)}: the corpus is empty")
  read_error = []

  def guarded(it):
    # An error raised inside SentencePiece's C++ loop comes back as a garbled
    # RuntimeError; stop the stream instead and re-raise ours afterwards.
    try:
      yield from it
    except ElectraError as e:
      read_error.append(e)

  return guarded(itertools.chain([first], lines)), read_error


def _train_sentencepiece_model(
  lines: Iterator[str], read_error: list[ElectraError], *, seed: int, **options
) -> bytes:
  """Runs the SentencePiece trainer with ELECTRA's special tokens; the model's bytes."""
  import io

  import sentencepiece as spm

  model = io.BytesIO()
  spm.set_random_generator_seed(seed)
  try:
    spm.SentencePieceTrainer.train(
      sentence_iterator=lines,
      model_writer=model,
      pad_id=0,
      pad_piece="[PAD]",
      unk_id=1,
      unk_piece="[UNK]",
      bos_id=2,
      bos_piece="[CLS]",
      eos_id=3,
      eos_piece="[SEP]",
      control_symbols=["[MASK]"],
      shuffle_input_sentence=True,
      minloglevel=2,
      **options,
    )
  except RuntimeError as e:
    if read_error:
      raise read_error[0] from None
    # e.g. "Vocabulary size too high (x). Please set it to a value <= y."
    msg = str(e).strip().splitlines()[-1]
    raise ElectraError(f"SentencePiece training failed: {msg}") from None
  if read_error:
    raise read_error[0]
  return model.getvalue()
