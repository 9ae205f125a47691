"""`sec2sec extract`: a dataset folder -> a feature cache (encoder tokens per one-second window).

Resumable: finished clips are in `index.json` and are skipped by a second run, which reuses the cache's
own `encoders.pt` (never new random weights). Unreadable clips are listed in `unreadable.tsv`, never fatal.
Decoding overlaps encoding: torch DataLoader worker processes (started clean, see `decoding.WORKER_START`)
decode the next clips (only the frames a window uses, scaled to the model's input in the worker) while the
main process runs the encoders on batches of windows gathered across clips (`WindowBatcher`); `--workers 0`
decodes inline.

`--precision auto` (default) runs the encoders' trunks in bfloat16 where the device computes it natively,
after the same check against float32 as `sec2sec-live` (`sec2sec.precision`); the cache records the precision
and a cache is only resumed in the precision it was made with. `--device cuda` runs the encoders on a GPU
(pinned, non-blocking copies; `--autocast float16|bfloat16` optionally, which needs --precision float32 or
auto). `--framing frame|face` overrides the config's `model.video.framing` (one warning when it differs: the cache,
and every model trained on it, then record the framing used); `--face largest|centre` says how face framing
chooses the subject among several faces; both are recorded in the index and a cache is only resumed with the
same. `torchrun --nproc_per_node N -m sec2sec extract ...` splits the clips still to do over N
processes (clip k to rank k mod N); each writes its own shards and `index.rank<r>.json`, and rank 0 merges
them into `index.json` (see `cache_writer`). A killed run resumes with any number of processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console

from sec2sec.checkpoint import encoder_settings_mismatch, without_weight_files
from sec2sec.config import Config, ModelConfig
from sec2sec.faces import detector_identity
from sec2sec.framing import SUBJECTS, choose_framing
from sec2sec.model import ENCODER_MODULES, Sec2Sec
from sec2sec.offline.batching import WindowBatcher, check_autocast
from sec2sec.offline.cache_writer import ShardWriter, merge_parts
from sec2sec.offline.datasets import ClipRecord, read_dataset
from sec2sec.offline.decoding import Decoded, UnreadableClip, clip_loader
from sec2sec.offline.distributed import COLLECTIVE_TIMEOUT_MIN, Dist, Heartbeat, context
from sec2sec.offline.features import (
    DTYPES,
    ENCODE_BATCH,
    CacheIndex,
    encoder_identity,
    read_encoders,
    read_index,
    write_index,
)
from sec2sec.offline.output_files import replace_text
from sec2sec.offline.progress import progress_bar
from sec2sec.precision import check_parity, precision_name, resolve_precision
from sec2sec.stream import check_input


@dataclass(frozen=True)
class ExtractSummary:
    """What one run did: clips encoded now, skipped as already done, unreadable, windows encoded, the
    seconds from the encoders being ready (precision checked) to the merged index, and the precision used."""

    encoded: int
    skipped: int
    unreadable: dict[str, str]
    windows: int
    seconds: float
    trimmed: int = 0  # clips longer than model.clip_seconds (their tail was cut)
    padded: int = 0  # clips shorter than model.clip_seconds (masked padding windows)
    precision: str = "float32"


def with_framing(config: Config, framing: str | None) -> Config:
    """`config` with `model.video.framing` replaced by `framing` (None: as it is); one warning line when the
    override differs from the config's framing (`sec2sec.framing.choose_framing`)."""
    video = config.model.video
    chosen = choose_framing(video.framing, framing, what="the config")
    return replace(config, model=replace(config.model, video=replace(video, framing=chosen)))


def encoder_config(config: ModelConfig) -> ModelConfig:
    """The config the cache's encoders are built from: both modalities, whatever variant is trained later."""
    return replace(config, fusion=replace(config.fusion, modalities="both"))


