"""Scale-out of the offline half: --device, windows batched across clips, model-sized worker frames, and
torchrun (2 processes, gloo on the CPU) giving the numbers of 1 process for extract and train."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.commands import read_metrics, run_sec2sec
from helpers.configs import TINY_ENCODERS_TOML, TINY_FUSION_TOML
from helpers.synthetic_clips import FIRST_HALF_BEEP, MID_FLASH, Second, render, write_liris_tree, write_mp4

from sec2sec.commands import main
from sec2sec.config import parse_config
from sec2sec.offline.decoding import ClipReader, decode_clip
from sec2sec.offline.extract import extract, open_cache
from sec2sec.offline.features import encode_clip, load_features, read_index
from sec2sec.offline.train import fit
from sec2sec.windows import file_windows

ROOT = Path(__file__).resolve().parents[1]
CONFIG = (
    """
[model]
clip_seconds = 2
"""
    + TINY_ENCODERS_TOML
    + TINY_FUSION_TOML
    + """
[model.temporal]
hidden = 16
dropout = 0.0
[model.heads]
outputs = ["valence"]
[train]
epochs = 4
batch_size = 3
lr = 3e-3
patience = 10
seed = 0
"""
)
# (seconds, width) per clip: lengths 1-4 s (one trimmed, some padded), one clip narrower than tall
CLIPS = [(2, 112), (3, 112), (1, 112), (4, 112), (2, 80), (3, 112), (2, 112), (3, 112)]
SETS = [1, 1, 1, 1, 1, 2, 2, 0]  # 5 training clips (batch 3: the last global batch has 2 rows), 2 validation, 1 test


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny LIRIS-ACCEDE folder (8 clips, 1-4 s, 112x112 and one 80x112) and the config file."""
    base = tmp_path_factory.mktemp("scale")
    rows = []
    for i, ((seconds, width), split) in enumerate(zip(CLIPS, SETS, strict=True)):
        events = [Second(flash=MID_FLASH) if (i + k) % 2 else Second(beep=FIRST_HALF_BEEP) for k in range(seconds)]
        frames, audio = render(events, noise=0.02, seed=i)
        name = f"ACCEDE{i:05d}.mp4"
        write_mp4(base / "liris" / "data" / name, np.ascontiguousarray(frames[:, :, :width]), audio)
        rows.append((name, f"film{i // 2}", split, 4.0 if i % 2 else 1.5, 3.0))
    write_liris_tree(base / "liris", rows)
    (base / "config.toml").write_text(CONFIG, encoding="utf-8")
    return base / "liris", base / "config.toml"


