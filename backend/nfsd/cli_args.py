"""The ``nfsd`` command line: its parser and the ``TextureConfig`` a ``texture`` / ``demo`` run gets.

``nfsd.cli`` runs what is parsed here.
"""

from __future__ import annotations

import argparse

from .priors.lora import parse_lora_arg
from .settings import BUILTIN, CLI, NAMES, exposed, resolve

# A two-colour pattern: what the built-in prior (BENCHMARKS.md) draws reliably on a mesh.
DEMO_PROMPT = "red and white stripes"
# `nfsd demo`'s own defaults, for a run of about 75 s on two idle cores (BENCHMARKS.md, "Demo");
# `nfsd texture` with the built-in prior keeps the family's (settings.py).
DEMO_SETTINGS = {"steps": 500, "batch": 1}


# ``nfsd bench WHICH``: the module whose ``main(argv)`` runs it.
BENCHMARKS = {
    "speed": ".bench.speed", "quality": ".builtin.training.quality", "server": ".bench.server",
    "renderer": ".bench.renderer", "flops": ".bench.flops", "edit": ".builtin.training.edit_quality",
    "offsets": ".bench.offsets", "seams": ".bench.seams", "meshes": ".bench.meshes",
    "demo": ".bench.demo", "materials": ".bench.materials", "cluster": ".bench.cluster",
}


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default, except where there is none to show (required options, None)."""

    def _get_help_string(self, action):
        if action.required or action.default is None:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, no usage dump
        self.exit(2, f"nfsd: error: {message} (see `{self.prog} --help`)\n")


def _help(s, family: str | None, defaults=None) -> str:
    """A setting's help with the default it takes when left out (and the built-in prior's)."""
    if s.name in (defaults or {}):
        return s.help.replace("%", "%%")  # set_defaults makes it the option's default: the formatter shows it
    default = s.none_means or s.default_for(family)
    if s.name == "negative_prompt":
        default = "the NFSD paper's"
    elif default == "":
        default = "none"
    said = f"default {default}"
    if family is None and BUILTIN in s.family:
        said += f"; {s.family[BUILTIN]} with the built-in prior"
    return f"{s.help} ({said})".replace("%", "%%")


def add_setting_options(p: argparse.ArgumentParser, family: str | None = None, defaults=None) -> None:
    """One option per setting the CLI offers (``nfsd.settings``, face ``cli``), left unset when not
    given: :func:`config_from_args` hands what was given to ``nfsd.settings.resolve``. ``family``:
    the defaults the help names (``builtin`` for the demo; None: per model); ``defaults``: the face's own
    (the demo's, set with ``set_defaults``)."""
    for s in exposed(CLI):
        if s.name == "prompt":
            continue  # positional in `texture`, --prompt in `demo`
        kwargs = dict(default=argparse.SUPPRESS, help=_help(s, family, defaults))
        if s.name == "loras":
            p.add_argument("--lora", dest="loras", action="append", type=parse_lora_arg, metavar="PATH[:WEIGHT]",
                           **kwargs)
            continue
        if s.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif s.choices:
            kwargs["choices"] = s.choices
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}[s.kind]
        p.add_argument(s.option, **kwargs)
    p.add_argument("--faces", default=None, metavar="FILE.npy",
                   help="re-texture only these triangles: bool [F] or integer indices; needs --init-texture")
    p.add_argument("--init-texture", default=None, help="PNG to continue from (resized to --texture-size)")
    for name, what in (("roughness", "grey PNG, linear"), ("metallic", "grey PNG, linear"),
                       ("normal", "RGB PNG, tangent space, OpenGL")):
        p.add_argument(f"--init-{name}", default=None, metavar="PNG",
                       help=f"--material pbr: the {name} map to continue from ({what}; the --init-texture's size, "
                            f"as a pbr run writes it{', needs --normal-map' if name == 'normal' else ''})")
    # One thread by default: torch's default (one per core) spin-waits as soon as another program wants the
    # cores, ~6x slower on a shared 2-core machine (BENCHMARKS.md, "Threads"); 0 asks for torch's default.
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; 0: torch's default (one per core), faster only on an idle machine with "
                        "cores to spare")


def _builtin_epilog() -> str:
    from .builtin.vocabulary import grammar

    return (f"The built-in prior (the default --model) knows only these prompts: {grammar()}. A prompt with other "
            "words is refused before any work unless --allow-unknown-words; for anything else use a Stable "
            "Diffusion model (README, 'Real models').")


