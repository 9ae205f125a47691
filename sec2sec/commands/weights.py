"""`sec2sec weights`: list, download and verify the pretrained encoder weight files in the torch hub cache.

sec2sec weights list                              each file: encoder, enum, URL, path, present / verified
sec2sec weights download [ARCH ...]               fetch missing or damaged files (all by default)
sec2sec weights download ARCH --from FILE         install a copy brought by hand, once its sha256 matches
sec2sec weights verify                            check every present file against its known size and sha256
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sec2sec import weights
from sec2sec.weights import WeightsError


def _status(hub: weights.HubFile) -> str:
    problem = weights.file_problem(hub)
    return "present, verified" if problem is None else problem


def _list(args: argparse.Namespace) -> int:
    for hub in weights.HUB.values():
        print(f"{hub.arch}  ({hub.used_by})" if hub.used_by else hub.arch)
        print(f"  enum    {hub.label}")
        print(f"  url     {hub.url}")
        print(f"  path    {hub.path}")
        print(f"  status  {_status(hub)}")
    return 0


def _download(args: argparse.Namespace) -> int:
    if args.source is not None:
        if len(args.arch) != 1:
            raise WeightsError(f"--from installs one file: name exactly one ARCH ({', '.join(weights.HUB)})")
        hub = weights.hub_file(args.arch[0])
        print(f"installed {weights.install(hub, Path(args.source), progress=not args.quiet)}")
        return 0
    for hub in [weights.hub_file(arch) for arch in args.arch or weights.HUB]:
        problem = weights.file_problem(hub)
        if problem is None:
            print(f"already verified: {hub.path}")
            continue
        print(f"{hub.arch}: {problem}; downloading {hub.url}")
        print(f"downloaded and verified: {weights.fetch(hub, progress=not args.quiet)}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    bad, present = [], 0
    for hub in weights.HUB.values():
        if not hub.path.exists():
            continue
        present += 1
        problem = weights.file_problem(hub)
        print(f"{'verified' if problem is None else problem}: {hub.path}")
        if problem is not None:
            bad.append(hub.arch)
    if not present:
        print(f"no weight files present in {weights.cache_dir()}; `sec2sec weights download` fetches them")
    if bad:
        raise WeightsError(
            f"{len(bad)} of {present} weight files failed verification; `sec2sec weights download {' '.join(bad)}` "
            f"fetches them again"
        )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("weights", help="list, download and verify the pretrained encoder weight files")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="each weight file: encoder, torchvision enum, URL, path, status").set_defaults(
        func=_list
    )
    d = actions.add_parser("download", help="fetch missing or damaged files (with the sha256 check)")
    d.add_argument("arch", nargs="*", metavar="ARCH", help=f"which files (default: all of {', '.join(weights.HUB)})")
    d.add_argument("--from", dest="source", metavar="FILE", help="install this copy of ARCH's file instead")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_download)
    actions.add_parser("verify", help="check every present file against its known size and sha256").set_defaults(
        func=_verify
    )
