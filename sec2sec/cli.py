"""`sec2sec`: offline commands (describe the model; prepare, extract, train, evaluate, compare, split on datasets).

Each subcommand lives in its own module exposing `register(subparsers)`, which adds its parser and sets
`func(args) -> int`. User errors (ValueError and subclasses) become one line on stderr and exit code 2; a rank
or decoder that stalled (`RankStalled`) one line and exit code 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

SUBCOMMAND_MODULES = (
    "sec2sec.describe",
    "sec2sec.offline.prepare",
    "sec2sec.offline.extract",
    "sec2sec.offline.train",
    "sec2sec.offline.evaluate",
    "sec2sec.offline.compare",
    "sec2sec.offline.splits",
    "sec2sec.offline.plot",
    "sec2sec.weights_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sec2sec",
        description="Sec2Sec co-attention transformer: model inspection, feature extraction, training, evaluation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that subcommand is not part of this installation
                continue
            raise
        module.register(subparsers)
    return parser


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: object = None,
) -> None:
    """Warnings as one `warning: ...` line on stderr (no file/line noise for users)."""
    print(f"warning: {message}", file=sys.stderr)


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


if __name__ == "__main__":
    sys.exit(main())
