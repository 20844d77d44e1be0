"""``nfsd batch``: read the manifest, check every row, run the good ones (here or on a server), summarize.

Exit status: 0 when every row is done or was done already (skipped), 1 otherwise, 130 after Ctrl-C.
A manifest that cannot be read, an ``--out`` that is a file or a server that cannot be reached raise
``NfsdError`` before anything runs (the CLI prints it on one line, status 2).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConfigError
from .manifest import read_manifest
from .plan import FAILED, NOT_RUN, SKIPPED, TODO, plan_rows
from .summary import all_good, table, write_summary


DEFAULT_JOBS = 4  # rows on a server at once (--jobs)


def default_out(manifest: Path) -> Path:
    """Beside the manifest: ``shoot.csv`` -> ``shoot-out/``."""
    return manifest.parent / f"{manifest.stem}-out"


def run_batch(manifest, out=None, server: str | None = None, token: str | None = None, jobs: int | None = None,
              threads: int = 1, patience: float = 30.0, stream=None) -> int:
    """Run a manifest's rows (see ``nfsd.batch``); returns the exit status. ``stream``: where the bar,
    the up-front report and the table go (stderr; the table to stdout)."""
    from tqdm import tqdm

    err = stream or sys.stderr
    manifest = Path(manifest)
    rows = read_manifest(manifest)
    out = Path(out) if out else default_out(manifest)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; name a folder (it is created if missing)")
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    client = None
    try:
        if server:
            from .remote import Server

            client = Server(server, token, patience=patience)
            client.check()
            resolver = client.resolve
        else:
            from .local import check_local_settings

            resolver = check_local_settings
            if jobs is not None:
                print("nfsd: note: --jobs applies to --server; in this process rows run one after another", file=err)
        from .local import check_local_mesh

        planned = plan_rows(rows, manifest.parent.resolve(), out, resolver, check_local_mesh)
        for row in planned:
            if row.state == FAILED:
                print(f"nfsd: {row.where}: {row.error}", file=err)
        todo = [r for r in planned if r.state == TODO]
        skipped = sum(r.state == SKIPPED for r in planned)
        bad = sum(r.state == FAILED for r in planned)
        print(f"nfsd: {len(planned)} rows: {len(todo)} to run, {skipped} done before (skipped), {bad} bad"
              + (f" -> {server}" if server else ""), file=err)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the output folder {out}: {exc.strerror or exc}; choose another --out") from None
        interrupted = False
        if todo:
            with tqdm(total=sum(r.steps for r in todo), desc="batch", unit="step", file=err,
                      dynamic_ncols=True) as bar:
                if client is not None:
                    from .remote import run_remote

                    interrupted = run_remote(planned, out, bar, client, jobs=jobs or DEFAULT_JOBS)
                else:
                    if threads > 0:
                        import torch

                        torch.set_num_threads(threads)
                    from .local import run_local

                    interrupted = run_local(planned, out, bar)
    finally:
        if client is not None:
            client.close()
    for row in planned:
        if row.state == TODO:  # a row the run never reached (it stopped on Ctrl-C while writing another)
            row.fail(NOT_RUN, "not run: the batch stopped before it")
    print(table(planned, out))
    summary = write_summary(planned, out, manifest, client.url if client else None)
    print(f"nfsd: summary in {summary}", file=err)
    if interrupted:
        return 130
    return 0 if all_good(planned) else 1