@pytest.fixture(scope="module")
def one_process_cache(dataset: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    """The dataset extracted in this process: windows batched 3 at a time across clips, 3 clips per shard."""
    root, config_path = dataset
    cache = tmp_path_factory.mktemp("cache1") / "cache"
    summary = extract("liris", root, cache, _config(config_path), dtype="float32", workers=0, batch=3, shard_size=3)
    return cache, summary


def _config(path: Path):
    import tomllib

    return parse_config(tomllib.loads(path.read_text()))


def test_worker_frames_are_model_sized_and_encode_the_same(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    """What a decoding worker hands over is (T, m, resize, resize, 3) even for a non-square clip, and the
    encoders give bit-identical tokens for it and for the untrimmed frames."""
    root, config_path = dataset
    config = _config(config_path)
    model, _ = open_cache(tmp_path / "cache", "liris", root, config, "float32")
    narrow = next(r for r in _records(root) if r.clip_id == "ACCEDE00004")
    shipped = ClipReader([narrow], config.model)[0]
    assert tuple(shipped.frames.shape) == (2, 4, 40, 40, 3)
    full = decode_clip(narrow, 4, 16_000, 2, short_side=40)  # untrimmed: 56 x 40 (height x width)
    assert tuple(full.frames.shape) == (2, 4, 56, 40, 3)
    a, b = encode_clip(model, shipped, 8), encode_clip(model, full, 8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _records(root: Path):
    from sec2sec.offline.datasets import read_dataset

    return read_dataset("liris", root)


@pytest.mark.slow
def test_batched_extraction_equals_per_clip(dataset: tuple[Path, Path], one_process_cache) -> None:
    """Windows batched across clips (3 per encoder call, clips of 1-4 s) give per-clip encoding's tokens."""
    root, config_path = dataset
    cache, summary = one_process_cache
    assert (summary.encoded, summary.windows, summary.trimmed) == (8, 16, 7)
    index = read_index(cache)
    assert list(index.clips) == [f"ACCEDE{i:05d}" for i in range(8)] and len(index.shards) == 3
    cached = load_features(cache, index, list(index.clips))
    model, _ = open_cache(cache, "liris", root, _config(config_path), "float32")
    with torch.no_grad():
        for k, record in enumerate(index.records()):
            clip = decode_clip(record, 4, 16_000, 2, 40, 32)
            video, audio = encode_clip(model, clip, 8)
            torch.testing.assert_close(cached.video[k], video, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(cached.audio[k], audio, atol=1e-5, rtol=1e-5)
            assert torch.equal(cached.video_ok[k], clip.video_ok) and int(cached.lengths[k]) == clip.length


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(dataset: tuple[Path, Path], one_process_cache, tmp_path: Path) -> None:
    """torchrun with 2 gloo processes: extraction gives the 1-process cache (ranks' shards merged into one
    index in dataset order), training (2 epochs, then resumed to 4) gives the 1-process metrics to 1e-5 (the
    gradient is the same mean, summed in another order), evaluate prints once and ends."""
    root, config = dataset
    cache1, _ = one_process_cache
    common = ["--dataset", "liris", "--root", str(root), "--config", str(config), "--dtype", "float32"]
    common += ["--precision", "float32"]  # as the 1-process cache (the library's default; the command's is auto)
    run_sec2sec(
        ["extract", *common, "--out", str(tmp_path / "cache2"), "--batch", "3", "--shard-size", "2"], 2, tmp_path
    )
    one, two = read_index(cache1), read_index(tmp_path / "cache2")
    assert list(one.clips) == list(two.clips) and len(one.clips) == 8 and one.encoders == two.encoders
    assert sorted(two.shards) == [f"shard-{k:05d}.pt" for k in range(4)]  # rank 0: 0, 2; rank 1: 1, 3
    assert not list((tmp_path / "cache2").glob("index.rank*.json"))
    a, b = load_features(cache1, one, list(one.clips)), load_features(tmp_path / "cache2", two, list(one.clips))
    torch.testing.assert_close(a.video, b.video, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.audio, b.audio, atol=1e-5, rtol=1e-5)
    assert torch.equal(a.video_ok, b.video_ok) and torch.equal(a.lengths, b.lengths)

    fit(cache1, _config(config), tmp_path / "run1")
    short = tmp_path / "two_epochs.toml"
    short.write_text(config.read_text().replace("epochs = 4", "epochs = 2"))
    for path in (short, config):  # 2 epochs, then resumed from last.pt to 4
        args = ["train", "--config", str(path), "--cache", str(cache1), "--out", str(tmp_path / "run2")]
        out = run_sec2sec(args, 2, tmp_path).stdout
    assert out.count("resuming") == 1 and "after epoch 2" in out
    rows = [read_metrics(tmp_path / f"run{n}") for n in (1, 2)]
    assert len(rows[0]) == len(rows[1]) == 4
    for r1, r2 in zip(*rows, strict=True):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_metric"):
            assert float(r1[key]) == pytest.approx(float(r2[key]), abs=1e-5), key
    w1, w2 = (torch.load(tmp_path / f"run{n}" / "best.pt", weights_only=True)["state_dict"] for n in (1, 2))
    # AdamW divides by the gradient's running RMS: a weight whose gradient is ~0 can move by a fraction of
    # lr (3e-3) on rounding noise, so single weights are compared to lr / 10 and all of them on average
    difference = torch.cat([(w1[k].float() - w2[k].float()).abs().flatten() for k in w1])
    assert float(difference.max()) < 3e-4 and float(difference.mean()) < 1e-6

    checkpoint = str(tmp_path / "run2" / "best.pt")
    args = ["evaluate", "--checkpoint", checkpoint, "--cache", str(cache1), "--split", "validation"]
    out = run_sec2sec([*args, "--out", str(tmp_path / "eval.json")], 2, tmp_path).stdout
    words = " ".join(out.split())  # rich wraps the table's title (which holds the path) at 80 columns
    assert words.count("on the validation split (2 clips)") == 1
    assert len(json.loads((tmp_path / "eval.json").read_text())["predictions"]) == 2


def test_rank_files_of_a_killed_run_are_merged_on_resume(dataset, one_process_cache, tmp_path: Path) -> None:
    """A 2-rank run killed before rank 0's final merge left rank 1's finished shard in index.rank1.json:
    the next run (any number of processes) merges it and encodes only what no rank finished."""
    root, config_path = dataset
    config = _config(config_path)
    cache = tmp_path / "cache"
    shutil.copytree(one_process_cache[0], cache)
    index = json.loads((cache / "index.json").read_text())
    moved = {k: v for k, v in index["clips"].items() if v["shard"] == "shard-00001.pt"}
    part = {"shards": ["shard-00001.pt"], "clips": moved, "unreadable": {}}
    (cache / "index.rank1.json").write_text(json.dumps(part))
    index["clips"] = {k: v for k, v in index["clips"].items() if v["shard"] == "shard-00000.pt"}
    index["shards"] = ["shard-00000.pt"]  # shard-00002.pt was written, never recorded: it is done again
    (cache / "index.json").write_text(json.dumps(index))
    again = extract("liris", root, cache, config, dtype="float32", workers=0, shard_size=4)
    assert (again.encoded, again.skipped) == (2, 6)
    merged = read_index(cache)
    assert list(merged.clips) == [f"ACCEDE{i:05d}" for i in range(8)]
    assert merged.shards == ["shard-00000.pt", "shard-00001.pt", "shard-00002.pt"]
    assert [merged.clips[f"ACCEDE{i:05d}"]["shard"] for i in (2, 3, 7)] == [f"shard-0000{k}.pt" for k in range(3)]
    assert not (cache / "index.rank1.json").exists()


def test_decoding_workers_start_clean_after_the_parent_scaled_frames(
    dataset: tuple[Path, Path], one_process_cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27: this process first decodes and scales frames on its main thread, as the Python API's
    `file_windows` and training do, so PyAV keeps a scaler with FFmpeg slice threads here; then it extracts
    with 2 decoding workers. Workers forked from it inherited that scaler without its threads and hung in
    their first `reformat`; started clean, they finish, and the tokens are those of `--workers 0`."""
    from sec2sec.offline import decoding

    root, config_path = dataset
    windows, _ = file_windows(str(root / "data" / "ACCEDE00000.mp4"), 4, 16_000, short_side=64)
    assert windows[0].frames is not None and windows[0].frames.shape[1:] == (64, 64, 3)  # scaled 112 -> 64 here
    monkeypatch.setattr(decoding, "DECODE_TIMEOUT_S", 180.0)  # a hung worker fails this test, not the suite
    config = _config(config_path)
    summary = extract("liris", root, tmp_path / "cache", config, dtype="float32", workers=2, batch=3, shard_size=3)
    assert (summary.encoded, summary.windows) == (8, 16)
    inline_cache = one_process_cache[0]  # the same clips, settings and seed with --workers 0
    inline, spawned = read_index(inline_cache), read_index(tmp_path / "cache")
    assert list(spawned.clips) == list(inline.clips)
    a = load_features(inline_cache, inline, list(inline.clips))
    b = load_features(tmp_path / "cache", spawned, list(inline.clips))
    for x, y in ((a.video, b.video), (a.audio, b.audio), (a.video_ok, b.video_ok), (a.audio_ok, b.audio_ok)):
        assert x is not None and y is not None and torch.equal(x, y)
    assert torch.equal(a.lengths, b.lengths)


def test_a_decoding_worker_imports_no_encoders() -> None:
    """What a spawned decoding worker imports when it starts (the module its dataset comes from) loads no
    torchvision and no model: a worker's start-up is torch, PyAV and the windower."""
    heavy = ("torchvision", "sec2sec.model")
    code = f"import sys, sec2sec.offline.decoding; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "gpu"], "error: --device 'gpu' is not allowed; use auto"),
        (["--device", "cpu", "--autocast", "float16"], "error: --autocast float16 needs a CUDA device"),
        (["--device", "cuda:7"], "error: --device cuda:7"),
    ],
)
def test_bad_device_is_one_error_line(dataset, tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    root, config = dataset
    args = ["extract", "--dataset", "liris", "--root", str(root), "--config", str(config), "--out", str(tmp_path)]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    for command in (["train", "--cache", str(tmp_path), "--out", str(tmp_path / "r")],):
        assert main([*command, "--device", "tpu"]) == 2
        assert capsys.readouterr().err.startswith("error: --device 'tpu' is not allowed")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_cuda_without_a_gpu_says_so(tmp_path: Path, capsys) -> None:
    args = ["evaluate", "--checkpoint", str(tmp_path / "x.pt"), "--cache", str(tmp_path), "--device", "cuda"]
    assert main(args) == 2
    assert (
        capsys.readouterr().err == "error: --device cuda: no CUDA GPU is available here; use --device cpu (or auto)\n"
    )


@pytest.mark.requires_cuda
def test_cuda_extraction_matches_the_cpu(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    """The GPU cache equals the CPU cache to 1e-3 in float32 (cuDNN vs oneDNN kernels) and to 5e-2 relative
    under float16 autocast; the training path runs on the GPU too."""
    root, config_path = dataset
    config = _config(config_path)
    for name, device, autocast in (("cpu", "cpu", "off"), ("gpu", "cuda", "off"), ("amp", "cuda", "float16")):
        extract("liris", root, tmp_path / name, config, dtype="float32", workers=1, device=device, autocast=autocast)
    index = read_index(tmp_path / "cpu")
    cpu, gpu, amp = (
        load_features(tmp_path / n, read_index(tmp_path / n), list(index.clips)) for n in ("cpu", "gpu", "amp")
    )
    torch.testing.assert_close(gpu.video, cpu.video, atol=1e-3, rtol=1e-3)
    scale = cpu.video.abs().max()
    assert float((amp.video - cpu.video).abs().max() / scale) < 5e-2
    result = fit(tmp_path / "gpu", config, tmp_path / "run", device="cuda")
    assert result.epochs == 4 and result.best_path.is_file()


# ---- a hung rank or decoder ends the run with one line (not a day later) ----

HANGING_RANK = """
import sys, time
from sec2sec.offline.distributed import RankStalled, session
try:
    with session("cpu", timeout_min=float(sys.argv[1])) as dist:
        if dist.rank == 1:
            time.sleep(600)  # hung: never reaches the collective
        dist.gather(dist.rank)
except RankStalled as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(1)
"""


@pytest.mark.slow
def test_a_hung_rank_fails_the_collective_within_the_timeout(tmp_path: Path) -> None:
    """2 gloo processes, rank 1 hangs before a collective: rank 0 gives up after --collective-timeout (3 s here)
    with one line naming the bound, instead of waiting for a day."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    env.update(WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HANGING_RANK, "0.05"],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    try:
        _, err = procs[0].communicate(timeout=120)  # only a hang exceeds this
    finally:
        procs[1].kill()  # torchrun would stop it; here the test does
        procs[1].communicate()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert procs[0].returncode == 1 and len(lines) == 1, err[-2000:]
    assert "rank 0 of 2: another rank did not answer within --collective-timeout 0.05 min" in lines[0]


@pytest.mark.slow
def test_ranks_that_finished_wait_on_progress_not_on_a_collective(tmp_path: Path) -> None:
    """Heartbeat: a rank that keeps making progress is waited for however long it takes; one whose progress
    stops fails the wait after the bound."""
    import threading
    import time

    from sec2sec.offline.distributed import Heartbeat, RankStalled

    mine, other = Heartbeat(tmp_path, 0, 2, stall_s=1.0), Heartbeat(tmp_path, 1, 2, stall_s=1.0)
    other.beat("starting")

    def slow_but_alive() -> None:
        for k in range(8):  # 8 steps of 0.4 s: 3.2 s in all, far past the 1 s bound, but never 1 s idle
            time.sleep(0.4)
            other.beat(f"clip {k + 1}")
        other.beat("done")

    worker = threading.Thread(target=slow_but_alive)
    started = time.monotonic()
    worker.start()
    mine.wait_all()
    worker.join()
    assert time.monotonic() - started >= 3.0
    other.beat("clip 3 of 9 done")  # and now it stops
    with pytest.raises(RankStalled, match=r"rank 1 made no progress for .* \(last: clip 3 of 9 done\)"):
        mine.wait_all()
    mine.remove()
    assert not (tmp_path / ".progress.rank0").exists()


@pytest.mark.slow
def test_a_hung_decoder_worker_ends_extraction_with_one_line(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    import time

    from helpers.decode_faults import hung_decode

    from sec2sec.offline import decoding
    from sec2sec.offline.datasets import read_dataset
    from sec2sec.offline.distributed import RankStalled

    root, config = dataset
    records = read_dataset("liris", root)[:2]
    started = time.monotonic()
    with pytest.raises(RankStalled, match="no decoded clip came from the decoding workers for 5 s"):
        list(decoding.clip_loader(records, _config(config).model, workers=1, decode_timeout_s=5.0, decode=hung_decode))
    assert time.monotonic() - started < 60  # only a hang exceeds this


def test_collective_timeout_must_be_positive() -> None:
    from sec2sec.offline.distributed import session

    with pytest.raises(ValueError, match="--collective-timeout 0: give minutes > 0"):
        with session("cpu", timeout_min=0):
            pass


def test_extraction_records_a_clip_cut_at_a_clock_jump(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    """A clip whose clock jumps by 10^6 s is cut at the jump: it is encoded (one window), its index entry says
    why, and extraction costs what its one second of content costs."""
    from helpers.odd_clips import write_clock_jump

    from sec2sec.offline.decoding import MAX_GAP_S

    _, config = dataset
    root = tmp_path / "liris"
    (root / "data").mkdir(parents=True)
    write_clock_jump(root / "data" / "ACCEDE00000.mp4", jump_s=1_000_000, size=(112, 112))
    write_liris_tree(root, [("ACCEDE00000.mp4", "film0", 1, 1.5, 3.0)])
    summary = extract("liris", root, tmp_path / "cache", _config(config), dtype="float32", workers=0)
    entry = read_index(tmp_path / "cache").clips["ACCEDE00000"]
    assert summary.encoded == 1 and summary.windows == 1 and (entry["length"], entry["windows"]) == (1, 1)
    assert entry["note"] == f"ended at 1 s: the next data is 999999 s later (more than {MAX_GAP_S} s)"