def open_cache(
    folder: Path,
    dataset: str,
    root: Path,
    config: Config,
    dtype: str,
    autocast: str = "off",
    precision: str = "float32",
    subject: str = "largest",
) -> tuple[Sec2Sec, CacheIndex]:
    """An encoder model and an index: the cache's own when `folder` has one (resume), else new ones.
    `subject`: how face framing chooses the subject (recorded when the config frames faces).

    New encoders are seeded with `train.seed` (reproducible random weights when no pretrained ones exist)
    and saved to `encoders.pt` before any clip is encoded.
    """
    if (folder / "index.json").is_file():
        index = read_index(folder)
        other_encoders = encoder_settings_mismatch(index.config, config.model) is not None
        if index.dataset != dataset or other_encoders or index.dtype != dtype:
            raise ValueError(
                f"cache {folder} was made for dataset {index.dataset}, dtype {index.dtype} and another encoder "
                "config (model.video / model.audio / clip_seconds); use another --out or the same settings"
            )
        if index.autocast != autocast:
            raise ValueError(
                f"cache {folder} was encoded with --autocast {index.autocast}; resume it with the same "
                "--autocast (mixing precisions in one cache is refused) or use another --out"
            )
        if index.precision != precision:
            raise ValueError(
                f"cache {folder} was extracted with --precision {index.precision}; resume it with --precision "
                f"{index.precision} (mixing precisions in one cache is refused) or use another --out"
            )
        face = subject if index.framing == "face" else ""
        if index.face != face or (face and index.detector != detector_identity()):
            raise ValueError(
                f"cache {folder} chose faces by --face {index.face} with detector {index.detector}; resume it with "
                f"--face {index.face} and that detector, or use another --out"
            )
        model = Sec2Sec(encoder_config(without_weight_files(index.config)))
        state = read_encoders(folder, index)
        for name in ENCODER_MODULES:
            getattr(model, name).load_state_dict(state[name])
        return model.eval(), index
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.train.seed)
    model = Sec2Sec(encoder_config(config.model)).eval()
    torch.save({name: getattr(model, name).state_dict() for name in ENCODER_MODULES}, folder / "encoders.pt")
    identity = encoder_identity(model)
    faces = config.model.video.framing == "face"
    index = CacheIndex(
        dataset,
        str(root),
        dtype,
        config.model,
        identity,
        model.pretrained,
        {},
        {},
        [],
        autocast,
        precision,
        face=subject if faces else "",
        detector=detector_identity() if faces else {},
    )
    write_index(folder, index)
    return model, index


