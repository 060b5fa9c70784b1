"""Bad input on the command line: one line on stderr, exit status 2, nothing left behind.

Each row of `ROWS` is a mistake a user made with a README command: the
arguments of `electra_jax.cli.main`, the files to create first, and a piece
of the expected message. The test checks the exit status, that stderr is a
single `electra-jax: error: ...` line with no traceback, and that the
temporary directory holds exactly what it held before (no workdir, no stale
file). Models are off limits: building one fails the row, so every error
must come before anything is compiled.
"""

import json
import os

import pytest

from electra_jax import cli, job_setup, model, objectives, pretraining, sharding, train, validate
from electra_jax.errors import ElectraError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PT = os.path.join(REPO, "experiments", "configs", "pretrain.py")
FT = os.path.join(REPO, "experiments", "configs", "glue.py")
SAMPLE = job_setup.SAMPLE_DATA

LATIN1_CSV = "text,label\nun film tr\xe8s beau,1\nennuyeux,0\n".encode("latin-1")
LATIN1_TEXT = "Un caf\xe9 tr\xe8s noir.\n".encode("latin-1")
# What a pretraining workdir looks like from outside (finished, or still running).
PT_WORKDIR = {"pt/final/discriminator/electra_jax.json": "{}", "pt/checkpoints/": None}
PT_RUNNING = {
  "pt/checkpoints/": None,
  "pt/results.json": json.dumps({"config": {"objective": "electra", "size": "tiny"}}),
}


def pt(*extra, arg="size=tiny"):
  """`electra-jax pretrain` on the bundled text, plus `extra` arguments."""
  data = os.path.join(SAMPLE, "wikitext2_sample.txt")
  return [
    "pretrain",
    "--config",
    f"{PT}:{arg}",
    "--workdir",
    "{wd}",
    f"--config.data={data}",
    *extra,
  ]


def ft(*extra, arg="task=custom,size=tiny"):
  """`electra-jax finetune` on the bundled SST-2 excerpt, plus `extra` arguments."""
  return [
    "finetune",
    "--config",
    f"{FT}:{arg}",
    "--workdir",
    "{wd}",
    f"--config.train_file={os.path.join(SAMPLE, 'sst2_train_sample.tsv')}",
    f"--config.dev_file={os.path.join(SAMPLE, 'sst2_dev_sample.tsv')}",
    "--config.text_column=sentence",
    *extra,
  ]


def glue_ft(*extra, task="sst2"):
  return ["finetune", "--config", f"{FT}:task={task},size=tiny", "--workdir", "{wd}", *extra]


def tc_ft(*extra, train="{tmp}/train.conll"):
  """`electra-jax finetune` of token classification on `train` (a file the row creates)."""
  tc = os.path.join(REPO, "experiments", "configs", "token_classification.py")
  return ["finetune", "--config", f"{tc}:size=tiny", "--workdir", "{wd}", *extra] + (
    [f"--config.train_file={train}"] if train else []
  )


def mc_ft(*extra, train="{tmp}/train.csv"):
  """`electra-jax finetune` of multiple choice on `train` (a file the row creates)."""
  mc = os.path.join(REPO, "experiments", "configs", "multiple_choice.py")
  return ["finetune", "--config", f"{mc}:size=tiny", "--workdir", "{wd}", *extra] + (
    [f"--config.train_file={train}"] if train else []
  )


CONLL = {"train.conll": "John B-PER\nlives O\n\nMary B-PER\n"}
SWAG_HEADER = "sent1,sent2,ending0,ending1,ending2,ending3,label\n"
SWAG = {"train.csv": SWAG_HEADER + "A man,He,runs,sits,eats,sleeps,0\n"}

