"""`sec2sec`: offline commands (describe the model; prepare, extract, train, evaluate, compare, split on datasets).

One module per command, each exposing `register(subparsers)`, which adds its parser (the command's arguments)
and sets `func(args) -> int`, the run function that calls the library (`sec2sec.stages`, `sec2sec.weights`,
`sec2sec.offline.*`). User errors (ValueError and subclasses) become one line on stderr and exit code 2; a rank
or decoder that stalled (`RankStalled`) one line and exit code 1.
The session plot is not here: it reads the monitor's own files, so it is `sec2sec-live plot`.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from sec2sec.commands import compare, describe, evaluate, extract, prepare, split, train, weights
from sec2sec.warning_line import show_warning

COMMANDS = (describe, prepare, extract, train, evaluate, compare, split, weights)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sec2sec",
        description="Sec2Sec co-attention transformer: model inspection, feature extraction, training, evaluation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = show_warning
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        from sec2sec.offline.distributed import RankStalled  # torch.distributed is loaded by then anyway

        if not isinstance(exc, RankStalled):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
