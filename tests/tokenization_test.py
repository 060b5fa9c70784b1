"""Tokenizers: WordPiece parity with HF (Python and Rust), SentencePiece training."""

import csv
import pickle

import numpy as np
import pytest

from electra_jax import cli, tokenization
from electra_jax.errors import ElectraError


def _read_tsv(path, columns, limit):
  with open(path, encoding="utf-8-sig") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  return [tuple(row[c] for c in columns) for row in rows[1 : limit + 1]]


@pytest.fixture(scope="module")
def glue_texts(shared_data):
  glue = shared_data / "glue_data"
  # CoLA dev has no header: column 3 is the sentence.
  with open(glue / "CoLA" / "dev.tsv", encoding="utf-8") as f:
    singles = [row[3] for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][:200]
  pairs = _read_tsv(glue / "RTE" / "dev.tsv", (1, 2), 120)  # long premises
  pairs += _read_tsv(glue / "MRPC" / "dev.tsv", (3, 4), 80)
  return singles, pairs


@pytest.fixture(scope="module")
def wordpiece(vocab_file):
  return tokenization.load_tokenizer(vocab_file)


@pytest.fixture(scope="module")
def hf_tokenizers(vocab_file):
  transformers = pytest.importorskip("transformers")
  # transformers 5: BertTokenizer is the Rust one (what ELECTRA maps to),
  # BertTokenizerLegacy the pure-Python one; v4 names them ...Fast / plain.
  slow_cls = getattr(transformers, "BertTokenizerLegacy", None) or transformers.ElectraTokenizer
  fast_cls = getattr(transformers, "ElectraTokenizerFast", None) or transformers.BertTokenizer
  return slow_cls(str(vocab_file)), fast_cls(str(vocab_file))


def test_special_ids_from_vocab(wordpiece):
  assert wordpiece.vocab_size == 30522
  assert wordpiece.special_ids == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}


def test_wordpiece_matches_hf_single(wordpiece, hf_tokenizers, glue_texts):
  slow, fast = hf_tokenizers
  singles, _ = glue_texts
  for text in singles:
    ours = wordpiece.encode(text).ids
    assert ours == slow(text)["input_ids"], text
    assert ours == fast(text)["input_ids"], text
    assert wordpiece.tokenize(text) == slow.tokenize(text)


def test_wordpiece_matches_hf_pairs_with_truncation(wordpiece, hf_tokenizers, glue_texts):
  slow, fast = hf_tokenizers
  _, pairs = glue_texts
  n_truncated = 0
  for a, b in pairs:
    full = wordpiece.encode(a, b)
    assert full.ids == fast(a, b)["input_ids"]
    assert full.type_ids == fast(a, b)["token_type_ids"]
    for max_length in (32, 57):
      ours = wordpiece.encode(a, b, max_length=max_length)
      ref = slow(
        a, b, truncation="longest_first", max_length=max_length, return_token_type_ids=True
      )
      assert ours.ids == ref["input_ids"], (a, b, max_length)
      assert ours.type_ids == ref["token_type_ids"]
      n_truncated += len(full.ids) > max_length
  assert n_truncated > 50  # the comparison exercised truncation


def test_truncation_tie_follows_official_rule(wordpiece, hf_tokenizers):
  # Equal lengths and an odd budget: the official _truncate_seq_pair (and HF's
  # Python tokenizer) trims B first; HF's Rust tokenizer trims A first.
  slow, _ = hf_tokenizers
  a, b = "one two three four", "five six seven eight"
  ours = wordpiece.encode(a, b, max_length=8)
  assert wordpiece.convert_ids_to_tokens(ours.ids) == [
    "[CLS]", "one", "two", "three", "[SEP]", "five", "six", "[SEP]"
  ]  # fmt: skip
  assert ours.ids == slow(a, b, truncation=True, max_length=8)["input_ids"]


def test_truncate_pair_lengths_equals_pop_loop():
  def pop_loop(a, b, budget):
    while a + b > budget:
      if a > b:
        a -= 1
      else:
        b -= 1
    return a, b

  for a in range(15):
    for b in range(15):
      for budget in range(20):
        assert tokenization.truncate_pair_lengths(a, b, budget) == pop_loop(a, b, budget)
  assert tokenization.truncate_pair_lengths(9, None, 4) == (4, 0)