# (id, argv, files to create under tmp, expected piece of the message)
ROWS = [
  # 1. The config string and overrides.
  (
    "arg-typo-pretrain",
    pt(arg="sise=tiny"),
    {},
    "unknown argument 'sise=tiny' (did you mean 'size'?): the argument takes size=..., objective=...",
  ),
  ("arg-dropped-pretrain", pt(arg="size=tiny,steps=5"), {}, "unknown argument 'steps=5'"),
  ("arg-typo-finetune", ft(arg="task=custom,sise=tiny"), {}, "takes task=..., size=..."),
  ("arg-without-key", pt(arg="tiny"), {}, "unknown argument 'tiny'"),
  (
    "size-typo",
    pt(arg="size=smal"),
    {},
    "pretrain.py:size=smal: unknown size 'smal'; choose from tiny, small, base, large",
  ),
  (
    "override-typo",
    ft("--config.text_colum=x"),
    {},
    "unknown config key 'text_colum' (did you mean 'text_column'?); run with --help-config to list the keys",
  ),
  (
    "nested-override-typo",
    pt("--config.model.hiden_size=32"),
    {},
    "unknown config key 'model.hiden_size' (did you mean 'model.hidden_size'?)",
  ),
  ("override-bad-value", ft("--config.batch_size=many"), {}, "--config.batch_size=many: invalid"),
  # 2. What used to be tracebacks.
  (
    "latin1-custom-csv",
    ft("--config.train_file={tmp}/train.csv", "--config.text_column=text"),
    {"train.csv": LATIN1_CSV},
    "train.csv is not UTF-8: invalid byte 0xe8 at byte offset 21 (line 2); re-encode it as UTF-8",
  ),
  (
    "latin1-custom-dev-jsonl",
    ft("--config.dev_file={tmp}/dev.jsonl"),
    {"dev.jsonl": b'{"sentence": "ok", "label": "1"}\n{"sentence": "caf\xe9", "label": "0"}\n'},
    "dev.jsonl is not UTF-8: invalid byte 0xe9 at byte offset 50 (line 2)",
  ),
  (
    "latin1-glue-tsv",
    glue_ft("--config.data_dir={tmp}/glue"),
    {"glue/SST-2/train.tsv": b"sentence\tlabel\nbon caf\xe9\t1\n", "glue/SST-2/dev.tsv": "a\t1\n"},
    "train.tsv is not UTF-8: invalid byte 0xe9 at byte offset 22 (line 2)",
  ),
  ("batch-size-0", ft("--config.batch_size=0"), {}, "--config.batch_size must be a positive"),
  ("eval-batch-size-0", ft("--config.eval_batch_size=0"), {}, "--config.eval_batch_size must be"),
  ("workdir-is-file-pretrain", pt(), {"wd": "x"}, "--workdir {wd} exists and is not a directory"),
  ("workdir-is-file-finetune", ft(), {"wd": "x"}, "--workdir {wd} exists and is not a directory"),
  (
    "workdir-is-file-quickstart",
    ["quickstart", "--workdir", "{wd}"],
    {"wd": "x"},
    "--workdir {wd} exists and is not a directory",
  ),
  (
    "workdir-under-a-file",
    ["pretrain", "--config", f"{PT}:size=tiny", "--workdir", "{tmp}/f/wd"],
    {"f": "x"},
    "is a file, so the directory cannot be created",
  ),
  # 3. Hints that pointed the wrong way.
  (
    "epochs-0",
    ft("--config.epochs=0"),
    {},
    "--config.epochs must be a positive integer (>= 1), got 0",
  ),
  (
    "batch-size-negative",
    ft("--config.batch_size=-8"),
    {},
    "--config.batch_size must be a positive integer (>= 1), got -8",
  ),
  (
    "init-from-pretraining-workdir",
    ft("--config.init_from={tmp}/pt"),
    PT_WORKDIR,
    "--config.init_from={tmp}/pt is a pretraining workdir, not a model: use "
    "--config.init_from={tmp}/pt/final/discriminator",
  ),
  (
    "init-from-running-pretraining-workdir",
    ft("--config.init_from={tmp}/pt"),
    PT_RUNNING,
    "final/discriminator (written when that run completes)",
  ),
  (
    "pretrain-init-from-pretraining-workdir",
    pt("--config.init_from_generator={tmp}/pt"),
    PT_WORKDIR,
    "use --config.init_from_generator={tmp}/pt/final/generator",
  ),
  (
    "tokenizer-train-latin1",
    ["tokenizer", "train", "--input", "{tmp}/fr.txt", "--vocab-size", "100", "--out", "{tmp}/tok"],
    {"fr.txt": LATIN1_TEXT},
    "fr.txt is not UTF-8: invalid byte 0xe9 at byte offset 6 (line 1); re-encode it as UTF-8 "
    "(e.g. iconv -f latin1 -t utf-8), or pass --encoding-errors replace to prepare-pretraining or "
    "tokenizer train",
  ),
  (
    "prepare-pretraining-latin1",
    ["prepare-pretraining", "--input", "{tmp}/fr.txt", "--tokenizer", SAMPLE, "--out", "{tmp}/out"],
    {"fr.txt": LATIN1_TEXT},
    "fr.txt is not UTF-8: invalid byte 0xe9 at byte offset 6 (line 1)",
  ),
  # 4. Short runs, task names, and values out of range.
  (
    "tiny-short-run-warmup",
    pt("--config.total_steps=10"),
    {},
    "--config.warmup_steps=30 is more than --config.total_steps=10: set --config.warmup_steps to "
    "at most 10 (e.g. --config.warmup_steps=1)",
  ),
  (
    "task-alias",
    glue_ft(task="sst-2"),
    {},
    "unknown task 'sst-2' (did you mean 'sst2'?); tasks: cola",
  ),
  ("task-alias-long", glue_ft(task="sts-b"), {}, "unknown task 'sts-b' (did you mean 'stsb'?)"),
  ("task-override", ft("--config.task=SST-2"), {}, "unknown task 'SST-2' (did you mean 'sst2'?)"),
  ("task-unknown", glue_ft(task="nope"), {}, "unknown task 'nope'; tasks: cola, sst2, mrpc"),
  ("task-without-train-split", glue_ft(task="ax"), {}, "task ax has no training split"),
  ("pretrain-seed-negative", pt("--config.seed=-1"), {}, "--config.seed must be an integer >= 0"),
  ("pretrain-steps-0", pt("--config.total_steps=0"), {}, "--config.total_steps must be a positive"),
  ("pretrain-warmup-negative", pt("--config.warmup_steps=-1"), {}, "--config.warmup_steps must be"),
  ("pretrain-log-every-0", pt("--config.log_every=0"), {}, "--config.log_every must be a positive"),
  (
    "pretrain-checkpoint-every-0",
    pt("--config.checkpoint_every=0"),
    {},
    "--config.checkpoint_every must be a positive",
  ),
  ("pretrain-keep-0", pt("--config.keep_checkpoints=0"), {}, "--config.keep_checkpoints must be"),
  ("pretrain-max-seq-0", pt("--config.max_seq_length=0"), {}, "--config.max_seq_length must be"),
  (
    "pretrain-max-seq-over-positions",
    pt("--config.max_seq_length=1024"),
    {},
    "--config.max_seq_length=1024 exceeds --config.model.max_position_embeddings=512",
  ),
  ("pretrain-lr-negative", pt("--config.learning_rate=-0.001"), {}, "--config.learning_rate must"),
  ("pretrain-batch-0", pt("--config.batch_size=0"), {}, "--config.batch_size must be a positive"),
  (
    "pretrain-accum-not-dividing",
    pt("--config.grad_accum_steps=3"),
    {},
    "--config.batch_size=16 must be divisible by --config.grad_accum_steps=3",
  ),
  ("pretrain-mask-prob-0", pt("--config.mask_prob=0.0"), {}, "--config.mask_prob must be a number"),
  ("pretrain-objective", pt("--config.objective=bert"), {}, "--config.objective='bert' is not one"),
  ("pretrain-heads", pt("--config.model.num_attention_heads=3"), {}, "is not a multiple of"),
  ("pretrain-dtype", pt("--config.compute_dtype=fp8"), {}, "--config.compute_dtype='fp8'"),
  ("pretrain-rules", pt("--config.sharding_rules=tp"), {}, "--config.sharding_rules='tp'"),
  ("pretrain-mesh-0", pt("--config.mesh.data=0"), {}, "--config.mesh.data must be a device count"),
  ("pretrain-data-empty", pt("--config.data="), {}, "--config.data is empty"),
  ("pretrain-data-missing", pt("--config.data={tmp}/nope/*.txt"), {}, "matches no file"),
  ("pretrain-tokenizer-missing", pt("--config.tokenizer={tmp}/v.txt"), {}, "tokenizer {tmp}/v.txt"),
  ("pretrain-init-from-missing", pt("--config.init_from={tmp}/m"), {}, "--config.init_from: model"),
  ("finetune-seed-negative", ft("--config.seed=-3"), {}, "--config.seed must be an integer >= 0"),
  ("finetune-seeds-0", ft("--seeds", "0"), {}, "--config.seeds (--seeds) must be a positive"),
  ("finetune-log-every-0", ft("--config.log_every=0"), {}, "--config.log_every must be a positive"),
  ("finetune-checkpoint-every-0", ft("--config.checkpoint_every=0"), {}, "checkpoint_every must"),
  ("finetune-max-seq-2", ft("--config.max_seq_length=2"), {}, "--config.max_seq_length must be"),
  ("finetune-lr-negative", ft("--config.learning_rate=-0.1"), {}, "--config.learning_rate must"),
  ("finetune-warmup-fraction", ft("--config.warmup_fraction=1.5"), {}, "warmup_fraction must be"),
  ("finetune-llrd-0", ft("--config.layerwise_lr_decay=0.0"), {}, "layerwise_lr_decay must be"),
  ("finetune-dropout-1", ft("--config.dropout=1.0"), {}, "--config.dropout must be a number"),
  ("finetune-augment", ft("--config.augment.token_dropout=2.0"), {}, "augment.token_dropout must"),
  ("finetune-class-weights", ft("--config.class_weights=inverse"), {}, "class_weights must be"),
  ("finetune-max-train-negative", ft("--config.max_train_examples=-1"), {}, "max_train_examples"),
  (
    "finetune-train-missing",
    ft("--config.train_file={tmp}/t.csv"),
    {},
    "training file {tmp}/t.csv",
  ),
  (
    "finetune-custom-without-train-file",
    ["finetune", "--config", f"{FT}:task=custom,size=tiny", "--workdir", "{wd}"],
    {},
    "task=custom needs --config.train_file",
  ),
  ("finetune-init-from-missing", ft("--config.init_from={tmp}/m"), {}, "--config.init_from: model"),
  ("glue-data-dir-missing", glue_ft("--config.data_dir={tmp}/g"), {}, "GLUE data_dir {tmp}/g"),
  (
    "tc-train-file-unset",
    tc_ft(train=""),
    {},
    "task=token_classification needs --config.train_file",
  ),
  (
    "tc-train-file-missing",
    tc_ft(),
    {},
    "--config.train_file: training file {tmp}/train.conll not",
  ),
  ("tc-glue-config", glue_ft(task="token_classification"), {}, "takes its own config: --config"),
  (
    "tc-conll-columns",
    tc_ft(),
    {"train.conll": "John B-PER\nlives\n"},
    "{tmp}/train.conll:2: 1 column(s) where the file's first token line has 2",
  ),
  ("tc-conll-one-column", tc_ft(), {"train.conll": "John\n"}, "train.conll:1: one column"),
  ("tc-tag-column", tc_ft("--config.tag_column=2"), CONLL, "tag_column=2 does not name a tag"),
  ("tc-not-utf8", tc_ft(), {"train.conll": LATIN1_TEXT}, "train.conll is not UTF-8"),
  ("tc-unseen-policy", tc_ft("--config.unseen_tags=drop"), CONLL, "unseen_tags='drop' is not one"),
  (
    "tc-unseen-dev-tag",
    tc_ft("--config.dev_file={tmp}/dev.conll"),
    {**CONLL, "dev.conll": "Paris B-LOC\n"},
    "{tmp}/dev.conll:1: dev tag 'B-LOC' never occurs in the training file",
  ),
  ("mc-train-file-unset", mc_ft(train=""), {}, "task=multiple_choice needs --config.train_file"),
  ("mc-column-missing", mc_ft("--config.prefix_column=intro"), SWAG, "no column(s) ['intro']"),
  ("mc-one-ending", mc_ft("--config.ending_columns=ending0"), SWAG, "names 1 column(s)"),
  (
    "mc-label-not-a-choice",
    mc_ft(),
    {"train.csv": SWAG_HEADER + "A man,He,runs,sits,eats,sleeps,4\n"},
    "train.csv:2: label '4' is not a choice index 0..3",
  ),
  (
    "mc-row-fields",
    mc_ft(),
    {"train.csv": SWAG_HEADER + "A man,He,runs,sits,eats,0\n"},
    "train.csv:2: expected 7 columns like the header, found 6",
  ),
  (
    "glue-train-file-missing",
    glue_ft("--config.data_dir={tmp}/glue"),
    {"glue/SST-2/": None},
    "has no sst2 training file {tmp}/glue/SST-2/train.tsv",
  ),
]