def extract(
    dataset: str,
    root: str | Path,
    out: str | Path,
    config: Config,
    *,
    dtype: str = "float16",
    workers: int = 1,
    shard_size: int = 64,
    batch: int = ENCODE_BATCH,
    device: str | torch.device = "cpu",
    autocast: str = "off",
    console: Console | None = None,
    precision: str = "float32",
    collective_timeout_min: float = COLLECTIVE_TIMEOUT_MIN,
    framing: str | None = None,
    subject: str = "largest",
) -> ExtractSummary:
    """Encode every readable clip of `dataset` under `root` into the cache `out` (see the module docstring).

    `framing` overrides the config's `model.video.framing` (None: the config's; see `with_framing`); `subject`:
    how face framing chooses the subject ("largest" or "centre").

    `precision`: the encoders' arithmetic (`sec2sec.precision`; the command's default is "auto", this
    function's "float32"); "auto" resumes a cache in its own precision.
    Under torchrun each rank encodes clips rank, rank + N, ... of those not yet in the cache and the
    returned summary counts all ranks (its `unreadable` is complete on rank 0, which merged the index). A rank
    that finished waits for the others as long as they make progress (a clip at least every
    `collective_timeout_min` minutes; see `distributed.Heartbeat`).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not allowed; use one of {', '.join(DTYPES)}")
    if subject not in SUBJECTS:
        raise ValueError(f"--face {subject!r} is not allowed; use one of {', '.join(SUBJECTS)}")
    config = with_framing(config, framing)
    dist = context(device)
    check_autocast(autocast, dist.device)
    console = console or Console(quiet=not dist.main)
    folder, root = Path(out), Path(root)
    wanted = _precision_for(folder, precision, autocast, dist.device)
    records = read_dataset(dataset, root, config.model.heads)
    heartbeat = Heartbeat(folder, dist.rank, dist.world, collective_timeout_min * 60)
    heartbeat.beat("starting")  # before the barrier in in_turn: no rank reads another's file from an older run
    opening = (folder, dataset, root, config, dtype, autocast, wanted, records, dist, subject)
    model, index = dist.in_turn(lambda: _opened(*opening))
    records = keep_cached_groups(records, index)
    todo, bad_rows = _pending(records, index)
    mine = todo[dist.rank :: dist.world]
    with closing(
        clip_loader(mine, index.config, workers, subject=subject)
    ) as clips:  # workers start up beside the encoders
        model = model.to(dist.device)
        if mine:
            index = _check_precision(model, folder, index, dist.device, dist.main)
        writer = ShardWriter(folder, index, dtype, shard_size, dist.rank, dist.world)
        if dist.main:
            for record in bad_rows:
                writer.unreadable(record, record.problem)
        started = time.perf_counter()  # the encoders are ready: their precision check is start-up
        batcher = WindowBatcher(model, batch, autocast)
        counts = _encode_all(writer, batcher, mine, clips, index.config.clip_seconds, console, heartbeat)
    heartbeat.wait_all()
    dist.barrier()
    heartbeat.remove()
    if dist.main:
        merge_parts(folder, index, records)
        _write_report(folder, index.unreadable)
    encoded, windows, trimmed, padded = (sum(c[k] for c in dist.gather(counts)) for k in range(4))
    seconds = time.perf_counter() - started
    skipped = len(records) - len(todo) - len(bad_rows)  # already in the cache
    return ExtractSummary(encoded, skipped, dict(index.unreadable), windows, seconds, trimmed, padded, index.precision)


def _opened(
    folder: Path,
    dataset: str,
    root: Path,
    config: Config,
    dtype: str,
    autocast: str,
    precision: str,
    records: list[ClipRecord],
    dist: Dist,
    subject: str,
) -> tuple[Sec2Sec, CacheIndex]:
    """The cache opened (or created) with the model that fills it; rank 0 first merges the shards a killed run
    finished. Called by one rank at a time."""
    model, index = open_cache(folder, dataset, root, config, dtype, autocast, precision, subject)
    if dist.main:
        merge_parts(folder, index, records)
    return model, index


def keep_cached_groups(records: list[ClipRecord], index: CacheIndex) -> list[ClipRecord]:
    """New clips of a group the cache already holds join that group's split. A group split made over the rows
    of each run (a manifest's unpinned groups) can change when rows are added, and a group must never straddle
    splits: its clips share one person or session."""
    cached = {entry["group"]: entry["split"] for entry in index.clips.values() if entry.get("group")}
    return [
        replace(r, split=cached[r.group])
        if r.clip_id not in index.clips and not r.problem and cached.get(r.group, r.split) != r.split
        else r
        for r in records
    ]


def _pending(records: list[ClipRecord], index: CacheIndex) -> tuple[list[ClipRecord], list[ClipRecord]]:
    """The clips not yet in the cache that can be encoded, and those whose dataset row is unusable (they are
    listed with the unreadable clips; the other rows go on)."""
    todo = [r for r in records if r.clip_id not in index.clips]
    return [r for r in todo if not r.problem], [r for r in todo if r.problem]


def _precision_for(folder: Path, precision: str, autocast: str, device: torch.device) -> str:
    """The precision to extract in: `precision` resolved for `device`; "auto" resumes a cache in its own
    precision; with CUDA autocast the trunks stay float32 (autocast decides their arithmetic)."""
    precision_name(precision)
    if autocast != "off":
        if precision == "bfloat16":
            raise ValueError(
                f"--autocast {autocast} and --precision bfloat16 both set the encoders' arithmetic; give one"
            )
        return "float32"
    if precision == "auto" and (folder / "index.json").is_file():
        precision = read_index(folder).precision
    return resolve_precision(precision, device)


def _check_precision(model: Sec2Sec, folder: Path, index: CacheIndex, device: torch.device, main: bool) -> CacheIndex:
    """Put the encoders in the cache's precision after the check against float32 (`sec2sec.precision`); the
    index to extract into. When bfloat16 fails the check, a cache with no clips yet becomes a float32 cache;
    one holding bfloat16 tokens is refused."""
    used, _ = check_parity(model, *check_input(model.config, device), index.precision)
    if used == index.precision:
        return index
    if index.clips:
        raise ValueError(
            f"cache {folder} holds {index.precision} tokens, but {index.precision} failed its check against "
            "float32 on this machine (see the warning); resume it where it passes, or use another --out"
        )
    index = replace(index, precision=used)
    if main:
        write_index(folder, index)
    return index


def _encode_all(
    writer: ShardWriter,
    batcher: WindowBatcher,
    todo: list[ClipRecord],
    clips: Iterator[Decoded],
    clip_seconds: int,
    console: Console,
    heartbeat: Heartbeat,
) -> tuple[int, int, int, int]:
    """This rank's clips (`todo`, decoded in that order by `clips`) -> shards; returns (clips encoded,
    windows encoded, clips trimmed, clips padded)."""
    started, windows, trimmed, padded, bad = time.perf_counter(), 0, 0, 0, 0
    with progress_bar(console) as progress, torch.inference_mode():
        task = progress.add_task("extract", total=len(todo), note="")
        for k, (record, clip) in enumerate(zip(todo, clips, strict=True)):
            if isinstance(clip, UnreadableClip):
                writer.unreadable(record, clip.error)
                bad += 1
            else:
                for done in batcher.push(record, clip):
                    writer.add(*done)
                windows += clip.length
                trimmed += clip.windows > clip.length
                padded += clip.length < clip_seconds
                if clip.note:  # also kept in the clip's index entry
                    progress.console.print(f"  {record.clip_id}: {clip.note}")
            rate = windows / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=1, note=f"{windows} windows, {rate:.1f}/s, {bad} bad")
            heartbeat.beat(f"clip {k + 1} of {len(todo)} done")
        for done in batcher.finish():
            writer.add(*done)
    writer.flush()
    return len(todo) - bad, windows, trimmed, padded


def _write_report(folder: Path, unreadable: dict[str, str]) -> None:
    lines = ["clip\treason", *(f"{k}\t{v}" for k, v in sorted(unreadable.items()))]
    replace_text(folder / "unreadable.tsv", "\n".join(lines) + "\n")
