"""`electra-jax` command line: parse arguments, call library functions.

Thin by design: every subcommand parses its flags and hands over to a library
function; nothing imports this module. Each subcommand registers itself with
a `_add_<name>(subparsers)` function listed in `_COMMANDS`. An `ElectraError`
is printed as one line (`electra-jax: error: ...`) and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from electra_jax import heads, host_memory, xla_env
from electra_jax.errors import ElectraError

# `none` stands for the bare encoder (head None), which has no name of its own.
_CONVERT_HEADS = ("auto", "none", *(h for h in heads.HEADS if h is not None))


_FROM_TF_HELP = (
  "--from-tf reads checkpoints of google-research/electra (TF1 names: electra/...,\n"
  "generator/..., discriminator_predictions/..., generator_predictions/...) without\n"
  "TensorFlow. Strict too: a variable no rule maps aborts, listed; global_step and the\n"
  "Adam slots (adam_m, adam_v) are skipped on purpose, and the other network's variables\n"
  "are left out (reported). The architecture comes from the tensor shapes, except the\n"
  "number of attention heads, which no shape shows: --num-heads, else max(1, hidden // 64),\n"
  "the official code's own default (small 4, base 12, large 16, every generator); a run\n"
  "that set num_attention_heads needs --num-heads."
)


def _add_convert(sub):
  p = sub.add_parser(
    "convert",
    help="convert HF PyTorch or official TF ELECTRA checkpoints to electra-jax, and to HF",
    description="Convert between a HF transformers ELECTRA directory (config.json +\n"
    "model.safetensors or pytorch_model.bin) and an electra-jax checkpoint directory\n"
    "(electra_jax.json + Orbax params/ + tokenizer files).\n\n"
    "Strict: checkpoint keys no rule maps, params the checkpoint lacks, or tensors\n"
    "whose shape disagrees with config.json abort with the list of keys. A .bin is\n"
    "read with torch.load(weights_only=True); --to-hf writes safetensors only.\n\n" + _FROM_TF_HELP,
    epilog="examples:\n"
    "  electra-jax convert --from-hf ./electra-small-discriminator --out ./ej-small\n"
    "  electra-jax convert --from-hf ./my-hf-model --head sequence_classification --out ./ej-cls\n"
    "  electra-jax convert --to-hf ./ej-small --out ./hf-small\n"
    "  electra-jax convert --from-tf electra_small/model.ckpt-1000000 --vocab electra_small/vocab.txt \\\n"
    "      --out ./ej-small-disc\n"
    "  electra-jax convert --from-tf electra_small/ --model generator --out ./ej-small-gen",
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  g = p.add_mutually_exclusive_group(required=True)
  g.add_argument("--from-hf", metavar="SRC", help="HF directory to convert to electra-jax")
  g.add_argument(
    "--from-tf",
    metavar="CKPT_PREFIX",
    help="official TF ELECTRA checkpoint (google-research/electra) to convert to electra-jax: "
    "the prefix (dir/model.ckpt-1000000), its .index file, or its directory",
  )
  g.add_argument(
    "--to-hf",
    metavar="SRC",
    help="electra-jax checkpoint directory to export as config.json + model.safetensors",
  )
  p.add_argument(
    "--out", required=True, metavar="DST", help="output directory (must not exist or be empty)"
  )
  p.add_argument(
    "--head",
    default="auto",
    choices=_CONVERT_HEADS,
    metavar="HEAD",
    help="with --from-hf: the head to convert; 'auto' (default) takes it from config.json's "
    "architectures (a generator, ElectraForMaskedLM, gives masked_lm), 'none' keeps the bare "
    f"encoder. One of: {', '.join(_CONVERT_HEADS)}",
  )
  p.add_argument(
    "--model",
    choices=("discriminator", "generator"),
    help="with --from-tf: the network to convert (default discriminator, head pretraining; "
    "generator gives masked_lm)",
  )
  p.add_argument(
    "--num-heads",
    type=int,
    metavar="N",
    help="with --from-tf: attention heads (default max(1, hidden_size // 64), the official default)",
  )
  p.add_argument(
    "--vocab", metavar="FILE", help="with --from-tf: the run's vocab.txt, copied as the tokenizer"
  )
  p.set_defaults(func=_run_convert)


def _run_convert(args):
  from electra_jax import pretrained

  if args.to_hf and args.head != "auto":
    raise ElectraError(
      "--head applies to --from-hf only: --to-hf exports the checkpoint's own head"
    )
  if args.from_tf:
    return _run_convert_tf(args)
  given = [
    f"--{f.replace('_', '-')}"
    for f in ("model", "num_heads", "vocab")
    if getattr(args, f) is not None
  ]
  if given:
    raise ElectraError(
      f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to --from-tf only"
    )
  head = None if args.head == "none" else args.head
  if args.from_hf:
    dst = pretrained.convert_from_hf(args.from_hf, args.out, head=head)
  else:
    dst = pretrained.convert_to_hf(args.to_hf, args.out)
  print(f"wrote {dst}")


def _run_convert_tf(args):
  from electra_jax import convert_tf

  if args.head != "auto":
    raise ElectraError(
      "--head applies to --from-hf; --from-tf takes --model discriminator|generator"
    )
  model = args.model or "discriminator"
  dst = convert_tf.convert_from_tf(
    args.from_tf, args.out, model, num_heads=args.num_heads, vocab=args.vocab
  )
  print(f"wrote {dst}")


def _add_predict(sub):
  p = sub.add_parser(
    "predict",
    help="label a file of texts with a fine-tuned classifier (JSONL out)",
    description="Batch prediction with a sequence-classification model. --model is an electra-jax "
    "checkpoint, a HF ElectraForSequenceClassification directory, an `electra-jax export` directory, "
    "or a fine-tuning workdir (its last/ checkpoint, or best/ with --checkpoint best; with seed_<k>/ subdirectories the "
    'seed results.json names as "best_seed", else the lowest seed). Input by extension: .txt (one example '
    "per line; a tab splits text and text pair), .tsv/.csv (header row; TSV read with quoting off), "
    ".jsonl (one object per line). Output: one JSON line per input row, in input order: "
    '{"index", "label", "probabilities": {label: p}} for classifiers, {"index", "score"} for '
    'regression. An empty line gives {"index", "error": "empty input"}; a text longer than the max '
    'sequence length is truncated and marked "truncated": true. Malformed rows (bad JSON, missing '
    "column, wrong field count, not UTF-8) are reported by row and line and skipped, or stop the run "
    "with --on-error stop. The output is written to a temporary file and renamed at the end. "
    "A question-answering model (SQuAD fine-tuning, HF ElectraForQuestionAnswering) takes a SQuAD "
    "JSON file and writes {question id: answer} JSON (empty above a SQuAD 2.0 model's no-answer "
    "threshold, the scores in OUTPUT.null_odds.json; --eval scores the input's answers).",
    epilog="examples:\n"
    "  electra-jax predict --model runs/sst2 --input reviews.txt --output preds.jsonl\n"
    "  electra-jax predict --model runs/squad --input questions.json --output answers.json\n"
    "  electra-jax predict --model runs/mrpc/best --input pairs.tsv --text-column sentence1 \\\n"
    "      --text-pair-column sentence2 --output preds.jsonl\n"
    "  electra-jax predict --model exported/ --input dev.jsonl --output preds.jsonl --eval",
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
    "--model", required=True, metavar="DIR", help="checkpoint, export or fine-tuning workdir"
  )
  p.add_argument("--input", required=True, metavar="FILE", help=".txt, .tsv, .csv or .jsonl file")
  p.add_argument("--output", required=True, metavar="FILE", help="JSONL file to write")
  p.add_argument(
    "--format",
    choices=("txt", "tsv", "csv", "jsonl", "conll"),
    help="input format (default: from the --input extension; .conll/.iob/.bio are conll, which "
    "token-classification models read)",
  )
  p.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (default 64)")
  p.add_argument(
    "--max-seq-length",
    type=int,
    metavar="N",
    help="truncate inputs to N tokens (default: the length stored with the model, else 512)",
  )
  p.add_argument(
    "--text-column",
    metavar="COLUMN",
    help="text field of .tsv/.csv/.jsonl (default: text, else the column the model was trained on, "
    "e.g. sentence for SST-2)",
  )
  p.add_argument(
    "--text-pair-column",
    metavar="COLUMN",
    help="second-segment field for sentence-pair models (default: text_pair when present, else "
    "the second column the model was trained on, e.g. sentence2 for RTE)",
  )
  p.add_argument(
    "--label-column", default="label", help="gold label field, read with --eval (default: label)"
  )
  p.add_argument(
    "--checkpoint",
    choices=("last", "best"),
    default="last",
    help="with a fine-tuning workdir: the final model (last, default; what results.json reports) "
    "or the best dev epoch's (best)",
  )
  p.add_argument(
    "--on-error",
    choices=("skip", "stop"),
    default="skip",
    help="malformed rows: skip them and report (default), or stop with an error before writing",
  )
  p.add_argument(
    "--eval",
    action="store_true",
    help="compare with the label column: adds 'gold' to each line and reports the GLUE task's "
    "metrics, else accuracy and macro F1 (regression: Pearson/Spearman); rows with a label the model does not know are reported, "
    "marked 'label_error', and left out of the metrics",
  )
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.set_defaults(func=_run_predict)


def _run_predict(args):
  from electra_jax import predict

  predict.predict_file(
    args.model,
    args.input,
    args.output,
    batch_size=args.batch_size,
    max_seq_length=args.max_seq_length,
    columns=predict.Columns(args.text_column, args.text_pair_column, args.label_column),
    fmt=args.format,
    on_error=args.on_error,
    evaluate=args.eval,
    progress=not args.quiet,
    checkpoint=args.checkpoint,
  )


def _add_export(sub):
  p = sub.add_parser(
    "export",
    help="serialise a classifier (or token-classification / multiple-choice model) with jax.export "
    "for serving without the training code",
    description="Lower the jitted inference function (params, input_ids, attention_mask, "
    "token_type_ids) -> {logits, probabilities} with jax.export (symbolic batch dimension; symbolic "
    "sequence length up to --max-seq-length, so the loader pads to length buckets, or one fixed "
    "length with --fixed-length) and write OUT/model.jaxexport, OUT/params.npz (the weights), the tokenizer "
    "files and OUT/serving_config.json (label map, max_seq_length, task). "
    "electra_jax.serving.load_exported(OUT) runs it with jax, numpy and the tokenizer only; "
    "`electra-jax predict --model OUT` also accepts it. --model takes the same directories as "
    "predict.",
    epilog="examples:\n"
    "  electra-jax export --model runs/sst2 --out exported/sst2\n"
    "  electra-jax export --model runs/sst2/best --out exported/sst2-tpu --platforms tpu,cpu\n"
    '  python -c "from electra_jax.serving import load_exported; '
    "print(load_exported('exported/sst2').predict(['great']))\"",
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--model", required=True, metavar="DIR", help="checkpoint or fine-tuning workdir")
  p.add_argument(
    "--out", required=True, metavar="DIR", help="output directory (must not exist or be empty)"
  )
  p.add_argument(
    "--max-seq-length",
    type=int,
    metavar="N",
    help="longest input the exported function takes (default: stored with the model, else 512)",
  )
  p.add_argument(
    "--fixed-length",
    action="store_true",
    help="export one static sequence length (--max-seq-length) instead of a symbolic one: every "
    "batch is padded to it (slower on short texts; for runtimes that need static shapes)",
  )
  p.add_argument(
    "--platforms",
    metavar="LIST",
    help="comma list of platforms to lower for: cpu, cuda, rocm, tpu (default: this machine's)",
  )
  p.add_argument(
    "--embed-params",
    action="store_true",
    help="close over the weights as constants: one self-contained model.jaxexport as large as the "
    "weights (limit 2 GB), instead of a small one plus params.npz",
  )
  p.set_defaults(func=_run_export)


def _run_export(args):
  from electra_jax import export

  platforms = (
    [x.strip() for x in args.platforms.split(",") if x.strip()] if args.platforms else None
  )
  out = export.export_model(
    args.model,
    args.out,
    max_seq_length=args.max_seq_length,
    platforms=platforms,
    embed_params=args.embed_params,
    fixed_length=args.fixed_length,
  )
  print(f"wrote {out}")


def _add_tokenizer(sub):
  p = sub.add_parser(
    "tokenizer",
    help="train a SentencePiece tokenizer, or show what a tokenizer holds",
    description="Tokenizer tools. `train` fits a SentencePiece model with ELECTRA's special tokens at "
    "fixed ids ([PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4); `info` prints a tokenizer's vocab size, "
    "special ids and fingerprint.",
  )
  tsub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION")
  tsub.required = True
  t = tsub.add_parser(
    "train",
    help="train a SentencePiece model on text files",
    description="Train a SentencePiece model on local text files (UTF-8, one sentence or paragraph "
    "per line) and write spiece.model, spiece.vocab and tokenizer_config.json to --out.",
  )
  t.add_argument("--input", nargs="+", required=True, metavar="FILE", help="text files or globs")
  t.add_argument("--vocab-size", type=int, required=True, help="pieces, special tokens included")
  t.add_argument("--out", required=True, metavar="DIR", help="output directory")
  t.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram")
  t.add_argument("--lowercase", action="store_true", help="case-fold the text (uncased vocab)")
  t.add_argument(
    "--character-coverage", type=float, default=0.9995, help="share of characters kept"
  )
  t.add_argument(
    "--max-sentences", type=int, default=0, help="sample this many lines for training (0: all)"
  )
  t.add_argument("--seed", type=int, default=0, help="seed of the line sampling")
  t.add_argument(
    "--encoding-errors",
    choices=("strict", "replace"),
    default="strict",
    help="invalid UTF-8: strict = error naming file and byte offset; replace = U+FFFD",
  )
  t.set_defaults(func=_run_tokenizer_train)
  i = tsub.add_parser("info", help="print vocab size, special ids and fingerprint")
  i.add_argument("path", help="vocab.txt, .model, tokenizer.json or a directory holding one")
  i.set_defaults(func=_run_tokenizer_info)


def _run_tokenizer_train(args):
  from electra_jax import tokenization

  tok = tokenization.train_sentencepiece(
    args.input,
    args.vocab_size,
    args.out,
    model_type=args.model_type,
    lowercase=args.lowercase,
    character_coverage=args.character_coverage,
    max_sentences=args.max_sentences,
    seed=args.seed,
    encoding_errors=args.encoding_errors,
  )
  print(f"wrote {args.out}: vocab_size={tok.vocab_size} special_ids={tok.special_ids}")


def _run_tokenizer_info(args):
  import json

  from electra_jax import tokenization

  tok = tokenization.load_tokenizer(args.path)
  info = {"kind": tok.kind, "vocab_size": tok.vocab_size, "special_ids": tok.special_ids}
  print(json.dumps({**info, "fingerprint": tok.fingerprint}))


def _add_prepare_pretraining(sub):
  p = sub.add_parser(
    "prepare-pretraining",
    help="tokenize and pack a text corpus into sharded array_record examples",
    description="Turn raw text (local files, globs, directories, or tfds:NAME[:SPLIT] datasets "
    "prepared as array_record) into ELECTRA pretraining examples ([CLS] A [SEP] B [SEP], the "
    "official build_pretraining_dataset.py rules) written as sharded array_record files plus "
    "manifest.json, using all cores. Local files: one sentence/paragraph per line, blank lines "
    "between documents; WikiText files are detected and handled (see docs/data.md).",
  )
  p.add_argument(
    "--input",
    nargs="+",
    required=True,
    metavar="FILE_OR_TFDS",
    help="text files/globs/dirs or tfds:NAME[:SPLIT]",
  )
  p.add_argument(
    "--tokenizer", required=True, metavar="PATH", help="vocab.txt, .model or a directory"
  )
  p.add_argument(
    "--max-seq-length", type=int, default=128, help="example length (128; 512 for base/large)"
  )
  p.add_argument("--out", required=True, metavar="DIR", help="output directory (new or empty)")
  p.add_argument(
    "--max-position-embeddings",
    type=int,
    default=512,
    help="the model's position table size; a longer --max-seq-length is refused (default 512)",
  )
  p.add_argument("--seed", type=int, default=0, help="seed of the example builder")
  p.add_argument("--num-shards", type=int, default=4, help="array_record files to write")
  p.add_argument(
    "--num-workers",
    type=int,
    default=None,
    help="worker processes (default: one per core; inline below 8 MB of local text)",
  )
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out when done")
  p.add_argument("--tfds-data-dir", default=None, help="tfds data_dir for tfds: inputs")
  p.add_argument(
    "--layout", choices=("auto", "plain", "wikitext"), default="auto", help="local file layout"
  )
  p.add_argument(
    "--sentences",
    choices=("auto", "split", "lines"),
    default="auto",
    help="split lines into sentences (auto: WikiText only)",
  )
  p.add_argument(
    "--encoding-errors",
    choices=("strict", "replace"),
    default="strict",
    help="invalid UTF-8: strict = error naming file and byte offset; replace = U+FFFD",
  )
  p.set_defaults(func=_run_prepare_pretraining)


def _run_prepare_pretraining(args):
  from electra_jax.input_pipeline import prepare

  prepare.prepare_pretraining_data(
    args.input,
    args.tokenizer,
    args.max_seq_length,
    args.out,
    seed=args.seed,
    max_position_embeddings=args.max_position_embeddings,
    num_shards=args.num_shards,
    num_workers=args.num_workers,
    overwrite=args.overwrite,
    tfds_data_dir=args.tfds_data_dir,
    layout=args.layout,
    sentences=args.sentences,
    encoding_errors=args.encoding_errors,
  )


_COMMANDS = [_add_convert, _add_predict, _add_export]
_COMMANDS.append(_add_tokenizer)
_COMMANDS.append(_add_prepare_pretraining)


def _add_config_args(p, example: str) -> None:
  p.add_argument(
    "--config",
    required=True,
    metavar="FILE.py[:ARGS]",
    help=f"experiment config file and its argument, e.g. {example}; override any key with "
    "--config.KEY=VALUE (nested: --config.mesh.data=8)",
  )
  p.add_argument(
    "--workdir", required=True, help="output directory; a run resumes from its checkpoints"
  )
  p.add_argument(
    "--help-config", action="store_true", help="print every config key with its value and exit"
  )
  p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
  p.set_defaults(accepts_config_overrides=True)


def _load_config(args):
  from electra_jax import experiment

  cfg = experiment.load_config(args.config, args.config_overrides)
  if args.help_config:
    print(f"config keys of {args.config}:")
    print(experiment.describe_config(cfg))
    return None
  return cfg


def _add_pretrain(sub):
  p = sub.add_parser(
    "pretrain",
    help="ELECTRA pretraining (replaced-token detection) from raw text or prepared data",
    description="Pretrain a generator + discriminator (or an ablation: electra_15, replace_mlm, all_tokens_mlm, "
    "mlm). Writes checkpoints, metrics.jsonl, TensorBoard logs, results.json and, at the end, "
    "electra-jax (WORKDIR/final/*) and HF (WORKDIR/export/*) copies of the models. Re-running with the "
    "same --workdir resumes exactly where it stopped.",
    epilog="example: electra-jax pretrain --config experiments/configs/pretrain.py:size=tiny "
    "--workdir /tmp/pt --config.data=../shared/data/text/wikitext-2-raw/wiki.valid.raw --config.total_steps=300",
  )
  _add_config_args(p, "experiments/configs/pretrain.py:size=small")
  p.set_defaults(func=_run_pretrain)


def _run_pretrain(args):
  cfg = _load_config(args)
  if cfg is None:
    return 0
  from electra_jax import preemption, run_pretraining

  with preemption.handle_stop_signals():
    results = run_pretraining.run(cfg, args.workdir, progress=not args.no_progress)
  if results.get("status") == "stopped":
    return _stopped(args.workdir, results["stopped"], f"at step {results['step']}")
  final = results.get("final_metrics", {})
  loss = f"loss {final['loss']:.4f}; " if "loss" in final else ""
  print(
    f"pretraining complete at step {results['step']}: {loss}results in {args.workdir}/results.json"
  )
  for name, where in (results.get("exported") or {}).items():
    paths = [f"{where['electra_jax']} (electra-jax)"] + (
      [f"{where['hf']} (HF)"] if where.get("hf") else []
    )
    print(f"  {name}: {', '.join(paths)}")
  return 0


def _stopped(workdir: str, reason: str, where: str) -> int:
  """Reports a run stopped by a signal (or a test's stop_after); the status says "resumable"."""
  from electra_jax import preemption

  print(
    f"electra-jax: stopped by {reason} {where}; checkpoint saved. Re-run the same command to resume "
    f"(results in {workdir}/results.json)",
    file=sys.stderr,
  )
  return preemption.EXIT_STATUS.get(reason, 75)


_COMMANDS.append(_add_pretrain)


def _add_finetune(sub):
  p = sub.add_parser(
    "finetune",
    help="fine-tune on a GLUE task, SQuAD or your own data (multi-seed)",
    description="Fine-tune a classifier/regressor with the paper's recipe (AdamW, layer-wise LR decay, warmup, "
    "linear decay). Evaluates on dev every epoch, keeps best/ and last/ per seed, writes results.json with "
    "median/mean/std over --seeds, and GLUE test-set submission files. `electra-jax predict --model WORKDIR` "
    "uses the result.",
    epilog="examples: electra-jax finetune --config experiments/configs/glue.py:task=sst2,size=small "
    "--workdir /tmp/sst2 --config.init_from=/path/to/electra-small-discriminator --seeds 3;  "
    "electra-jax finetune --config experiments/configs/glue.py:task=custom,size=tiny --workdir /tmp/mine "
    "--config.train_file=train.csv --config.dev_file=dev.csv",
  )
  _add_config_args(p, "experiments/configs/glue.py:task=sst2,size=small")
  p.add_argument("--seeds", type=int, default=None, help="number of seeds (overrides config.seeds)")
  p.set_defaults(func=_run_finetune)


def _run_finetune(args):
  cfg = _load_config(args)
  if cfg is None:
    return 0
  if args.seeds is not None:
    cfg.seeds = args.seeds
  from electra_jax import preemption, run_finetuning

  with preemption.handle_stop_signals():
    summary = run_finetuning.run(cfg, args.workdir, progress=not args.no_progress)
  if summary.get("status") == "stopped":
    return _stopped(
      args.workdir, summary["stopped"], f"in seed {summary['seed']} at step {summary['step']}"
    )
  for name, s in summary["metrics"].items():
    print(
      f"{summary['task']} {name}: median {s['median']:.4f} mean {s['mean']:.4f} std {s['std']:.4f} over {len(s['values'])} seed(s)"
    )
  print(f"results in {args.workdir}/results.json")
  for seed in summary.get("seeds", {}):
    seed_dir = os.path.join(args.workdir, f"seed_{seed}")
    kept = [d for d in ("best", "last") if os.path.isdir(os.path.join(seed_dir, d))]
    print(f"  seed {seed}: {', '.join(os.path.join(seed_dir, d) for d in kept)}")
  for split, path in (summary.get("test_predictions") or {}).items():
    if path:
      print(f"  test predictions ({split}): {path}")
  return 0


_COMMANDS.append(_add_finetune)


def _add_glue_report(sub):
  p = sub.add_parser(
    "glue-report",
    help="the paper-style GLUE dev table (median over seeds, GLUE score) from fine-tuning workdirs",
    description="Read the results.json of fine-tuning workdirs (one GLUE task each) and print, per task,\n"
    "the paper's metric (CoLA MCC, STS-B Spearman, MNLI matched, accuracy elsewhere) as the median\n"
    "over seeds with its spread (min-max, std, number of seeds), ×100, and the GLUE score as the\n"
    "paper averages it (mean of the eight medians, WNLI left out), naming the tasks it misses.\n\n"
    "By default each seed's final model is reported, as the official ELECTRA code does;\n"
    "--dev-selected reports each seed's best epoch instead (picked on the same dev set, so\n"
    "optimistic). MNLI mismatched, WNLI and custom tasks are shown but not averaged. A task\n"
    "given twice is an error unless --pool-seeds (same recipe, distinct seeds).",
    epilog="examples:\n"
    "  electra-jax glue-report runs/small-*\n"
    "  electra-jax glue-report runs/small-cola runs/small-rte runs/small-stsb --markdown\n"
    "  electra-jax glue-report runs/small-rte-a runs/small-rte-b --pool-seeds --json",
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="an `electra-jax finetune` workdir")
  out = p.add_mutually_exclusive_group()
  out.add_argument("--markdown", action="store_true", help="markdown tables instead of plain text")
  out.add_argument("--json", action="store_true", help="the report as JSON (values ×100)")
  p.add_argument(
    "--dev-selected",
    action="store_true",
    help="report each seed's best epoch instead of its final model (optimistic)",
  )
  p.add_argument(
    "--pool-seeds",
    action="store_true",
    help="pool the seeds of several workdirs of one task into one row",
  )
  p.set_defaults(func=_run_glue_report)


def _run_glue_report(args):
  import json

  from electra_jax import glue_report

  rows = glue_report.collect(
    args.run_dirs, dev_selected=args.dev_selected, pool_seeds=args.pool_seeds
  )
  if args.json:
    print(json.dumps(glue_report.to_json(rows), indent=2))
  else:
    print(glue_report.format_table(rows, markdown=args.markdown))
  return 0


_COMMANDS.append(_add_glue_report)


def _add_squad_eval(sub):
  p = sub.add_parser(
    "squad-eval",
    help="score SQuAD predictions with the official evaluation (1.1 or 2.0), JSON out",
    description="Score a predictions file ({question id: answer text}) against a SQuAD data file as the\n"
    "official scripts do and print their metrics as JSON: exact_match and f1 for 1.1 (evaluate-v1.1.py);\n"
    "exact, f1, total, HasAns_* and NoAns_* for 2.0 (evaluate-v2.0.py), plus best_exact, best_f1 and\n"
    'their thresholds with --na-prob-file. In 2.0 a question is answered "" when its no-answer\n'
    "score exceeds --na-prob-thresh. A question without a prediction scores 0 (reported on stderr).\n"
    "`electra-jax finetune` writes predictions.json and, for 2.0, null_odds.json in these formats.",
    epilog="examples:\n"
    "  electra-jax squad-eval dev-v1.1.json W/seed_0/predictions.json\n"
    "  electra-jax squad-eval dev-v2.0.json W/seed_0/predictions.json \\\n"
    "      --na-prob-file W/seed_0/null_odds.json --na-prob-thresh -2.75",
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("data_file", metavar="DATA.json", help="the SQuAD data file (with answers)")
  p.add_argument("pred_file", metavar="PREDICTIONS.json", help="{question id: answer text}")
  p.add_argument(
    "--na-prob-file",
    metavar="NA.json",
    help="SQuAD 2.0: {question id: no-answer score} (e.g. null_odds.json)",
  )
  p.add_argument(
    "--na-prob-thresh",
    type=float,
    default=1.0,
    metavar="T",
    help='SQuAD 2.0: answer "" when the no-answer score exceeds T (default 1.0, the official '
    "script's; ELECTRA's official head uses -2.75, HF's 0.0)",
  )
  p.add_argument(
    "--version",
    choices=("1.1", "2.0"),
    help="default: 2.0 when the data has unanswerable questions or --na-prob-file is given",
  )
  p.set_defaults(func=_run_squad_eval)


def _run_squad_eval(args):
  import json

  from electra_jax.tasks import squad_eval

  result = squad_eval.evaluate_files(
    args.data_file,
    args.pred_file,
    args.na_prob_file,
    na_prob_thresh=args.na_prob_thresh,
    version=args.version,
  )
  if result.missing:
    print(
      f"electra-jax: warning: {len(result.missing)} question(s) have no prediction and score 0 "
      f"(first: {result.missing[0]})",
      file=sys.stderr,
    )
  print(json.dumps(result.metrics, indent=2))
  return 0


_COMMANDS.append(_add_squad_eval)


def _add_quickstart(sub):
  p = sub.add_parser(
    "quickstart",
    help="offline end-to-end demo: pretrain tiny → fine-tune on SST-2 excerpt → predict",
    description="Pretrains a tiny ELECTRA on the bundled WikiText-2 excerpt, fine-tunes its discriminator on the "
    "bundled SST-2 excerpt and labels a few sentences. No downloads; a few minutes on 2 CPU cores.",
  )
  p.add_argument(
    "--workdir", required=True, help="output directory (pretrain/, finetune/, predictions.jsonl)"
  )
  p.add_argument("--pretrain-steps", type=int, default=300, help="pretraining steps (default 300)")
  p.add_argument("--finetune-epochs", type=int, default=4, help="fine-tuning epochs (default 4)")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  p.set_defaults(func=_run_quickstart)


def _run_quickstart(args):
  if args.pretrain_steps < 1 or args.finetune_epochs < 1:
    raise ElectraError("--pretrain-steps and --finetune-epochs must be >= 1")
  from electra_jax import preemption, quickstart

  with preemption.handle_stop_signals():
    summary = quickstart.run(
      args.workdir,
      pretrain_steps=args.pretrain_steps,
      finetune_epochs=args.finetune_epochs,
      progress=not args.no_progress,
    )
  if summary.get("status") == "stopped":
    return _stopped(args.workdir, summary["stopped"], f"in {summary['where']}")
  return 0


_COMMANDS.append(_add_quickstart)


def _add_reproduce(sub):
  from electra_jax import reproduce

  p = sub.add_parser(
    "reproduce",
    help="reproduce a paper result end to end (cpu: ELECTRA vs masked LM at equal FLOPs)",
    description="Reproduce a paper result end to end. `cpu`: pretrain a small ELECTRA and a masked LM of the same\n"
    "encoder shape for the same FLOPs, fine-tune both and the same architecture from scratch on GLUE\n"
    "tasks, and write a markdown report with plots (electra_jax/reproduce.py).",
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  rsub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
  rsub.required = True
  c = rsub.add_parser(
    "cpu",
    help="ELECTRA vs MLM at equal compute on a 2-core CPU (~60 min)",
    description=reproduce.__doc__.split("\n\n")[1],
    epilog="example: electra-jax reproduce cpu --workdir runs/repro  (re-run the same command to resume)",
  )
  reproduce.add_cpu_arguments(c)
  c.set_defaults(func=lambda args: reproduce.run_cli(args, ["electra-jax", *sys.argv[1:]]))


_COMMANDS.append(_add_reproduce)


def _add_bench(sub):
  p = sub.add_parser(
    "bench",
    help="time a pretraining step, a fine-tuning step or inference (optionally against HF PyTorch)",
    description="Time the jitted pretraining step, fine-tuning step or inference forward on synthetic\n"
    "batches: median/p10/p90 step time after warm-up, tokens/s, compile time, peak RSS, model\n"
    "FLOPs per step (analytic, checked against XLA's count), achieved FLOP/s and, on a GPU/TPU,\n"
    "MFU. --compare-torch times the same workload in HF transformers + PyTorch in the same\n"
    "run (alternating worker processes) and prints the ratio. Override the workload's config\n"
    "(experiments/configs/pretrain.py, or glue.py for finetune/inference) with --config.KEY=VALUE.",
    epilog="examples:\n"
    "  electra-jax bench --size small --batch 8 --seq 128 --workload pretrain --compare-torch\n"
    "  electra-jax bench --size small --batch 32 --workload inference --json\n"
    "  electra-jax bench --size base --batch 32 --seq 512 --workload pretrain "
    "--config.compute_dtype=bfloat16",
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--size", default="small", help="tiny, small, base or large (default small)")
  p.add_argument(
    "--workload", default="pretrain", help="pretrain, finetune or inference (default pretrain)"
  )
  p.add_argument("--batch", type=_int_arg("--batch"), default=8, help="sequences per step (8)")
  p.add_argument("--seq", type=_int_arg("--seq"), default=128, help="sequence length (128)")
  p.add_argument("--steps", type=_int_arg("--steps"), default=10, help="timed steps (10)")
  p.add_argument(
    "--warmup", type=_int_arg("--warmup"), default=2, help="untimed steps after compiling (2)"
  )
  p.add_argument("--seed", type=_int_arg("--seed"), default=0, help="seed of params and batches")
  p.add_argument(
    "--compare-torch",
    action="store_true",
    help="also time HF transformers + PyTorch (needs torch and transformers)",
  )
  p.add_argument(
    "--torch-threads",
    type=_int_arg("--torch-threads"),
    default=0,
    help="torch.set_num_threads for --compare-torch (default: one per usable core)",
  )
  p.add_argument(
    "--microbatch-tokens",
    type=_int_arg("--microbatch-tokens"),
    default=-1,
    help="inference / finetune: tokens per micro-batch on CPU, as predict and the fine-tuning"
    " step run it (default: electra_jax.inference.CHUNK_TOKENS / train.CPU_MICROBATCH_TOKENS;"
    " 0: the whole batch in one call)",
  )
  p.add_argument(
    "--use-compilation-cache",
    action="store_true",
    help="read and write the persistent compilation cache (compile_s is then a load on a hit)",
  )
  p.add_argument("--json", action="store_true", help="print the report as one JSON object")
  p.set_defaults(func=_run_bench, accepts_config_overrides=True)


def _int_arg(flag: str):
  def parse(text: str) -> int:
    try:
      return int(text)
    except ValueError:
      raise ElectraError(f"{flag} takes an integer, got {text!r}") from None

  return parse


def _run_bench(args):
  import json

  from electra_jax import bench

  spec = bench.Spec(
    workload=args.workload,
    size=args.size,
    batch=args.batch,
    seq=args.seq,
    steps=args.steps,
    warmup=args.warmup,
    seed=args.seed,
    overrides=tuple(args.config_overrides),
    torch_threads=args.torch_threads,
    microbatch_tokens=args.microbatch_tokens,
    compilation_cache=args.use_compilation_cache,
  )
  report = bench.run(spec, compare_torch=args.compare_torch)
  print(json.dumps(report) if args.json else bench.format_report(report))
  return 0


_COMMANDS.append(_add_bench)


def version() -> str:
  """The installed distribution's version; the package's own when not installed."""
  from importlib import metadata

  try:
    return metadata.version("electra-jax")
  except metadata.PackageNotFoundError:  # run from a source tree
    import electra_jax

    return electra_jax.__version__


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="electra-jax",
    description="ELECTRA in JAX/Flax: convert checkpoints, prepare data, pretrain, fine-tune, predict, export.",
  )
  parser.add_argument("--version", action="version", version=f"electra-jax {version()}")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  sub.required = True
  for add in _COMMANDS:
    add(sub)
  return parser


@contextlib.contextmanager
def _progress_logs():
  """Shows the library's INFO messages (progress, where outputs went) as plain lines on stdout.

  Library code logs through `logging.getLogger("electra_jax....")`; only the
  command line decides that a user sees them, and only while it runs (so
  `main` can run several times in one process, as the tests do).
  """
  logger = logging.getLogger("electra_jax")
  info = logging.StreamHandler(sys.stdout)
  info.setFormatter(logging.Formatter("%(message)s"))
  info.addFilter(lambda record: record.levelno < logging.WARNING)
  warning = logging.StreamHandler(sys.stderr)
  warning.setFormatter(logging.Formatter("electra-jax: warning: %(message)s"))
  warning.setLevel(logging.WARNING)
  saved = logger.level, logger.propagate
  for handler in (info, warning):
    logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False  # a handler a dependency put on the root logger would print it twice
  try:
    yield
  finally:
    for handler in (info, warning):
      logger.removeHandler(handler)
    logger.level, logger.propagate = saved


def main(argv: list[str] | None = None) -> int:
  xla_env.set_default_xla_flags()  # before anything starts JAX
  parser = build_parser()
  try:  # a `type=` parser may raise ElectraError (one line, as below)
    args, extra = parser.parse_known_args(argv)
  except ElectraError as e:
    print(f"electra-jax: error: {e}", file=sys.stderr)
    return 2
  if getattr(args, "accepts_config_overrides", False):
    args.config_overrides = extra
  elif extra:
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  # Imported here, not at the top: it imports jax, which --help/--version skip.
  from electra_jax import cpu_kernels

  host_memory.reuse_freed_memory()  # before JAX starts its CPU client
  cpu_kernels.enable()  # before any command traces the model
  host_memory.trim_after_compiles()  # compilers' freed memory back to the OS
  xla_env.enable_compilation_cache()  # before the first compilation
  try:
    with _progress_logs():
      result = args.func(args)
  except ElectraError as e:
    print(f"electra-jax: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("electra-jax: interrupted", file=sys.stderr)
    return 130
  return int(result or 0)


if __name__ == "__main__":
  sys.exit(main())