def _listing(root) -> set[str]:
  out = set()
  for base, dirs, files in os.walk(root):
    for name in dirs + files:
      out.add(os.path.relpath(os.path.join(base, name), root))
  return out


@pytest.fixture
def no_models(monkeypatch):
  """Fails the test if a model is built or the train loop starts: errors must come first."""

  def refuse(*args, **kwargs):
    raise AssertionError("a model was built before the bad input was reported")

  for target, name in (
    (model, "build_model"),
    (pretraining, "build_rtd_model"),
    (train, "train_loop"),
  ):
    monkeypatch.setattr(target, name, refuse)


@pytest.mark.parametrize(
  "argv, files, expected", [row[1:] for row in ROWS], ids=[row[0] for row in ROWS]
)
def test_bad_input_is_one_line_and_leaves_nothing(
  tmp_path, capsys, no_models, argv, files, expected
):
  for rel, content in files.items():
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
      path.mkdir(exist_ok=True)
    elif isinstance(content, bytes):
      path.write_bytes(content)
    else:
      path.write_text(content, encoding="utf-8")
  subs = {"{tmp}": str(tmp_path), "{wd}": str(tmp_path / "wd")}

  def fill(text):
    for key, value in subs.items():
      text = text.replace(key, value)
    return text

  before = _listing(tmp_path)
  code = cli.main([fill(a) for a in argv])
  err = capsys.readouterr().err
  assert code == 2, err
  # What a terminal shows: a progress bar erased with "\r" is gone.
  lines = [line.rsplit("\r", 1)[-1] for line in err.split("\n") if line.rsplit("\r", 1)[-1]]
  assert len(lines) == 1 and lines[0].startswith("electra-jax: error: "), err
  assert "Traceback" not in err
  assert fill(expected) in lines[0]
  assert _listing(tmp_path) == before


