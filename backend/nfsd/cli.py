"""The ``nfsd`` console script: a thin face over the engine.

    nfsd texture MESH "PROMPT" --out DIR [options]   texture a mesh file
    nfsd demo [--out DIR]                            built-in mesh + built-in prior, on the CPU
    nfsd serve [--host 127.0.0.1] [--port 7870] ...  the HTTP backend for the Blender add-on
    nfsd models [--models-dir DIR] [--json]           the models and LoRAs a server would offer
    nfsd bench speed|quality|server|renderer|flops|edit|offsets|seams|meshes [...]   benchmarks (print their figures)

Bad input exits with status 2 and one line ``nfsd: error: <reason>``; no traceback. Ctrl-C during
``texture`` / ``demo`` stops after the current step, writes what exists and exits with status 130.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

# A two-colour pattern: what the built-in prior (BENCHMARKS.md) draws reliably on a mesh.
DEMO_PROMPT = "red and white stripes"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)  # every option's default
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, no usage dump
        self.exit(2, f"nfsd: error: {message} (see `{self.prog} --help`)\n")


def _add_texture_options(p: argparse.ArgumentParser, defaults, per_model: bool = False) -> None:
    """The texturing options; ``per_model``: the options named in ``BUILTIN_PRIOR_DEFAULTS`` are
    left unset and :func:`_config_from_args` fills them from the model."""
    from .config import BUILTIN_PRIOR_DEFAULTS
    from .texture import PARAMETRIZATIONS

    def model_default(name: str, own: str = ""):
        """(argparse default, help suffix): with ``per_model`` both defaults are named in the help."""
        value = getattr(defaults, name)
        if not per_model:
            return value, ""
        return argparse.SUPPRESS, f" (default {own or value}; {BUILTIN_PRIOR_DEFAULTS[name]} with the built-in prior)"

    p.add_argument("--model", default=defaults.model,
                   help="'builtin' (shipped, CPU-sized), a diffusers folder, a .safetensors checkpoint or a hub id "
                        "already in the Hugging Face cache")
    p.add_argument("--model-config", default=None,
                   help="diffusers folder with the configs and tokenizer of a single-file checkpoint; needed only "
                        "when its shapes are not standard SD 1.x/2.x/SDXL, or for an SD 2.x 512-base (epsilon) file")
    p.add_argument("--mode", choices=("nfsd", "sds", "csd", "dds"), default=defaults.mode,
                   help="distillation rule: nfsd (noise-free), sds (score distillation), csd (classifier only), "
                        "dds (edit --init-texture towards the prompt, keeping its layout)")
    p.add_argument("--source-prompt", default=None,
                   help="dds: what --init-texture shows (None: the prompt in report.json beside it)")
    p.add_argument("--faces", default=None, metavar="FILE.npy",
                   help="re-texture only these triangles: bool [F] or integer indices; needs --init-texture")
    default, said = model_default("steps")
    p.add_argument("--steps", type=int, default=default, help=f"optimization steps{said}")
    default, said = model_default("texture_size")
    p.add_argument("--texture-size", type=int, default=default, help=f"texture width and height in pixels{said}")
    default, said = model_default("render_size", own="the model's own: 512 SD 1.x, 768 SD 2.x-v, 1024 SDXL")
    p.add_argument("--render-size", type=int, default=default,
                   help=f"size of the views rendered for the prior{said}; 512 runs SDXL ~4x faster")
    default, said = model_default("batch")
    p.add_argument("--batch", type=int, default=default, help=f"views rendered per step{said}")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="classifier-free guidance scale; None: 7.5 for nfsd/csd, 100 for sds")
    p.add_argument("--negative-prompt", default=defaults.negative_prompt, help="what the texture should not look like")
    p.add_argument("--offsets", action=argparse.BooleanOptionalAction, default=defaults.offsets,
                   help="also optimize small vertex offsets along the normals (written to offsets.npy)")
    p.add_argument("--offset-strength", type=float, default=defaults.offset_strength,
                   help="largest offset, as a fraction of the mesh's bounding-sphere radius")
    p.add_argument("--seed", type=int, default=defaults.seed, help="random seed (same seed, same result on the CPU)")
    p.add_argument("--device", default=defaults.device, help="auto, cpu or cuda")
    p.add_argument("--renderer", choices=("auto", "torch", "nvdiffrast"), default=defaults.renderer,
                   help="rasterizer: nvdiffrast on CUDA when installed (auto), or pure PyTorch")
    default, said = model_default("parametrization")
    p.add_argument("--parametrization", choices=PARAMETRIZATIONS, default=default,
                   help="texture parameters: a multi-resolution pyramid in UV space (smoother), plain pixels, or "
                        f"surface: coarse colour on the surface in 3D, seamless across UV seams (BENCHMARKS.md, Seams){said}")
    p.add_argument("--init-texture", default=None, help="PNG to continue from (resized to --texture-size)")
    p.add_argument("--lora", action="append", default=[], metavar="PATH[:WEIGHT]",
                   help="a LoRA .safetensors (kohya/A1111 or diffusers format) and its weight (1 when left out); "
                        "repeatable")
    p.add_argument("--encoder", choices=("full", "tiny"), default=defaults.encoder,
                   help="autoencoder on the gradient path: tiny = TAESD/TAESDXL, faster")
    p.add_argument("--tiny-encoder", default=None, metavar="DIR",
                   help="AutoencoderTiny folder for --encoder tiny (None: the model folder's vae_tiny/)")
    p.add_argument("--negative-weight", type=float, default=defaults.negative_weight,
                   help="csd only: weight of the negative prompt (0: not used, a cheaper step)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; 1 is faster on a busy or shared CPU)")


def build_parser() -> argparse.ArgumentParser:
    from .config import BUILTIN_PRIOR_DEFAULTS
    from .engine import TextureConfig
    from .mesh import DEFAULT_MAX_FACES

    parser = _Parser(prog="nfsd", description="Texture a mesh from a text prompt with Noise-Free Score Distillation.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"nfsd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("texture", help="texture a mesh file (OBJ, PLY, GLB/GLTF or the add-on's .npz)",
                       description="Texture a mesh file. Ctrl-C stops after the current step and still writes "
                                   "what exists (exit status 130).")
    p.add_argument("mesh", help="mesh file: .obj, .ply, .glb, .gltf or the add-on's wire .npz")
    p.add_argument("prompt", help="what the texture shows, e.g. 'red and white stripes'")
    p.add_argument("--out", required=True,
                   help="output folder (created; texture.png, textured.glb, views.png, report.json go there)")
    p.add_argument("--max-faces", type=int, default=DEFAULT_MAX_FACES,
                   help="refuse meshes with more triangles than this (decimate larger ones in Blender)")
    _add_texture_options(p, TextureConfig(), per_model=True)

    demo = TextureConfig(**BUILTIN_PRIOR_DEFAULTS, device="cpu")
    p = sub.add_parser("demo", help="texture a built-in mesh with the built-in prior (CPU, a few minutes)",
                       description="Texture a built-in mesh with the built-in prior on the CPU.")
    p.add_argument("--out", default="nfsd-demo", help="output folder")
    p.add_argument("--mesh", default="default", help="built-in mesh: default, blob, sphere or cube")
    p.add_argument("--prompt", default=DEMO_PROMPT, help="what the texture shows")
    _add_texture_options(p, demo)
    p.set_defaults(threads=1)  # small work: one thread is as fast and immune to a busy CPU

    p = sub.add_parser("serve", help="run the HTTP backend for the Blender add-on",
                       description="Run the HTTP backend for the Blender add-on (docs/API.md).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=7870, help="port to listen on")
    p.add_argument("--token", default=None, help="bearer token clients must send; required on a non-loopback address")
    p.add_argument("--data-dir", default=None,
                   help="where jobs and uploads are stored (None: $NFSD_DATA_DIR, else ~/.local/share/nfsd; "
                        "%%LOCALAPPDATA%%\\nfsd on Windows)")
    p.add_argument("--model", default="builtin", help="default model for jobs that name none")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--max-jobs", type=int, default=50, help="finished jobs kept on disk")
    p.add_argument("--max-age-days", type=float, default=30.0, help="finished jobs older than this are pruned")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads of the worker (0: torch's default)")
    _add_server_limits(p)
    p.add_argument("--models-dir", default=None, metavar="DIR",
                   help="offer the diffusers folders and .safetensors checkpoints in DIR and the LoRAs in DIR/loras; "
                        "jobs may name only offered models")

    p = sub.add_parser("models", help="list the models and LoRAs a server would offer (family, text window, render size)")
    p.add_argument("--models-dir", default=None, metavar="DIR", help="as `nfsd serve --models-dir`")
    p.add_argument("--model", default="builtin", help="as `nfsd serve --model`")
    p.add_argument("--json", action="store_true", help="print JSON (what GET /models returns)")

    p = sub.add_parser("bench", help="benchmarks: speed, quality, server, renderer, flops, edit, offsets, seams, meshes",
                       description="Benchmarks; each prints its figures.")
    p.add_argument("which", choices=("speed", "quality", "server", "renderer", "flops", "edit", "offsets", "seams", "meshes"),
                   help="which benchmark")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark (see `nfsd bench WHICH --help`)")
    return parser


def _config_from_args(args):
    from .config import BUILTIN_PRIOR_DEFAULTS
    from .engine import TextureConfig
    from .lora import parse_lora_arg

    defaults = BUILTIN_PRIOR_DEFAULTS if args.model == "builtin" else vars(TextureConfig())
    chosen = {name: getattr(args, name, defaults[name]) for name in BUILTIN_PRIOR_DEFAULTS}
    return TextureConfig(
        prompt=args.prompt, negative_prompt=args.negative_prompt, mode=args.mode,
        source_prompt=args.source_prompt or "", **chosen,
        guidance_scale=args.guidance_scale, offsets=args.offsets, offset_strength=args.offset_strength,
        seed=args.seed, model=args.model, device=args.device, renderer=args.renderer,
        model_config=args.model_config,
        loras=[parse_lora_arg(a) for a in args.lora], encoder=args.encoder, tiny_encoder=args.tiny_encoder,
        negative_weight=args.negative_weight,
    )


class _CtrlC:
    """SIGINT while a run is on: the first asks the job to stop after its current step (what exists is
    still written), a second stops at once. Installed in the main thread only (Python's rule)."""

    def __init__(self):
        self.count = 0
        self.job = None
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

    def _handle(self, signum, frame):
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        if self.job is not None:
            self.job.cancel()  # no printing here: the handler may have interrupted tqdm mid-write


def run_texture(mesh, config, out_dir, init_texture=None, stream=None):
    """Run a job with a tqdm bar and write its outputs into ``out_dir``.

    Ctrl-C stops after the current step and still writes what exists. Returns ``(paths, result)``:
    name -> path of each file written, and the ``TextureResult`` (``result.cancelled`` after Ctrl-C).
    Raises ``nfsd.errors.Cancelled`` when Ctrl-C came before the job existed (while unwrapping).
    """
    from tqdm import tqdm

    from .engine import TextureJob
    from .outputs import write_outputs
    from .unwrap import ensure_uvs

    with _CtrlC() as ctrl_c, tqdm(total=config.steps, desc="preparing", unit="step", file=stream or sys.stderr,
                                  dynamic_ncols=True) as bar:
        config.validate()  # before a long unwrap, not after it
        mesh = ensure_uvs(mesh, on_progress=lambda text, elapsed: bar.set_description(f"{text} ({elapsed:.0f} s)"),
                          cancelled=lambda: ctrl_c.count > 0)
        job = ctrl_c.job = TextureJob(mesh, config, init_texture=init_texture)
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


def _check_out_dir(out) -> None:
    """``--out`` must be (or become) a writable folder: checked before any work is done."""
    from .errors import ConfigError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; name a folder (it is created if missing)")
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
    from .texture import as_face_mask

    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--faces {path}: not a readable .npy array ({exc}); save one with numpy.save") from None
    try:
        return as_face_mask(values, num_faces)
    except ConfigError as exc:
        raise ConfigError(f"--faces {path}: {exc}") from None


def _add_server_limits(p: argparse.ArgumentParser) -> None:
    """``nfsd serve``'s security options and request limits (defaults: nfsd.limits, listed in docs/API.md)."""
    from .limits import LIMITS

    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another host name this server may be reached by (repeatable); loopback names and --host "
                        "always work, other Host headers get 421 (DNS rebinding)")
    p.add_argument("--max-faces", type=int, default=LIMITS["max_faces"], help="largest mesh in triangles (default: %(default)s)")
    p.add_argument("--max-vertices", type=int, default=LIMITS["max_vertices"], help="largest mesh in vertices (default: %(default)s)")
    p.add_argument("--max-queue", type=int, default=LIMITS["max_queue"],
                   help="most jobs waiting to run; more get 429 (default: %(default)s)")
    p.add_argument("--body-timeout", type=float, default=LIMITS["body_timeout"],
                   help="seconds a request body may stall before it is dropped (default: %(default)s)")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import Cancelled, NfsdError

    try:
        if args.command in ("texture", "demo"):
            from . import mesh as mesh_lib
            from .texture import load_png

            _check_out_dir(args.out)
            if args.command == "texture":
                mesh = mesh_lib.load_mesh(args.mesh, max_faces=args.max_faces)
            else:
                mesh = mesh_lib.builtin_mesh(args.mesh)
            for warning in mesh.warnings:
                print(f"nfsd: warning: {warning}", file=sys.stderr)
            if args.threads > 0:
                import torch

                torch.set_num_threads(args.threads)
            init = load_png(args.init_texture) if args.init_texture else None
            if args.mode == "dds" and not args.source_prompt:
                args.source_prompt = _source_prompt_beside(args.init_texture)
            if args.faces:
                mesh.face_mask = _read_faces(args.faces, mesh.num_faces)
            paths, result = run_texture(mesh, _config_from_args(args), args.out, init)
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
                  models_dir=args.models_dir)
        elif args.command == "models":
            import json

            from .catalog import Catalog, format_table

            catalog = Catalog(default_model=args.model, models_dir=Path(args.models_dir) if args.models_dir else None)
            catalog.check()
            entries = catalog.entries()
            if args.json:
                print(json.dumps({"default_model": args.model, "models": [e.to_dict() for e in entries]}, indent=2))
            else:
                print(format_table(entries))
        elif args.command == "bench":
            rest = [a for a in args.rest if a != "--"]
            if args.which == "speed":
                from .bench_speed import main as bench_main
            elif args.which == "flops":
                from .bench_flops import main as bench_main
            elif args.which == "renderer":
                from .bench_renderer import main as bench_main
            elif args.which == "seams":
                from .bench_seams import main as bench_main
            elif args.which == "quality":
                from .builtin.quality import main as bench_main
            elif args.which == "edit":
                from .builtin.edit_quality import main as bench_main
            elif args.which == "meshes":
                from .bench_meshes import main as bench_main
            elif args.which == "offsets":
                from .bench_offsets import main as bench_main
            else:
                from .bench_server import main as bench_main
            return int(bench_main(rest) or 0)
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
