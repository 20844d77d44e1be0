"""The ``nfsd`` command line: its parser and the ``TextureConfig`` a ``texture`` / ``demo`` run gets.

``nfsd.cli`` runs what is parsed here.
"""

from __future__ import annotations

import argparse

# A two-colour pattern: what the built-in prior (BENCHMARKS.md) draws reliably on a mesh.
DEMO_PROMPT = "red and white stripes"


# ``nfsd bench WHICH``: the module whose ``main(argv)`` runs it.
BENCHMARKS = {
    "speed": ".bench.speed", "quality": ".builtin.training.quality", "server": ".bench.server",
    "renderer": ".bench.renderer", "flops": ".bench.flops", "edit": ".builtin.training.edit_quality",
    "offsets": ".bench.offsets", "seams": ".bench.seams", "meshes": ".bench.meshes",
}


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)  # every option's default
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, no usage dump
        self.exit(2, f"nfsd: error: {message} (see `{self.prog} --help`)\n")


def _add_texture_options(p: argparse.ArgumentParser, defaults, per_model: bool = False) -> None:
    """The texturing options; ``per_model``: the options named in ``BUILTIN_PRIOR_DEFAULTS`` are
    left unset and :func:`config_from_args` fills them from the model."""
    from .distill.config import BUILTIN_PRIOR_DEFAULTS
    from .distill.texture import PARAMETRIZATIONS

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
    from .distill.config import BUILTIN_PRIOR_DEFAULTS
    from .distill.config import TextureConfig
    from .geometry.mesh import DEFAULT_MAX_FACES

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

    p = sub.add_parser("bench", help=f"benchmarks: {', '.join(BENCHMARKS)}",
                       description="Benchmarks; each prints its figures.")
    p.add_argument("which", choices=tuple(BENCHMARKS),
                   help="which benchmark")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark (see `nfsd bench WHICH --help`)")
    return parser


def config_from_args(args):
    """The ``TextureConfig`` of a parsed ``texture`` / ``demo`` command (per-model defaults filled in)."""
    from .distill.config import BUILTIN_PRIOR_DEFAULTS
    from .distill.config import TextureConfig
    from .priors.lora import parse_lora_arg

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
