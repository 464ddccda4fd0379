"""Crash drill: kill `vaekit train` (SIGKILL) at random points, resume, and check that the result is
identical to an uninterrupted run: best.pt and last.pt (weights, optimizer, loop state, history),
metrics.jsonl and summary.json (timings aside), the pictures, and no temp files left behind.

    python benchmarks/crash_drill.py                  # 20 trials on the bundled digits
    python benchmarks/crash_drill.py --trials 5 --seed 1

Each trial starts the training command, waits until the run has begun (config.yaml written) and
kills it after a random time up to 1.2x the uninterrupted run's time from there to summary.json
(so kills land in epochs, in checkpoint writes, between files, in the test evaluation and in the
pictures); then it continues the run the way a user would: `--resume` when the folder holds a run
config, else the same command again. Prints one line per trial and a final line; exit status 1 if
any trial differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

# a small digits run that early-stops (patience) before --epochs: both endings get exercised
OPTIONS = ["--data", "digits", "--hidden", "128", "--latent-dim", "4", "--epochs", "40",
           "--batch-size", "100", "--lr", "0.01", "--patience", "2", "--threads", "1", "--quiet"]


def command(out: Path, options: list[str]) -> list[str]:
    return [sys.executable, "-m", "vaekit", "train", *options, "--out", str(out)]


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=environment())


def environment() -> dict[str, str]:
    """This vaekit's sources first on the path, so the subprocesses run the code under test."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def reference(out: Path, options: list[str]) -> float:
    """Train uninterrupted into out; returns the seconds from config.yaml (training starts) to
    summary.json (the test evaluation done; pictures and the process exit follow)."""
    proc = subprocess.Popen(command(out, options), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=environment())
    started = wait_for(out / "config.yaml", proc)
    ended = wait_for(out / "summary.json", proc)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"crash drill: the uninterrupted run failed: {err.strip()}")
    return ended - started


def wait_for(path: Path, proc: subprocess.Popen) -> float:
    while not path.exists() and proc.poll() is None:
        time.sleep(0.005)
    return time.perf_counter()


def kill_and_resume(out: Path, options: list[str], delay: float) -> str:
    """Start the run, SIGKILL it `delay` seconds after it began, continue it; returns where the
    kill landed (the epochs last.pt held then)."""
    proc = subprocess.Popen(command(out, options), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=environment())
    wait_for(out / "config.yaml", proc)
    time.sleep(delay)
    finished = proc.poll() is not None
    if not finished:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    where = "after the end" if finished else landed(out)
    again = (command(out, options) if not (out / "config.yaml").exists() else
             [sys.executable, "-m", "vaekit", "train", "--resume", str(out), "--quiet"])
    done = run(again)
    if done.returncode != 0:
        return f"{where}; continuing failed: {done.stderr.strip()}"
    return where


def landed(out: Path) -> str:
    if not (out / "last.pt").exists():
        return "before the first checkpoint"
    epoch = torch.load(out / "last.pt", weights_only=True)["state"]["epoch"]
    temps = [p.name for p in out.iterdir() if p.name.startswith(".")]
    tail = " (with a temp file)" if temps else ""
    return f"after epoch {epoch}{tail}" + ("" if not (out / "summary.json").exists() else
                                          ", summary written")


def differences(a: Path, b: Path) -> list[str]:
    """What differs between two run folders (timings aside); [] when identical."""
    diffs = []
    for name in ("best.pt", "last.pt"):
        x, y = (parsed(torch.load(d / name, weights_only=True)) for d in (a, b))
        diffs += [f"{name}:{k}" for k in x if k != "optimizer" and not same(x[k], y.get(k))]
        if "optimizer" in x and not same(x["optimizer"], y["optimizer"]):
            diffs.append(f"{name}:optimizer")
    if strip(rows(a)) != strip(rows(b)):
        diffs.append("metrics.jsonl")
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    if {**sa, "train_seconds": 0} != {**sb, "train_seconds": 0}:
        diffs.append("summary.json")
    for name in ("samples.png", "reconstructions.png"):
        if (a / name).exists() and (a / name).read_bytes() != (b / name).read_bytes():
            diffs.append(name)
    temps = [p.name for p in b.iterdir() if p.name.startswith(".")]
    diffs += [f"temp file {t}" for t in temps]
    return diffs


def parsed(ckpt: dict) -> dict:
    """The checkpoint with its history (metrics.jsonl's text) as rows, so timings can be set aside."""
    if isinstance(ckpt.get("history_jsonl"), str):
        ckpt["history_jsonl"] = [json.loads(line) for line in ckpt["history_jsonl"].splitlines()]
    return ckpt


def same(x, y) -> bool:
    """Exact equality of nested checkpoint contents (tensors bit for bit; timings aside)."""
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(
            same(v, y[k]) for k, v in x.items() if k != "seconds")
    if isinstance(x, list | tuple):
        return type(x) is type(y) and len(x) == len(y) and all(map(same, x, y))
    return x == y


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def strip(rs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rs]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--workdir", default=None, help="folder for the runs (default: a temp folder)")
    args = p.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vaekit-crash-drill-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        ref = work / "uninterrupted"
        seconds = reference(ref, OPTIONS)
        print(f"uninterrupted run: {seconds:.2f}s from start to summary; "
              f"stop: {json.loads((ref / 'summary.json').read_text())['stop']}")
        rng, bad = random.Random(args.seed), 0
        for i in range(1, args.trials + 1):
            delay = rng.uniform(0, 1.2 * seconds)  # a sixth of the kills after the summary
            out = work / f"trial-{i}"
            where = kill_and_resume(out, OPTIONS, delay)
            diffs = differences(ref, out) if (out / "summary.json").exists() else ["no summary"]
            bad += bool(diffs)
            print(f"trial {i:2d}: killed at {delay:.2f}s, {where} -> "
                  f"{'identical' if not diffs else 'DIFFERS: ' + ', '.join(diffs)}", flush=True)
        print(f"crash drill: {args.trials - bad} of {args.trials} killed and resumed runs identical "
              "to the uninterrupted run")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
