"""predict for token-classification / multiple-choice models: input errors come before the model loads."""

import io
import json

import pytest

from electra_jax import predict_tasks
from electra_jax.errors import ElectraError


def _predict(tmp_path, name, text, head="token_classification", **kwargs):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  settings = dict(batch_size=8, max_seq_length=None, fmt=None, evaluate=False, progress=False)
  settings.update(kwargs)
  return predict_tasks.predict_file(
    str(tmp_path / "no_model"), head, path, tmp_path / "out.conll", log=io.StringIO(), **settings
  )


@pytest.mark.parametrize(
  "name, text, kwargs, message",
  [
    ("rows.csv", "text\nJohn\n", {}, "reads text (.txt, one sentence per line) or CoNLL"),
    ("rows.jsonl", '{"text": "John"}\n', {}, "not jsonl"),
    ("in.txt", "John lives here\n", {"evaluate": True}, "--eval needs gold tags"),
    ("in.conll", "John B-PER\nlives\n", {}, "in.conll:2: 1 column(s)"),
    ("in.conll", "John\nlives\n", {"evaluate": True}, "in.conll:1: one column"),
    ("empty.txt", "\n\n", {}, "has no text"),
  ],
)
def test_token_input_errors_are_one_line_and_write_nothing(tmp_path, name, text, kwargs, message):
  with pytest.raises(ElectraError) as e:
    _predict(tmp_path, name, text, **kwargs)
  assert message in str(e.value) and "\n" not in str(e.value)
  assert not (tmp_path / "out.conll").exists()


def test_model_head_of_directories(tmp_path):
  assert predict_tasks.model_head(str(tmp_path)) is None
  (tmp_path / "config.json").write_text('{"architectures": ["ElectraForTokenClassification"]}')
  assert predict_tasks.model_head(str(tmp_path)) == "token_classification"
  (tmp_path / "config.json").write_text('{"architectures": ["ElectraForMultipleChoice"]}')
  assert predict_tasks.model_head(str(tmp_path)) == "multiple_choice"


def test_label_list_prefers_the_stored_map():
  assert predict_tasks.label_list({"label_map": ["B-X", "O"]}, 2) == ["B-X", "O"]
  assert predict_tasks.label_list({"id2label": {"1": "O", "0": "B-X"}}, 2) == ["B-X", "O"]
  assert predict_tasks.label_list({}, 2) == ["LABEL_0", "LABEL_1"]
  with pytest.raises(ElectraError, match="2 labels but its label map 3"):
    predict_tasks.label_list({"label_map": ["a", "b", "c"]}, 2)


def test_gold_tags_come_from_the_column_the_model_was_trained_with(tmp_path):
  from electra_jax import serving

  model = tmp_path / "no_model"  # an export directory whose function is never reached
  model.mkdir()
  (model / serving.EXPORT_FILE).write_bytes(b"")
  config = {"format": serving.EXPORT_FORMAT, "version": serving.EXPORT_VERSION, "num_labels": 2}
  config.update(max_seq_length=8, head="token_classification", tag_column=2)
  (model / serving.SERVING_CONFIG).write_text(json.dumps(config))
  assert predict_tasks.model_head(str(model)) == "token_classification"
  with pytest.raises(ElectraError, match="tag_column=2 does not name a tag column"):
    _predict(tmp_path, "in.conll", "John B-PER\n", evaluate=True)
  with pytest.raises(ElectraError, match="cannot deserialize"):  # column 2 exists: read, then load
    _predict(tmp_path, "in.conll", "John NNP B-PER\n", evaluate=True)
