"""`sec2sec prepare`: unpack a dataset as downloaded into the folder `extract` reads."""

from __future__ import annotations

import argparse

from sec2sec.offline.prepare import prepare_first_impressions


def run(args: argparse.Namespace) -> int:
    try:
        s = prepare_first_impressions(args.source, args.out, args.password or None, print)
    except OSError as exc:  # a full disk or an unreadable download: one line, not a traceback
        raise ValueError(f"{exc.filename or args.out}: {exc.strerror or exc}; free space or check the files") from None
    clips = ", ".join(f"{split} {n}" for split, n in s.clips.items())
    print(f"prepare done: {s.unpacked} clips unpacked, {s.skipped} already there; {args.out} holds {clips} clips")
    print(f"next: sec2sec extract --dataset fi --root {args.out} --out CACHE --config first_impressions")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("prepare", help="unpack a dataset as downloaded into the folder `extract` reads")
    p.add_argument("dataset", choices=("fi",), help="fi: ChaLearn First Impressions (train-1.zip ... parts)")
    p.add_argument("--from", dest="source", required=True, help="folder of the downloaded zip parts")
    p.add_argument("--out", required=True, help="folder to unpack into (then `extract --root` it); resumable")
    p.add_argument("--password", default="", help="password of encrypted zip parts, if the organisers set one")
    p.set_defaults(func=run)