def test_encode_batch_matches_hf_padding(wordpiece, hf_tokenizers, glue_texts):
  slow, _ = hf_tokenizers
  _, pairs = glue_texts
  a, b = zip(*pairs[:64])
  ours = wordpiece.encode_batch(a, b, max_length=48, pad_to=48)
  ref = slow(
    list(a),
    list(b),
    truncation="longest_first",
    max_length=48,
    padding="max_length",
    return_token_type_ids=True,
  )
  for key in ("input_ids", "attention_mask", "token_type_ids"):
    assert ours[key].dtype == np.int32
    np.testing.assert_array_equal(ours[key], np.array(ref[key]), err_msg=key)
  dynamic = wordpiece.encode_batch(a[:3])
  assert dynamic["input_ids"].shape[1] == max(len(wordpiece.encode(t).ids) for t in a[:3])
  with pytest.raises(ElectraError, match="pad_to"):
    wordpiece.encode_batch(a[:3], pad_to=4)


def test_offsets_point_into_original_text(wordpiece, glue_texts):
  singles, pairs = glue_texts
  checked = 0
  for text, pair in [(s, None) for s in singles[:100]] + pairs[:50]:
    enc = wordpiece.encode(text, pair)
    for token, (start, end), type_id in zip(enc.tokens, enc.offsets, enc.type_ids):
      if token in ("[CLS]", "[SEP]"):
        assert (start, end) == (0, 0)
        continue
      source = text if type_id == 0 else pair
      span = source[start:end]
      assert 0 <= start < end <= len(source)
      if token != "[UNK]" and span.isascii():
        assert span.lower() == token.removeprefix("##"), (token, span)
        checked += 1
  assert checked > 1000


def test_save_load_round_trip_and_pickle(wordpiece, tmp_path):
  wordpiece.save(tmp_path / "tok")
  again = tokenization.load_tokenizer(tmp_path / "tok")
  assert again.fingerprint == wordpiece.fingerprint
  text = "The ELECTRA discriminator, résumé-ready."
  assert again.encode(text).ids == wordpiece.encode(text).ids
  assert pickle.loads(pickle.dumps(wordpiece)).encode(text).ids == wordpiece.encode(text).ids
  cased = tokenization.load_tokenizer(tmp_path / "tok", lowercase=False)
  assert cased.fingerprint != wordpiece.fingerprint
  assert wordpiece.decode(wordpiece.encode("hello world").ids) == "hello world"


def test_tokenizer_json_loads(wordpiece, hf_tokenizers, tmp_path):
  _, fast = hf_tokenizers
  fast.save_pretrained(str(tmp_path / "hf"))
  (tmp_path / "hf" / "vocab.txt").unlink(missing_ok=True)  # force the tokenizer.json path
  loaded = tokenization.load_tokenizer(tmp_path / "hf")
  text = "Tokenizers read from tokenizer.json agree."
  assert loaded.encode(text, "and pairs").ids == wordpiece.encode(text, "and pairs").ids
  assert loaded.mask_id == 103


def test_bad_inputs(tmp_path):
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("[PAD]\n[UNK]\nhello\nworld\n", encoding="utf-8")
  with pytest.raises(
    ElectraError, match=r"lacks the special token\(s\) \[CLS\], \[SEP\], \[MASK\]"
  ):
    tokenization.load_tokenizer(vocab)
  with pytest.raises(ElectraError, match="does not exist"):
    tokenization.load_tokenizer(tmp_path / "missing.txt")
  with pytest.raises(ElectraError, match="no tokenizer in"):
    (tmp_path / "empty").mkdir()
    tokenization.load_tokenizer(tmp_path / "empty")
  bad = tmp_path / "sub" / "bad.model"
  bad.parent.mkdir()
  bad.write_bytes(b"not a model")
  with pytest.raises(ElectraError, match="not a SentencePiece model"):
    tokenization.load_tokenizer(bad)


@pytest.fixture(scope="module")
def shakespeare_slice(shared_data, tmp_path_factory):
  path = shared_data / "text" / "tinyshakespeare" / "input.txt"
  if not path.exists():
    pytest.skip(f"{path} not found")
  lines = path.read_text(encoding="utf-8").splitlines()[:6000]
  out = tmp_path_factory.mktemp("corpus") / "shakespeare.txt"
  out.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return out


@pytest.fixture(scope="module")
def sentencepiece_dir(shakespeare_slice, tmp_path_factory):
  out = tmp_path_factory.mktemp("spm") / "tok"
  tokenization.train_sentencepiece([str(shakespeare_slice)], 800, out, num_threads=2)
  return out


