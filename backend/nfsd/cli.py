"""The ``nfsd`` console script: a thin face over the engine.

    nfsd texture MESH "PROMPT" --out DIR [options]   texture a mesh file
    nfsd demo [--out DIR]                            built-in mesh + built-in prior, on the CPU
    nfsd serve [--host 127.0.0.1] [--port 7870] ...  the HTTP backend for the Blender add-on
    nfsd models [--models-dir DIR] [--json]           the models and LoRAs a server would offer
    nfsd bench speed|quality|server|renderer|flops|edit|offsets|seams|meshes|demo|materials|cluster [...]   benchmarks (print their figures)
    nfsd batch MANIFEST [--out DIR] [--server URL]   texture every row of a .csv/.json manifest (nfsd.batch)

Bad input exits with status 2 and one line ``nfsd: error: <reason>``; no traceback. Ctrl-C during
``texture`` / ``demo`` drops the step in progress, writes what the last whole step made and exits with status 130.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from .cli_args import BENCHMARKS, build_parser, config_from_args
from .processes.interrupts import CtrlC


def run_texture(mesh, config, out_dir, init_texture=None, stream=None, texture_size_given=True, init_maps=None):
    """Run a job with a tqdm bar and write its outputs into ``out_dir``.

    Ctrl-C drops the step in progress and still writes what the last whole step made. Returns ``(paths, result)``:
    name -> path of each file written, and the ``TextureResult`` (``result.cancelled`` after Ctrl-C).
    Raises ``nfsd.errors.Cancelled`` when Ctrl-C came before the job existed (while unwrapping).
    ``texture_size_given=False``: a mesh without UVs gets the texture size of the texel-density rule
    (``nfsd.geometry.texel_density``); otherwise a too-small size is only warned about. ``init_maps``: a pbr
    run's maps to continue from (``nfsd.distill.init_maps``).
    """
    from tqdm import tqdm

    with CtrlC() as ctrl_c, tqdm(total=config.steps, desc="preparing", unit="step", file=stream or sys.stderr,
                                  dynamic_ncols=True) as bar:
        try:
            return _run_texture_in(bar, ctrl_c, mesh, config, out_dir, init_texture, texture_size_given, init_maps)
        except BaseException:
            bar.leave = False  # an error's line stands alone, without a stale "preparing 0%" bar above it
            raise


def _run_texture_in(bar, ctrl_c, mesh, config, out_dir, init_texture, texture_size_given, init_maps=None):
    from .distill.outputs import write_outputs
    from .distill.tiles import make_job

    known = len(mesh.warnings)  # printed already; the texel-density warning comes from make_job
    # --uvs unwrap, texel density, the unwrap of a mesh without UVs, and UDIM tiles (an atlas, split after)
    job = ctrl_c.job = make_job(mesh, config, init_texture,
                                on_progress=lambda text, elapsed: bar.set_description(f"{text} ({elapsed:.0f} s)"),
                                cancelled=lambda: ctrl_c.count > 0, texture_size_given=texture_size_given,
                                init_maps=init_maps)
    for warning in job.mesh.warnings[known:]:
        bar.write(f"nfsd: warning: {warning}", file=bar.fp)
    if job.config.texture_size != config.texture_size and getattr(job, "layout", None) is None:
        bar.write(f"nfsd: texture size {job.config.texture_size} for this mesh of {mesh.num_faces:,} faces (texel "
                  "density; --texture-size sets it)", file=bar.fp)
    config = job.config
    if ctrl_c.count:
        job.cancel()

    def on_progress(p):
        if p.phase == "loading":
            bar.set_description(f"loading model ({p.step}/{p.total})")
        elif p.phase == "optimizing":
            bar.set_description("cancelling after this step (Ctrl-C again stops at once)" if job.cancelled
                                else config.mode)
            bar.update(p.step - bar.n)
            bar.set_postfix(loss=f"{p.loss:.4g}" if p.loss is not None else "-")

    # In the main thread: Ctrl-C runs the handler between two torch calls, never while a thread is joined.
    result = job.run(on_progress)
    if result.cancelled:
        bar.set_description("writing what exists")
    paths = write_outputs(result, out_dir)
    return paths, result


def _job_runs(entries) -> dict[str, str]:
    """``nfsd models``: what a job of each usable model runs with its sizes left out (``settings.resolve``)."""
    from .errors import NfsdError
    from .settings import resolve

    runs = {}
    for e in entries:
        if e.kind == "lora" or not e.supported:
            continue
        try:
            c = resolve({"prompt": "solid red", "model": e.name}, family=e.family)
        except NfsdError:
            continue
        render = c.render_size or e.render_size or "?"
        runs[e.name] = f"{c.steps} steps, texture {c.texture_size}, render {render}, batch {c.batch}"
    return runs


def _check_model(model: str) -> None:
    """A model path that names nothing fails here, before a progress bar or any work (hub ids: at load)."""
    from .priors.loading import resolve_model

    resolve_model(model)


def _check_out_dir(out, create: bool = True) -> None:
    """``--out`` must be (or become) a writable folder: checked before any work is done (``create=False``:
    only that it is not a file, so a bad mesh path leaves no empty folder behind)."""
    from .errors import ConfigError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; name a folder (it is created if missing)")
    if not create:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {out}: {exc.strerror or exc}; choose another --out") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"the output folder {out} is not writable; choose another --out")


def _source_prompt_beside(init_texture: str | None) -> str:
    """The prompt recorded in ``report.json`` next to ``init_texture`` (a previous run's output folder)."""
    import json

    from .errors import ConfigError

    if not init_texture:
        raise ConfigError("--mode dds edits a texture: give it with --init-texture (and --source-prompt)")
    report = Path(init_texture).with_name("report.json")
    try:
        return str(json.loads(report.read_text())["settings"]["prompt"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"--mode dds needs --source-prompt: what {init_texture} shows (no readable "
                          f"report.json beside it to take the prompt from)") from None


def _read_faces(path: str, num_faces: int):
    """``--faces FILE.npy`` -> ``[F]`` bool (a bool mask or integer face indices)."""
    import numpy as np

    from .errors import ConfigError
    from .distill.texture import as_face_mask

    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--faces {path}: not a readable .npy array ({exc}); save one with numpy.save") from None
    try:
        return as_face_mask(values, num_faces)
    except ConfigError as exc:
        raise ConfigError(f"--faces {path}: {exc}") from None


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import Cancelled, NfsdError

    try:
        if args.command in ("texture", "demo"):
            from .geometry.builtin_meshes import builtin_mesh
            from .geometry.mesh_files import load_mesh
            from .distill.image_files import load_png

            if getattr(args, "mode", None) == "dds" and not getattr(args, "source_prompt", None):
                args.source_prompt = _source_prompt_beside(args.init_texture)
            _check_out_dir(args.out, create=False)
            config = config_from_args(args)  # the settings and the prompt's words, before any work
            _check_model(config.model)
            if args.command == "texture":
                mesh = load_mesh(args.mesh, max_faces=args.max_faces)
            else:
                mesh = builtin_mesh(args.mesh)
            if getattr(args, "uvs", None) == "unwrap":  # its UVs and their warning go (run_texture unwraps)
                from .geometry.unwrap import without_uvs

                mesh = without_uvs(mesh)
            _check_out_dir(args.out)  # created only once the mesh has loaded
            for warning in mesh.warnings:
                print(f"nfsd: warning: {warning}", file=sys.stderr)
            if args.threads > 0:
                import torch

                torch.set_num_threads(args.threads)
            init = load_png(args.init_texture) if args.init_texture else None
            maps = {name: load_png(getattr(args, f"init_{name}")) for name in ("roughness", "metallic", "normal")
                    if getattr(args, f"init_{name}", None)}
            if args.faces:
                mesh.face_mask = _read_faces(args.faces, mesh.num_faces)
            given = getattr(args, "texture_size", None) is not None or init is not None
            paths, result = run_texture(mesh, config, args.out, init, texture_size_given=given, init_maps=maps or None)
            out = Path(args.out).resolve()
            for path in paths.values():
                print(path)
            if result.cancelled:
                print(f"nfsd: interrupted after {result.steps_done} of {result.config.steps} steps; wrote what "
                      f"exists to {out}", file=sys.stderr)
                return 130
            print(f"done: {result.steps_done} steps in {result.timings['total_s']:.1f} s "
                  f"({result.timings['steps_per_s']:.2f} steps/s) -> {out}", file=sys.stderr)
        elif args.command == "serve":
            from .server import serve

            serve(host=args.host, port=args.port, token=args.token, data_dir=args.data_dir, model=args.model,
                  device=args.device, max_jobs=args.max_jobs, max_age_days=args.max_age_days,
                  torch_threads=args.threads, allow_hosts=args.allow_host, max_faces=args.max_faces,
                  max_vertices=args.max_vertices, max_queue=args.max_queue, body_timeout=args.body_timeout,
                  header_timeout=args.header_timeout, max_connections=args.max_connections,
                  models_dir=args.models_dir, executor=args.executor,
                  devices=tuple(d.strip() for d in args.devices.split(",")) if args.devices else None,
                  ray_address=args.ray_address, ray_workers=args.ray_workers)
        elif args.command == "models":
            import json

            from .priors.catalog import Catalog, format_table

            catalog = Catalog(default_model=args.model, models_dir=Path(args.models_dir) if args.models_dir else None)
            catalog.check()
            entries = catalog.entries()
            if args.json:
                print(json.dumps({"default_model": args.model, "models": [e.to_dict() for e in entries]}, indent=2))
            else:
                print(format_table(entries, _job_runs(entries)))
        elif args.command == "bench":
            rest = [a for a in args.rest if a != "--"]
            bench_main = importlib.import_module(BENCHMARKS[args.which], __package__).main
            return int(bench_main(rest) or 0)
        elif args.command == "batch":
            from .batch.command import run_batch

            return run_batch(args.manifest, args.out, server=args.server, token=args.token, jobs=args.jobs,
                             threads=args.threads)
    except Cancelled as exc:
        print(f"nfsd: interrupted: {exc}; nothing was written", file=sys.stderr)
        return 130
    except NfsdError as exc:
        print(f"nfsd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nfsd: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