def build_parser() -> argparse.ArgumentParser:
    from .geometry.mesh import DEFAULT_MAX_FACES

    parser = _Parser(prog="nfsd", description="Texture a mesh from a text prompt with Noise-Free Score Distillation.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"nfsd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("texture", help="texture a mesh file (OBJ, PLY, GLB/GLTF or the add-on's .npz)",
                       description="Texture a mesh file. Ctrl-C drops the step in progress and still writes "
                                   "what exists (exit status 130).", epilog=_builtin_epilog())
    p.add_argument("mesh", help="mesh file: .obj, .ply, .glb, .gltf or the add-on's wire .npz")
    p.add_argument("prompt", help="what the texture shows, e.g. 'red and white stripes'")
    p.add_argument("--out", required=True,
                   help="output folder (created; texture.png, textured.glb, views.png, report.json go there)")
    p.add_argument("--max-faces", type=int, default=DEFAULT_MAX_FACES,
                   help="refuse meshes with more triangles than this (decimate larger ones in Blender)")
    add_setting_options(p)

    p = sub.add_parser("demo", help="texture a built-in mesh with the built-in prior (CPU, about 75 s on two "
                                    "idle cores)",
                       description="Texture a built-in mesh with the built-in prior on the CPU.")
    p.add_argument("--out", default="nfsd-demo", help="output folder")
    p.add_argument("--mesh", default="default", help="built-in mesh: default, blob, sphere or cube")
    p.add_argument("--prompt", default=DEMO_PROMPT, help="what the texture shows")
    add_setting_options(p, family=BUILTIN, defaults=DEMO_SETTINGS)
    # The built-in prior on the CPU (one thread: --threads' default).
    p.set_defaults(model=BUILTIN, device="cpu", **DEMO_SETTINGS)

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
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads of each worker (0: torch's default)")
    _add_executor_options(p)
    _add_server_limits(p)
    p.add_argument("--models-dir", default=None, metavar="DIR",
                   help="offer the diffusers folders and .safetensors checkpoints in DIR and the LoRAs in DIR/loras; "
                        "jobs may name only offered models")

    p = sub.add_parser("models", help="list the models and LoRAs a server would offer (family, text window, render size)")
    p.add_argument("--models-dir", default=None, metavar="DIR", help="as `nfsd serve --models-dir`")
    p.add_argument("--model", default="builtin", help="as `nfsd serve --model`")
    p.add_argument("--json", action="store_true", help="print JSON (what GET /models returns)")

    p = sub.add_parser("bench", help=f"benchmarks: {', '.join(BENCHMARKS)}",
                       description="Benchmarks; each prints its figures.")
    p.add_argument("which", choices=tuple(BENCHMARKS),
                   help="which benchmark")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark (see `nfsd bench WHICH --help`)")
    _add_batch(sub)
    return parser


def _add_batch(sub) -> None:
    """``nfsd batch MANIFEST``: many meshes from one list (``nfsd.batch``)."""
    p = sub.add_parser(
        "batch", help="texture many meshes from a .csv or .json manifest, here or on a server",
        description="Texture every row of a manifest: a .csv with a header row 'mesh,prompt,' then any setting names "
                    "(steps,seed,texture_size,material,...; an optional 'name' column names the row's output folder), "
                    "or a .json list of objects with the same keys, or {\"defaults\": {...}, \"rows\": [...]}. Mesh "
                    "paths are relative to the manifest's folder. Every row is checked before anything runs (a bad "
                    "row is reported and the others still run); each row writes OUT/<name or number-meshstem>/; a row "
                    "whose folder holds finished.json of the same settings and mesh is skipped, so running the "
                    "same command again resumes. OUT/summary.json and a table say how each row went. Exit status 0 "
                    "when every row is done or skipped, 1 otherwise, 130 after Ctrl-C (which cancels the server's "
                    "jobs of this batch).",
        epilog="Example manifest (shoot.csv): 'mesh,prompt,steps,seed' then 'chair.obj,red and white stripes,300,1'. "
               "README, 'Batch texturing'.")
    p.add_argument("manifest", help="the .csv or .json manifest")
    p.add_argument("--out", default=None, help="output folder (default: MANIFEST's folder/<its name>-out)")
    p.add_argument("--server", default=None, metavar="URL",
                   help="run the rows on this `nfsd serve` (e.g. http://127.0.0.1:7870) instead of in this process; "
                        "each row's folder gets result.npz, texture.png, the maps, textured.glb, views.png, report.json")
    p.add_argument("--token", default=None, help="the server's --token")
    p.add_argument("--jobs", type=int, default=None,
                   help="--server: most rows on the server at once, queued or running (default 4); the next is sent "
                        "as one finishes")
    p.add_argument("--threads", type=int, default=1,
                   help="in this process: torch CPU threads, as `nfsd texture --threads`")


def config_from_args(args):
    """The ``TextureConfig`` of a parsed ``texture`` / ``demo`` command: the options given, resolved
    by ``nfsd.settings.resolve`` (what the server does with an API request)."""
    request = {name: getattr(args, name) for name in NAMES if hasattr(args, name)}
    return resolve(request)


def _add_executor_options(p: argparse.ArgumentParser) -> None:
    """Where ``nfsd serve`` runs its jobs (``nfsd.jobs.executors``; README "Several GPUs and machines")."""
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: worker processes on this machine; ray: one long-lived worker per GPU of a Ray "
                        "cluster (needs Ray: pip install 'ray>=2.9')")
    p.add_argument("--devices", default=None, metavar="LIST",
                   help="local executor: one worker process per device, e.g. cuda:0,cuda:1 (cpu,cpu works too); "
                        "default: one worker on --device")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="ray executor: the cluster to join, e.g. 10.0.0.5:6379 (default: start a local Ray)")
    p.add_argument("--ray-workers", type=int, default=0, metavar="N",
                   help="ray executor: how many workers (0: one per GPU of the cluster, or per CPU on a CPU-only one)")


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
    p.add_argument("--header-timeout", type=float, default=LIMITS["header_timeout"],
                   help="seconds a connection may take to send a whole request head (default: %(default)s)")
    p.add_argument("--max-connections", type=int, default=LIMITS["max_connections"],
                   help="connections open at once; more get 503 (default: %(default)s, lowered to fit the "
                        "open-file limit)")
