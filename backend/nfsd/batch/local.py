"""The rows of a batch run one after another in this process, with the engine, written as ``nfsd texture``
writes them (``nfsd.distill.outputs.write_outputs``) and then the row's finished marker.

Ctrl-C: the first stops the row in progress after its step (what exists is written, without a
marker, so the next run does it again) and leaves the rows after it not run; a second stops at once.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import Cancelled, ConfigError, NfsdError
from ..processes.interrupts import CtrlC
from .plan import CANCELLED, DONE, FAILED, NOT_RUN, TODO, Row, clear_marker, write_marker


def check_local_settings(request: dict) -> dict:
    """The resolver of an in-process batch: ``nfsd.settings.resolve`` (as ``nfsd texture``), and a model
    path that names nothing is refused before anything runs."""
    from ..priors.loading import resolve_model
    from ..settings import CLI, exposed, resolve

    offered = [s.name for s in exposed(CLI)]
    unknown = sorted(set(request) - set(offered))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(offered)}")
    config = resolve(request)
    resolve_model(config.model)
    return config.to_dict()


def check_local_mesh(path: Path) -> None:
    from ..geometry.mesh_files import load_mesh

    load_mesh(path)


def run_local(rows: list[Row], out: Path, bar) -> bool:
    """Run the "todo" rows (``bar``: a tqdm over the steps of all of them). Returns True when Ctrl-C stopped it."""
    with CtrlC() as ctrl_c:
        for row in rows:
            if row.state != TODO:
                continue
            if ctrl_c.count:
                row.fail(NOT_RUN, "not run: the batch was interrupted (Ctrl-C)")
                continue
            done_steps = _run_row(row, out, bar, ctrl_c)
            if row.state != DONE and done_steps < row.steps:  # its steps will not come: the bar's total shrinks
                bar.total -= row.steps - done_steps
                bar.refresh()
    return ctrl_c.count > 0


def _run_row(row: Row, out: Path, bar, ctrl_c: CtrlC) -> int:
    """Run one row; its state and error say how it went. Returns the steps it counted on the bar."""
    from ..distill.outputs import write_outputs
    from ..distill.tiles import make_job
    from ..geometry.mesh_files import load_mesh
    from ..geometry.unwrap import without_uvs
    from ..settings import resolve

    counted, start = 0, time.monotonic()

    def on_progress(p):
        nonlocal counted
        if p.phase == "loading":
            bar.set_description(f"{row.folder}: loading model ({p.step}/{p.total})")
        elif p.phase == "optimizing":
            bar.set_description(f"{row.folder}: cancelling after this step" if ctrl_c.count else row.folder)
            bar.update(p.step - counted)
            counted = p.step

    folder = out / row.folder
    try:
        clear_marker(folder)
        config = resolve(row.request)
        mesh = load_mesh(row.mesh_path)
        if config.uvs == "unwrap":
            mesh = without_uvs(mesh)
        for warning in mesh.warnings:
            bar.write(f"nfsd: {row.where}: warning: {warning}", file=bar.fp)
        bar.set_description(f"{row.folder}: preparing")
        known = len(mesh.warnings)
        job = ctrl_c.job = make_job(mesh, config, None, cancelled=lambda: ctrl_c.count > 0,
                                    texture_size_given="texture_size" in row.request)
        for warning in job.mesh.warnings[known:]:  # the texel-density rule's, the unwrap's
            bar.write(f"nfsd: {row.where}: warning: {warning}", file=bar.fp)
        if ctrl_c.count:
            job.cancel()
        result = job.run(on_progress)
        paths = write_outputs(result, folder)
        if result.cancelled:
            row.fail(CANCELLED, f"interrupted after {result.steps_done} of {result.config.steps} steps; wrote what "
                                f"exists to {folder} (runs again next time)")
            return counted
        row.state, row.seconds = DONE, time.monotonic() - start
        write_marker(row, out, [p.name for p in paths.values()])
    except Cancelled as exc:
        row.fail(CANCELLED, f"interrupted: {exc}")
    except NfsdError as exc:
        row.fail(FAILED, str(exc))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one row's bug must not cost the others
        row.fail(FAILED, f"unexpected {type(exc).__name__}: {exc}")
    finally:
        ctrl_c.job = None
        row.seconds = time.monotonic() - start
    return counted
