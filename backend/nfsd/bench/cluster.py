"""``nfsd bench cluster``: jobs per hour with one and with two Ray workers on the same queue of small jobs.

One local Ray (``--cpus`` slots) for the whole run; for each worker count in turn, a job manager with
the Ray executor (``nfsd.jobs.queue``, what ``nfsd serve --executor ray`` runs) is started, its actors
are left to start (imports, not timed), then ``--jobs`` small jobs are queued at once and timed until
the last one is done. Printed: jobs per hour for each worker count and their ratio (measured side by
side, ``--rounds`` interleaved rounds, medians), and the model-load time the warm workers save: each
actor loads the model for its first job only (its ``load_model_s``, from the results' timings), every
later job finds it loaded.

    nfsd bench cluster --jobs 8 --steps 30
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

PROMPT = "red and white stripes"


def _mesh_npz() -> bytes:
    from ..geometry.builtin_meshes import builtin_mesh
    from ..geometry.wire import write_wire_npz

    buf = io.BytesIO()
    write_wire_npz(builtin_mesh("sphere"), buf)
    return buf.getvalue()


def _pick_model(model: str | None, tmp: Path) -> str:
    if model:
        return model
    from ..priors.loading import BUILTIN_DIR

    if (BUILTIN_DIR / "unet").is_dir():
        return "builtin"
    from ..priors.tiny import build_tiny_model

    return str(build_tiny_model(tmp / "tiny-model", prompt_words=(PROMPT,)))


def run_queue(workers: int, jobs: int, settings: dict, model: str, data_dir: Path, threads: int,
              timeout: float) -> dict:
    """``jobs`` jobs queued at once on ``workers`` warm Ray workers: ``{wall_s, jobs_per_hour, loads}``,
    ``loads`` the ``(job's worker, load_model_s)`` of every job, in the order they ended."""
    from ..jobs.queue import JobManager, ManagerConfig

    manager = JobManager(ManagerConfig(data_dir=data_dir, default_model=model, device="cpu", executor="ray",
                                       ray_workers=workers, torch_threads=threads, max_finished=10 * jobs))
    manager.start()
    try:
        deadline = time.monotonic() + timeout
        while not all(w["ready"] for w in manager.workers()):  # the actors' start-up is not what is measured
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Ray workers did not start within {timeout:.0f} s: {manager.workers()}")
            time.sleep(0.05)
        mesh = _mesh_npz()
        t0 = time.monotonic()
        ids = [manager.submit(mesh, dict(settings, seed=i)).id for i in range(jobs)]
        while not all(manager.get(i).state in ("done", "failed", "cancelled", "interrupted") for i in ids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the jobs did not end within {timeout:.0f} s")
            time.sleep(0.02)
        wall = time.monotonic() - t0
        failed = [manager.get(i).error for i in ids if manager.get(i).state != "done"]
        if failed:
            raise RuntimeError(f"{len(failed)} jobs did not finish: {failed[0]}")
        loads = []
        for i in sorted(ids, key=lambda j: manager.get(j).finished):
            with np.load(manager.result_path(i), allow_pickle=False) as z:
                loads.append((manager.get(i).worker, float(json.loads(str(z["meta"]))["timings"]["load_model_s"])))
        return {"wall_s": wall, "jobs_per_hour": jobs / wall * 3600.0, "loads": loads,
                "model_loads": sum(w["model_loads"] or 0 for w in manager.workers())}
    finally:
        manager.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nfsd bench cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=8, help="jobs queued at once for each worker count")
    p.add_argument("--workers", default="1,2", help="worker counts to compare (the first is the ratio's base)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--render-size", type=int, default=64)
    p.add_argument("--texture-size", type=int, default=128)
    p.add_argument("--model", default=None, help="model id or path (default: builtin if installed, else a tiny random one)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of each worker")
    p.add_argument("--cpus", type=int, default=0, help="CPU slots of the local Ray (0: the most workers compared)")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds (medians are printed)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds each queue may take")
    args = p.parse_args(argv)
    try:
        import ray
    except ImportError:
        print("nfsd bench cluster needs Ray: pip install 'ray>=2.9' (in a checkout: pip install -e \".[cluster]\")")
        return 2
    counts = [int(n) for n in args.workers.split(",")]
    settings = {"prompt": PROMPT, "steps": args.steps, "render_size": args.render_size,
                "texture_size": args.texture_size}
    with tempfile.TemporaryDirectory(prefix="nfsd-bench-cluster-") as tmp_name:
        tmp = Path(tmp_name)
        model = _pick_model(args.model, tmp)
        owns_ray = not ray.is_initialized()  # a caller's Ray (a test's) is used as it is
        if owns_ray:
            ray.init(num_cpus=args.cpus or max(counts), include_dashboard=False, logging_level="WARNING",
                     log_to_driver=False)
        runs: dict[int, list[dict]] = {n: [] for n in counts}
        try:
            for r in range(args.rounds):
                for n in counts:
                    out = run_queue(n, args.jobs, settings, model, tmp / f"data-{n}-{r}", args.threads, args.timeout)
                    runs[n].append(out)
                    print(f"round {r + 1}, {n} worker(s): {args.jobs} jobs in {out['wall_s']:.1f} s", flush=True)
        finally:
            if owns_ray:
                ray.shutdown()
    print(f"\nmodel {model}, {args.jobs} jobs of {args.steps} steps, render {args.render_size}, texture "
          f"{args.texture_size}, {args.threads} torch thread(s) per worker, medians of {args.rounds} round(s); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[1]:.1f} over the last 5 minutes")
    print(f"{'workers':>8} {'wall s':>8} {'jobs/hour':>10} {'ratio':>6} {'model loads':>12}")
    base = statistics.median(o["jobs_per_hour"] for o in runs[counts[0]])
    for n in counts:
        jph = statistics.median(o["jobs_per_hour"] for o in runs[n])
        wall = statistics.median(o["wall_s"] for o in runs[n])
        print(f"{n:>8} {wall:>8.1f} {jph:>10.0f} {jph / base:>6.2f} {runs[n][-1]['model_loads']:>12}")
    loads = [o["loads"] for n in counts for o in runs[n]]
    cold, warm = [], []
    for run in loads:  # a worker's first job loads the model, its later jobs find it in memory
        seen = set()
        for worker, seconds in run:
            (warm if worker in seen else cold).append(seconds)
            seen.add(worker)
    cold_s = statistics.median(cold)
    warm_s = statistics.median(warm) if warm else 0.0
    print(f"\nmodel load in a job: {cold_s:.2f} s cold (a worker's first job, {len(cold)} jobs), {warm_s:.3f} s warm "
          f"(the model in memory, {len(warm)} jobs)")
    for n in counts:
        wall = statistics.median(o["wall_s"] for o in runs[n])
        saved = (cold_s - warm_s) * (args.jobs - n) / n  # per worker, on the critical path
        print(f"{n} worker(s): loading for every job would add about {saved:.1f} s to the {wall:.1f} s queue "
              f"(+{saved / wall:.0%})")
    return 0
