"""`electra-jax reproduce cpu` (electra_jax/reproduce.py) and the FLOPs counting (electra_jax/flops.py)."""

import json
import os

import pytest

from electra_jax import cli, flops, pretraining, reproduce
from electra_jax.config import ElectraConfig
from electra_jax.errors import ElectraError

# --- FLOPs -------------------------------------------------------------------


def test_block_flops_by_hand():
  # h=4, kqv=4, heads=1, i=16, s=2, encoder block; every official term written out.
  h, i, s, heads = 4, 16, 2, 1
  per_token = (
    3 * 2 * h * h  # kqv
    + 3 * h  # kqv_bias
    + 2 * h * s  # attention_scores
    + 5 * s * heads  # attn_softmax
    + 4 * s * heads  # attention_dropout
    + s * heads  # attention_scale
    + 2 * h * s  # attention_weighted_avg_values
    + 2 * h * h  # attn_output
    + h  # attn_output_bias
    + 4 * h  # attn_output_dropout
    + h  # attn_output_residual
    + 5  # attn_output_layer_norm (official: not × h)
    + 2 * h * i  # intermediate
    + 8 * i  # intermediate_act
    + i  # intermediate_bias
    + 2 * h * i  # output
    + h  # output_bias
    + 4 * h  # output_dropout
    + h  # output_residual
    + 5 * h  # output_layer_norm
  )
  assert (
    per_token
    == 96 + 12 + 16 + 10 + 8 + 2 + 16 + 32 + 4 + 16 + 4 + 5 + 128 + 128 + 16 + 128 + 4 + 16 + 4 + 20
  )
  assert (
    flops.TransformerHparams(h, 1, s=s, v=10, i=i, heads=heads).get_block_flops() == s * per_token
  )


def test_train_flops_by_hand():
  # h=e=4, l=1, s=2, v=10, i=16, heads=1, output_frac=0.5, dense lookups.
  t = flops.TransformerHparams(4, 1, s=2, v=10, i=16, heads=1, output_frac=0.5)
  block = t.get_block_flops()  # checked above: 2 × 665
  assert block == 2 * 665
  embed_in = 2 * (2 * 4 * 10 + 2 * 4 * (2 + 2) + 2 * 4 + 5 * 4 + 4 * 4)  # e == h: no projection
  assert t.get_embedding_flops(output=False) == embed_in == 2 * 156
  mlm_head = 0.5 * 2 * (2 * 4 * 10 + 2 * 4 * 4 + 4 + 8 * 4 + 5 * 4 + 5 * 10 + 2 * 10)
  assert t.get_embedding_flops(output=True) == mlm_head == 238
  rtd_head = 2 * (2 * 4 * 4 + 4 + 8 * 4 + 2 * 4)
  assert t.get_binary_classification_flops() == rtd_head == 152
  assert t.get_train_flops(3, 5) == 2 * 3 * 5 * (block + embed_in + mlm_head)
  assert t.get_train_flops(3, 5, discriminator=True) == 2 * 3 * 5 * (block + embed_in + rtd_head)
  sparse = flops.TransformerHparams(
    4, 1, s=2, v=10, i=16, heads=1, output_frac=0.5, sparse_embed_lookup=True
  )
  assert sparse.get_embedding_flops(output=False) == embed_in - 2 * 2 * 4 * 10


def test_official_model_flops():
  # MODEL_FLOPS of google-research/electra's flops_computation.py (run with its own code).
  assert flops.TransformerHparams(256, 12, e=128, s=128).get_train_flops(
    128, 1.45e6
  ) == pytest.approx(1.4187399146496e18, rel=1e-12)  # bert_small
  assert flops.get_electra_train_flops(
    256, 12, 64, 12, 128, 1e6, True, s=128, e=128
  ) == pytest.approx(1.293743798272e18, rel=1e-12)  # electra_small
  assert flops.get_electra_train_flops(768, 12, 256, 12, 256, 766000, True) == pytest.approx(
    6.424541834277683e19, rel=1e-12
  )  # electra_base
  assert flops.TransformerHparams(768, 12).get_train_flops(256, 1e6) == pytest.approx(
    6.428335104e19, rel=1e-12
  )  # bert_base