def test_rows_are_unique():
  ids = [row[0] for row in ROWS]
  assert len(ids) == len(set(ids))


def test_validate_tables_match_the_code():
  # validate keeps its own copy of the presets so it can be imported without jax.
  assert validate.SHARDING_PRESETS == sharding.PRESETS
  # Its objectives and dtypes come from jax-free tables the code must cover.
  for name in validate.OBJECTIVES:
    spec = objectives.get(name)
    assert spec.main_model is None or spec.main_model in pretraining.MAIN_MODELS
    assert spec.main_loss is None or spec.main_loss in pretraining.MAIN_LOSSES
  for name in validate.COMPUTE_DTYPES:
    job_setup.compute_dtype(name)


def test_the_readers_report_non_utf8_the_same_way(tmp_path):
  """Every reader of user files names the file, byte, offset and line, and says to re-encode."""
  from electra_jax import predict_inputs, tokenization
  from electra_jax.input_pipeline import sources
  from electra_jax.tasks import conll, custom, glue, multiple_choice, squad

  (tmp_path / "SST-2").mkdir()
  (tmp_path / "SST-2" / "train.tsv").write_bytes(b"sentence\tlabel\nbon caf\xe9\t1\n")
  (tmp_path / "t.csv").write_bytes(b"text,label\nbon caf\xe9,1\n")
  (tmp_path / "t.jsonl").write_bytes(b'{"text": "caf\xe9", "label": "1"}\n')
  (tmp_path / "vocab.txt").write_bytes(b"[PAD]\n[UNK]\ncaf\xe9\n")
  (tmp_path / "squad.json").write_bytes(b'{"data": [], "title": "caf\xe9"}')
  readers = {
    "glue": lambda: glue.read_split("sst2", tmp_path, "train"),
    "custom csv": lambda: custom.read_examples(tmp_path / "t.csv", custom.CustomDataConfig()),
    "custom jsonl": lambda: custom.read_examples(tmp_path / "t.jsonl", custom.CustomDataConfig()),
    "predict csv": lambda: predict_inputs.read_input(tmp_path / "t.csv"),
    "vocab": lambda: tokenization.load_tokenizer(tmp_path / "vocab.txt"),
    "squad": lambda: squad.read_squad(tmp_path / "squad.json"),
    "conll": lambda: conll.read_conll(tmp_path / "SST-2" / "train.tsv"),
    "multiple choice": lambda: multiple_choice.read_questions(
      str(tmp_path / "t.csv"), multiple_choice.Columns()
    ),
    "text": lambda: list(sources.iter_file_lines([str(tmp_path / "t.csv")])),
  }
  for name, read in readers.items():
    with pytest.raises(ElectraError) as e:
      read()
    message = str(e.value)
    assert "\n" not in message, name
    assert "is not UTF-8: invalid byte 0xe" in message, (name, message)
    assert "re-encode it as UTF-8" in message, (name, message)
    assert "(line " in message and "byte offset" in message, (name, message)


def test_tokenizer_train_accepts_encoding_errors_replace(tmp_path, capsys):
  """The flag the message suggests exists for `tokenizer train` too, and works."""
  corpus = tmp_path / "fr.txt"
  text = open(os.path.join(SAMPLE, "wikitext2_sample.txt"), encoding="utf-8").read()
  corpus.write_bytes(text[:60_000].encode("utf-8") + LATIN1_TEXT)
  out = tmp_path / "tok"
  args = ["tokenizer", "train", "--input", str(corpus), "--vocab-size", "200", "--out", str(out)]
  assert cli.main(args) == 2
  assert "--encoding-errors replace" in capsys.readouterr().err
  assert cli.main([*args, "--encoding-errors", "replace"]) == 0
  assert (out / "spiece.model").is_file()
