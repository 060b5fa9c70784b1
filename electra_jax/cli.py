"""`electra-jax` command line: parse arguments, call library functions.

Thin by design: every subcommand parses its flags and hands over to a library
function; nothing imports this module. Each subcommand registers itself with
a `_add_<name>(subparsers)` function listed in `_COMMANDS`. An `ElectraError`
is printed as one line (`electra-jax: error: ...`) and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

from electra_jax.errors import ElectraError


def _add_convert(sub):
  p = sub.add_parser(
    "convert",
    help="convert HF PyTorch ELECTRA checkpoints to electra-jax and back",
    description="Convert between a HF transformers ELECTRA directory (config.json + model.safetensors or "
    "pytorch_model.bin) and an electra-jax checkpoint directory.",
  )
  g = p.add_mutually_exclusive_group(required=True)
  g.add_argument("--from-hf", metavar="SRC", help="HF directory to read")
  g.add_argument("--to-hf", metavar="SRC", help="electra-jax checkpoint directory to export")
  p.add_argument(
    "--out", required=True, metavar="DST", help="output directory (must not exist or be empty)"
  )
  p.add_argument(
    "--head",
    default="auto",
    help="head to convert: auto (from the HF architectures field), none, pretraining, masked_lm, "
    "sequence_classification, question_answering, token_classification, multiple_choice",
  )
  p.set_defaults(func=_run_convert)


def _run_convert(args):
  from electra_jax import convert

  head = None if args.head == "none" else args.head
  if args.from_hf:
    dst = convert.convert_from_hf(args.from_hf, args.out, head=head)
  else:
    dst = convert.convert_to_hf(args.to_hf, args.out)
  print(f"wrote {dst}")


_COMMANDS = [_add_convert]


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="electra-jax",
    description="ELECTRA in JAX/Flax: convert checkpoints, prepare data, pretrain, fine-tune, predict, export.",
  )
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  sub.required = True
  for add in _COMMANDS:
    add(sub)
  return parser


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
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
