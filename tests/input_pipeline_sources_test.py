"""Text sources: plain and WikiText layouts, UTF-8 policy, globs, tfds."""

import pytest
import tensorflow_datasets as tfds

from electra_jax.errors import ElectraError
from electra_jax.input_pipeline import sources


def _write(path, text, encoding="utf-8"):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
  return path


def test_plain_layout_blank_lines_separate_documents(tmp_path):
  _write(tmp_path / "a.txt", "\ufeffFirst doc line one.\r\nline two\n\n\n  \nSecond doc.\n")
  _write(tmp_path / "b.txt", "Third doc, no trailing newline")
  docs = list(sources.LocalTextSource([str(tmp_path / "*.txt")]))
  assert docs == [
    ["First doc line one.", "line two"],
    ["Second doc."],
    ["Third doc, no trailing newline"],
  ]


def test_plain_layout_can_split_sentences(tmp_path):
  _write(tmp_path / "a.txt", 'He left. "Why?" she asked! It was 5 p.m. then.\n')
  docs = list(sources.LocalTextSource([str(tmp_path / "a.txt")], sentences="split"))
  assert docs == [["He left.", '"Why?" she asked!', "It was 5 p.m. then."]]


def test_wikitext_layout(tmp_path):
  text = (
    " \n = Homarus gammarus = \n \n Homarus gammarus is a lobster . It is 0 @.@ 7 m long "
    "and well @-@ known . \n \n = = Description = = \n \n It has 1 @,@ 000 eggs . \n"
    " = = = Sub section = = = \n Another paragraph . \n \n = Second article = \n \n Text two . \n"
  )
  path = _write(tmp_path / "wiki.valid.raw", text)
  docs = list(sources.LocalTextSource([str(path)]))
  assert docs == [
    [
      "Homarus gammarus is a lobster .",
      "It is 0.7 m long and well-known .",
      "It has 1,000 eggs .",
      "Another paragraph .",
    ],
    ["Text two ."],
  ]
  # layout="plain" keeps the official behaviour: every blank line ends a document.
  plain = list(sources.LocalTextSource([str(path)], layout="plain"))
  assert plain[0] == ["= Homarus gammarus ="] and len(plain) == 6


def test_real_wikitext_articles(shared_data):
  path = shared_data / "text" / "wikitext-2-raw" / "wiki.valid.raw"
  raw = path.read_text(encoding="utf-8")
  titles = [line for line in raw.splitlines() if sources._WIKITEXT_TITLE.match(line)]
  docs = list(sources.LocalTextSource([str(path)]))
  assert len(docs) == len(titles) == 60
  lines = [s for d in docs for s in d]
  assert not any(line.startswith("= ") for line in lines)
  assert not any(" @-@ " in line for line in lines)


def test_invalid_utf8_names_file_and_offset(tmp_path):
  path = _write(tmp_path / "latin1.txt", "caf\u00e9 ok\nna\u00efve\n", encoding="latin-1")
  with pytest.raises(
    ElectraError, match=r"latin1\.txt is not UTF-8: invalid byte 0xe9 at byte offset 3 \(line 1\)"
  ):
    list(sources.LocalTextSource([str(path)]))
  with pytest.raises(ElectraError, match=r"byte offset 12 \(line 2\)"):
    list(sources.iter_file_lines([str(_write(tmp_path / "x.txt", b"good line\nna\xefve\n"))]))
  docs = list(sources.LocalTextSource([str(path)], errors="replace"))
  assert docs == [["caf\ufffd ok", "na\ufffdve"]]


def test_paths_globs_and_directories(tmp_path):
  _write(tmp_path / "d" / "b.txt", "b\n")
  _write(tmp_path / "d" / "sub" / "a.txt", "a\n")
  _write(tmp_path / "d" / ".hidden", "h\n")
  assert sources.expand_paths([str(tmp_path / "d")]) == [
    str(tmp_path / "d" / "b.txt"),
    str(tmp_path / "d" / "sub" / "a.txt"),
  ]
  assert sources.expand_paths([str(tmp_path / "d" / "**" / "*.txt")]) == [
    str(tmp_path / "d" / "b.txt"),
    str(tmp_path / "d" / "sub" / "a.txt"),
  ]
  with pytest.raises(ElectraError, match="matches no files"):
    sources.expand_paths([str(tmp_path / "nothing*.txt")])


def test_make_sources_groups_specs(tmp_path):
  _write(tmp_path / "a.txt", "a\n")
  srcs = sources.make_sources([str(tmp_path / "a.txt"), "tfds:wikipedia/20230601.en:train[:1%]"])
  assert isinstance(srcs[0], sources.LocalTextSource)
  assert (srcs[1].name, srcs[1].split) == ("wikipedia/20230601.en", "train[:1%]")
  with pytest.raises(ElectraError, match="no input"):
    sources.make_sources([])


TFDS_DOCS = [
  "Tfds document one. It has two sentences.\nAnd a second line.",
  "Second tfds document.",
  "",
  "Third one: caf\u00e9 au lait.",
]


class ElectraTinyText(tfds.core.GeneratorBasedBuilder):
  """A real tfds builder over local strings (defined once: tfds registers by name)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()})
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i, text in enumerate(TFDS_DOCS):
      yield i, {"text": text}


def _prepare_tiny_tfds(data_dir):
  """Prepares the dataset (array_record files) under `data_dir`; no TensorFlow."""
  builder = ElectraTinyText(data_dir=str(data_dir), file_format="array_record")
  builder.download_and_prepare()
  return builder.name


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  return _prepare_tiny_tfds(data_dir), str(data_dir)


def test_tfds_source_reads_prepared_dataset(tiny_tfds):
  name, data_dir = tiny_tfds
  docs = list(sources.TfdsSource(name, "train", data_dir=data_dir))
  expected = [
    ["Tfds document one.", "It has two sentences.", "And a second line."],
    ["Second tfds document."],
    ["Third one: caf\u00e9 au lait."],
  ]
  # tfds stores records in its own (hashed) order; the empty one yields nothing.
  assert sorted(docs) == sorted(expected)
  assert docs == list(sources.TfdsSource(name, "train", data_dir=data_dir))
  with pytest.raises(ElectraError, match="no feature 'body'"):
    list(sources.TfdsSource(name, "train", data_dir=data_dir, text_key="body"))
  with pytest.raises(ElectraError, match="cannot open tfds dataset"):
    list(sources.TfdsSource("no_such_dataset_xyz", "train", data_dir=data_dir))