def test_pretraining_flops_per_step_matches_official_for_electra_small():
  small = ElectraConfig()  # ELECTRA-Small's discriminator
  gen = pretraining.generator_config(small, 0.25)
  kw = dict(batch_size=1, max_seq_length=128, max_predictions=19)
  electra = flops.pretraining_flops_per_step("electra", small, gen, **kw)
  # The official functions with output_frac 19/128 (values from the official code).
  assert electra["total"] == pytest.approx(10091282500.0, rel=1e-12)
  assert electra["total"] == pytest.approx(
    flops.get_electra_train_flops(256, 12, 64, 12, 1, 1, True, s=128, e=128, output_frac=19 / 128)
  )
  mlm = flops.pretraining_flops_per_step("mlm", small, None, **kw)
  assert mlm["total"] == pytest.approx(7627883588.0, rel=1e-12)
  sparse = flops.pretraining_flops_per_step("mlm", small, None, sparse_embed_lookup=True, **kw)
  assert sparse["total"] == pytest.approx(5627593796.0, rel=1e-12)
  assert flops.pretraining_flops_per_step(
    "electra", small, gen, batch_size=4, max_seq_length=128, max_predictions=19
  )["total"] == pytest.approx(4 * electra["total"])
  with pytest.raises(ElectraError, match="replace_mlm"):
    flops.pretraining_flops_per_step("replace_mlm", small, gen, **kw)
  with pytest.raises(ElectraError, match="unknown objective"):
    flops.pretraining_flops_per_step("nope", small, gen, **kw)


def test_mlm_steps_match_electra_flops(shared_data):
  plan = reproduce.make_plan(electra_steps=900)
  fl = reproduce.compute_flops(plan, 30522)
  per = fl["per_step"][plan.flops_rule]
  e, m = per["electra"]["total"] * 900, per["mlm"]["total"] * fl["steps"]["mlm"]
  assert abs(e - m) <= per["mlm"]["total"] / 2  # equal up to one MLM step
  assert fl["total"][plan.flops_rule] == {"electra": e, "mlm": m}


# --- the command line ----------------------------------------------------------