def test_sentencepiece_training_fixed_special_ids(sentencepiece_dir):
  tok = tokenization.load_tokenizer(sentencepiece_dir)
  assert isinstance(tok, tokenization.SentencePieceTokenizer)
  assert tok.vocab_size == 800
  assert tok.special_ids == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
  assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == list(tokenization.SPECIAL_TOKENS)
  # Control symbols: literal "[MASK]" in text is ordinary text, not the mask id.
  assert tok.mask_id not in tok.encode_ids_batch(["a [MASK] here"])[0]
  text = "First Citizen: Before we proceed any further, hear me speak."
  enc = tok.encode(text, "All: Speak, speak.")
  assert enc.ids[0] == 2 and enc.ids.count(3) == 2
  assert tok.decode(enc.ids) == text + " All: Speak, speak."
  assert enc.ids == tok.encode_batch([text], ["All: Speak, speak."])["input_ids"][0].tolist()
  # Common words are single pieces after training on this corpus.
  assert tok.tokenize("the king")[0] == "\u2581the"


def test_sentencepiece_offsets_and_round_trip(sentencepiece_dir, tmp_path):
  tok = tokenization.load_tokenizer(sentencepiece_dir / "spiece.model")
  text = "Où est le roi? The king is here, my lord."
  enc = tok.encode(text)
  for piece, (start, end) in zip(enc.tokens[1:-1], enc.offsets[1:-1]):
    assert 0 <= start <= end <= len(text)
    surface = piece.replace("\u2581", "")
    if surface and piece not in ("[UNK]",) and text[start:end].isascii():
      assert text[start:end] == surface, (piece, text[start:end])
  tok.save(tmp_path / "copy")
  again = tokenization.load_tokenizer(tmp_path / "copy")
  assert again.fingerprint == tok.fingerprint
  assert pickle.loads(pickle.dumps(tok)).encode(text).ids == enc.ids
  truncated = tok.encode(text, "a second segment", max_length=10)
  assert len(truncated.ids) == 10 and truncated.type_ids[-1] == 1


def test_cli_tokenizer_train(shakespeare_slice, tmp_path, capsys):
  out = tmp_path / "cli_tok"
  code = cli.main(
    ["tokenizer", "train", "--input", str(shakespeare_slice), "--vocab-size", "500",
     "--out", str(out), "--lowercase"]
  )  # fmt: skip
  assert code == 0
  tok = tokenization.load_tokenizer(out)
  assert tok.vocab_size == 500 and tok.cls_id == 2
  assert tok.tokenize("KING") == tok.tokenize("king")
  assert str(out) in capsys.readouterr().out
  assert cli.main(["tokenizer", "train", "--input", str(tmp_path / "nope*.txt"), "--vocab-size",
                   "500", "--out", str(tmp_path / "x")]) == 2  # fmt: skip
  assert "matches no files" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
def test_load_from_electra_jax_checkpoint(
  kind, wordpiece, sentencepiece_dir, tmp_path, tiny_config
):
  import jax

  from electra_jax import model, pretrained

  if kind == "wordpiece":
    tok = wordpiece
    tok_dir = tok.save(tmp_path / "tok")
  else:
    tok_dir = sentencepiece_dir
    tok = tokenization.load_tokenizer(tok_dir)
  config = tiny_config.replace(vocab_size=tok.vocab_size)
  params = model.init_params(model.build_model(config), jax.random.key(0))
  ckpt = pretrained.save_pretrained(tmp_path / "ckpt", config, params, tokenizer_dir=tok_dir)
  loaded = tokenization.load_tokenizer(ckpt)
  assert loaded.fingerprint == tok.fingerprint and loaded.special_ids == tok.special_ids


def test_sentencepiece_training_errors(tmp_path):
  empty = tmp_path / "empty.txt"
  empty.write_text("\n \n", encoding="utf-8")
  with pytest.raises(ElectraError, match="the corpus is empty"):
    tokenization.train_sentencepiece([str(empty)], 100, tmp_path / "o")
  latin = tmp_path / "latin.txt"
  latin.write_bytes("na\u00efve text\n".encode("latin-1"))
  with pytest.raises(
    ElectraError, match=r"latin\.txt is not UTF-8: invalid byte 0xef at byte offset 2"
  ):
    tokenization.train_sentencepiece([str(latin)], 100, tmp_path / "o")
  late = tmp_path / "late.txt"
  late.write_bytes(b"good line one\ngood line two\nbad \xff here\n")
  with pytest.raises(
    ElectraError, match=r"late\.txt is not UTF-8: invalid byte 0xff at byte offset 32 \(line 3\)"
  ):
    tokenization.train_sentencepiece([str(late)], 50, tmp_path / "o")
  tiny = tmp_path / "tiny.txt"
  tiny.write_text("a b c\n", encoding="utf-8")
  with pytest.raises(ElectraError, match="SentencePiece training failed: .*[Vv]ocabulary size"):
    tokenization.train_sentencepiece([str(tiny)], 5000, tmp_path / "o")
  assert not (tmp_path / "o").exists()
