"""`sec2sec plot`: draw a session CSV from `sec2sec-live --csv` as a PNG."""

from __future__ import annotations

import argparse

from sec2sec.offline.plot import DEFAULT_SIZE, default_output, plot_session, read_session


def parse_size(text: str) -> tuple[int, int]:
    """'1600x900' -> (1600, 900)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT in pixels, e.g. 1600x900") from None
    return width, height


def run(args: argparse.Namespace) -> int:
    out = plot_session(read_session(args.session), args.output or default_output(args.session), size=args.size)
    print(f"wrote {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plot", help="draw a session CSV from `sec2sec-live --csv` as a PNG")
    p.add_argument("session", metavar="SESSION.csv", help="the CSV (its SESSION.csv.json sidecar is read too)")
    p.add_argument("-o", "--output", metavar="PNG", help="where to write the picture (default: SESSION.png beside it)")
    p.add_argument("--size", type=parse_size, default=DEFAULT_SIZE, metavar="WxH", help="picture size in pixels")
    p.set_defaults(func=run)