def test_help(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["reproduce", "cpu", "--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert "--workdir" in out and "--corpus" in out and "--budget-minutes" in out


@pytest.mark.parametrize(
  "args, message",
  [
    (["--tasks", "sst2,qqp"], "unknown task 'qqp'"),
    (["--budget-minutes", "0"], "--budget-minutes must be > 0"),
    (["--hidden-size", "30", "--num-heads", "4"], "not a multiple of --num-heads"),
    (["--corpus", "/nonexistent/*.txt"], "--corpus /nonexistent/*.txt: no such file"),
    (["--electra-steps", "0"], "--electra-steps must be >= 1"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--out", "/nonexistent/dir/r.md"], "its directory does not exist"),
  ],
)
def test_bad_args_one_line(tmp_path, capsys, shared_data, args, message):
  assert cli.main(["reproduce", "cpu", "--workdir", str(tmp_path / "w"), *args]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("electra-jax: error: ") and message in err
  assert not (tmp_path / "w").exists()


def test_a_different_plan_in_the_same_workdir_is_refused(tmp_path, shared_data):
  a = reproduce.make_plan(electra_steps=10)
  reproduce._Record(str(tmp_path), a).save()
  b = reproduce.make_plan(electra_steps=20)
  with pytest.raises(ElectraError, match=r"different plan \(electra_steps\)"):
    reproduce._Record(str(tmp_path), b)
  reproduce._Record(str(tmp_path), a)  # the same plan resumes


def test_the_plan_is_identified_by_file_contents_not_paths(tmp_path, shared_data):
  """A copy of the vocabulary elsewhere (another checkout) resumes; an edited one is refused."""
  vocab = reproduce.make_plan().tokenizer
  copy = tmp_path / "elsewhere" / "vocab.txt"
  copy.parent.mkdir()
  copy.write_bytes(open(vocab, "rb").read())
  reproduce._Record(str(tmp_path), reproduce.make_plan(electra_steps=10)).save()
  record = reproduce._Record(
    str(tmp_path), reproduce.make_plan(electra_steps=10, tokenizer=str(copy))
  )
  assert record.data["plan"]["tokenizer"] == str(copy)  # the report names this checkout's path
  copy.write_bytes(open(vocab, "rb").read() + b"extra\n")
  with pytest.raises(ElectraError, match=r"different plan \(tokenizer\)"):
    reproduce._Record(str(tmp_path), reproduce.make_plan(electra_steps=10, tokenizer=str(copy)))


def test_report_paths_are_shown_relative_to_the_checkout_and_shared_data():
  from electra_jax import reproduce_report

  vocab = os.path.join(reproduce_report._REPO, "electra_jax", "sample_data", "vocab.txt")
  assert reproduce_report.shown_path(vocab) == "electra_jax/sample_data/vocab.txt"
  shared = os.path.join(reproduce.SHARED_DATA, "text", "a.txt")
  assert reproduce_report.shown_path(shared) == "../shared/data/text/a.txt"
  assert reproduce_report.shown_path("/elsewhere/x.txt") == "/elsewhere/x.txt"


def test_budget_plan_is_deterministic_and_scales():
  assert reproduce.budget_plan(60) == reproduce.budget_plan(60)
  assert reproduce.budget_plan(60)["electra_steps"] == reproduce.ELECTRA_STEPS_PER_HOUR
  assert reproduce.budget_plan(30)["electra_steps"] == reproduce.ELECTRA_STEPS_PER_HOUR // 2
  assert reproduce.budget_plan(10)["seeds"] == 1


# --- end to end at a toy budget --------------------------------------------------


def test_toy_pipeline_end_to_end(tmp_path, capsys, shared_data):
  pytest.importorskip("matplotlib")
  out = tmp_path / "report.md"
  argv = [
    "reproduce",
    "cpu",
    "--workdir",
    str(tmp_path / "w"),
    "--out",
    str(out),
    "--corpus",
    os.path.join(os.path.dirname(reproduce.__file__), "sample_data", "wikitext2_sample.txt"),
    "--hidden-size",
    "16",
    "--num-layers",
    "1",
    "--embedding-size",
    "16",
    "--num-heads",
    "1",
    "--batch-size",
    "8",
    "--max-seq-length",
    "32",
    "--electra-steps",
    "2",
    "--tasks",
    "rte",
    "--train-examples",
    "32",
    "--seeds",
    "1",
    "--no-progress",
  ]
  assert cli.main(argv) == 0
  text = out.read_text()
  for needle in (
    "| ELECTRA |",
    "| MLM (BERT) |",
    "| scratch (no pretraining) |",
    "RTE",
    "FLOPs/step",
    "Commit of the stages:",
  ):
    assert needle in text
  for png in ("pretraining.png", "glue.png"):
    data = (tmp_path / "report" / png).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
  record = json.loads((tmp_path / "w" / "reproduce.json").read_text())
  assert record["status"] == "complete"
  assert record["flops"]["steps"]["electra"] == 2
  table = record["report"]["glue"]
  # A re-run skips every stage and gives the same table.
  os.remove(out)
  capsys.readouterr()  # the first run's output
  assert cli.main(argv) == 0
  rerun = capsys.readouterr().out
  assert rerun.count("finished before") == 2 + 3 * len(record["plan"]["tasks"])
  assert "compiling" not in rerun  # no job was started again
  record2 = json.loads((tmp_path / "w" / "reproduce.json").read_text())
  assert record2["report"]["glue"] == table
  assert len(record2["invocations"]) == 2
  assert out.exists()
  # A workdir moved elsewhere (another disk, another clone) still resumes: nothing re-runs.
  import shutil

  shutil.copytree(tmp_path / "w", tmp_path / "moved")
  assert cli.main([a if a != str(tmp_path / "w") else str(tmp_path / "moved") for a in argv]) == 0
  assert "compiling" not in capsys.readouterr().out
  record3 = json.loads((tmp_path / "moved" / "reproduce.json").read_text())
  assert record3["report"]["glue"] == table


def test_report_only_labels_partial_results(tmp_path, capsys, shared_data):
  pytest.importorskip("matplotlib")
  args = ["reproduce", "cpu", "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "r.md")]
  assert cli.main([*args, "--report-only"]) == 2  # nothing there yet
  assert "holds no reproduction" in capsys.readouterr().err
  plan = reproduce.make_plan()
  os.makedirs(tmp_path / "w")
  reproduce._Record(str(tmp_path / "w"), plan).save()
  assert cli.main([*args, "--report-only"]) == 0
  text = (tmp_path / "r.md").read_text()
  assert "PARTIAL RESULTS" in text and "pretrain_electra" in text and "finetune_scratch_rte" in text
  assert (tmp_path / "r" / "glue.png").exists()
  record = json.loads((tmp_path / "w" / "reproduce.json").read_text())
  assert record["invocations"] == []  # a report is not a run


def test_shell_script_usage_and_errors(tmp_path):
  import subprocess

  script = os.path.join(
    os.path.dirname(os.path.dirname(reproduce.__file__)), "experiments", "reproduce_cpu.sh"
  )
  r = subprocess.run([script], capture_output=True, text=True)
  assert r.returncode == 2 and r.stderr.startswith("usage:")
  r = subprocess.run(
    [script, str(tmp_path / "w"), "--tasks", "nope"], capture_output=True, text=True
  )
  assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(
    "electra-jax: error: --tasks"
  )
