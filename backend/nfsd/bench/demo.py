"""``nfsd bench demo``: ``nfsd demo`` runs with other options, side by side (threads, steps, sizes).

Each variant is a list of extra ``nfsd demo`` options; every round runs each variant once, in turn
(interleaved, so a busy machine slows them alike), each in its own process (torch's thread pool is
set once per process). Prints the median wall time of the whole command, the optimize time and
steps/s, the ratio to the first variant, and, with ``--metrics``, the off-palette share of the last
round's views (``nfsd.builtin.training.view_metrics``: lower is cleaner). The last round's output
folders stay under ``--out`` (look at their views.png).

    nfsd bench demo --steps 30 --variant "1=--threads 1" --variant "2=--threads 2" --variant "default=--threads 0"
    nfsd bench demo --rounds 1 --metrics --variant "today=--steps 600" --variant "300=--steps 300"
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run_demo(options: list[str], out: Path) -> dict:
    """One ``nfsd demo`` in a child process; its report's timings plus ``wall_s`` (the whole command)."""
    command = [sys.executable, "-m", "nfsd.cli", "demo", "--out", str(out), *options]
    t0 = time.monotonic()
    proc = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    timings = json.loads((out / "report.json").read_text())["timings"]
    return {**timings, "wall_s": wall}


def _variant(text: str) -> tuple[str, list[str]]:
    name, _, options = text.partition("=")
    return name.strip(), shlex.split(options)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="nfsd bench demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", action="append", type=_variant, required=True, metavar="NAME=OPTIONS",
                   help="a name and the `nfsd demo` options it adds (repeatable; the first is the baseline)")
    p.add_argument("--steps", type=int, default=None, help="steps for every variant (else each variant's own)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--out", default="bench-demo", help="folder for the runs' outputs")
    p.add_argument("--metrics", action="store_true", help="also score the last round's views (view_metrics)")
    args = p.parse_args(argv)
    out = Path(args.out)
    common = ["--steps", str(args.steps)] if args.steps else []
    runs: dict[str, list[dict]] = {name: [] for name, _ in args.variant}
    for r in range(args.rounds):
        for name, options in args.variant:
            timings = run_demo(common + options, out / name)
            runs[name].append(timings)
            print(f"round {r + 1} {name}: {timings['wall_s']:.1f} s", file=sys.stderr, flush=True)
    base = statistics.median(t["wall_s"] for t in runs[args.variant[0][0]])
    header = "| variant | options | wall s (median) | optimize s | steps/s | wall vs first |"
    metrics = {}
    if args.metrics:
        for name, _ in args.variant:
            proc = subprocess.run([sys.executable, "-m", "nfsd.builtin.training.view_metrics", str(out / name)],
                                  capture_output=True, text=True, check=True)
            cells = proc.stdout.strip().splitlines()[-1].split(" | ")
            metrics[name] = f"{cells[1]} / {cells[3]} / {cells[5]}"
        header += " off-palette side / above / below |"
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for name, options in args.variant:
        ts = runs[name]
        wall = statistics.median(t["wall_s"] for t in ts)
        row = (f"| {name} | `{shlex.join(common + options)}` | {wall:.1f} | "
               f"{statistics.median(t['optimize_s'] for t in ts):.1f} | "
               f"{statistics.median(t['steps_per_s'] for t in ts):.2f} | {wall / base:.2f} |")
        if args.metrics:
            row += f" {metrics[name]} |"
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
