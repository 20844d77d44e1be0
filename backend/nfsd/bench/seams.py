"""Seam benchmark: colour mismatch across UV seams, and prompt accuracy, per texture parametrization.

    nfsd bench seams [--meshes blob sphere cube xatlas] [--parametrizations pyramid surface]
                     [--seeds 2] [--steps 300] [--write]
    python -m nfsd.bench.seams --steps 2 --seeds 1 --meshes cube      # a quick check of the pipe

Every parametrization textures the same meshes from the same prompts and seeds (hence the same
cameras) at ``nfsd demo``'s settings (built-in prior, CPU, ``nfsd.settings.family_defaults('builtin')``). Each
result is scored by:

- seam mismatch (``nfsd.geometry.seams``): the colour jump across UV seam edges, RGB distance in [0, 1]
  units, mean and 95th percentile weighted by 3D edge length;
- prompt accuracy: the built-in classifier on four orbit views, as ``nfsd bench quality`` does, and
- texel noise: mean |texture - its 5x5 box blur| over covered texels (as in the pyramid-vs-pixels
  table), so a seam fix is not bought with a worse texture.

Meshes: the built-in ``blob`` (the demo's), ``sphere`` and ``cube``, and ``xatlas`` (the blob
without its UVs, unwrapped by xatlas as a mesh file without UVs would be). ``--write`` replaces the
"Seams" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from .report import repo_root, write_section

SECTION_START = "<!-- seams-benchmark:start -->"
SECTION_END = "<!-- seams-benchmark:end -->"
MESHES = ("blob", "sphere", "cube", "xatlas")


def bench_mesh(name: str):
    """A built-in mesh by name, or ``"xatlas"``: the blob unwrapped by xatlas."""
    from ..geometry.builtin_meshes import builtin_mesh
    from ..geometry.unwrap import ensure_uvs

    if name == "xatlas":
        return ensure_uvs(dataclasses.replace(builtin_mesh("blob"), uvs=None))
    return builtin_mesh(name)


def run(meshes, parametrizations, prompts, seeds: int, steps: int, log=print) -> list[dict]:
    """Texture every (mesh, prompt, seed, parametrization); one row per run."""
    from .meshes import score
    from ..builtin.training.classifier import load_classifier
    from ..distill.engine import texture_mesh
    from ..settings import resolve
    from ..priors.prior import load_prior
    from ..geometry.seams import find_seam_edges

    classifier, prior = load_classifier(), load_prior("builtin", "cpu")
    rows = []
    for mesh_name in meshes:
        mesh = bench_mesh(mesh_name)
        edges = find_seam_edges(mesh.positions, mesh.triangles, mesh.uvs)
        for prompt in prompts:
            for seed in range(seeds):
                for kind in parametrizations:
                    config = resolve({"prompt": prompt, "device": "cpu", "seed": seed, "steps": steps,
                                      "parametrization": kind})
                    t0 = time.perf_counter()
                    result = texture_mesh(mesh, config, prior=prior)
                    seconds = time.perf_counter() - t0
                    s = score(result, prompt, classifier, edges)  # the real-mesh benchmark's views and seams
                    noise = texel_noise(result.texture, result.uvs)
                    rows.append({"mesh": mesh_name, "parametrization": kind, "prompt": prompt, "seed": seed,
                                 "seam_mean": s["seam_mean"], "seam_p95": s["seam_p95"], "seam_edges": len(edges),
                                 "prompt_accuracy": s["prompt_accuracy"], "texel_noise": noise, "seconds": seconds})
                    log(f"{mesh_name:7s} {kind:8s} {prompt!r} seed {seed}: seam {s['seam_mean']:.3f} "
                        f"(p95 {s['seam_p95']:.3f}, {len(edges)} edges) acc {s['prompt_accuracy']:.2f} "
                        f"noise {noise:.4f} ({seconds:.0f}s)")
    return rows


def texel_noise(texture: np.ndarray, uvs: np.ndarray) -> float:
    """Mean |texture - 5x5 box blur| over covered texels, for uint8 ``[H, W, 3]`` (row 0 bottom)."""
    import torch.nn.functional as F

    from ..distill.texels import uv_coverage

    img = torch.from_numpy(texture[..., :3].astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    blurred = F.avg_pool2d(F.pad(img, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    mask = uv_coverage(torch.from_numpy(uvs), texture.shape[0])
    return float((img - blurred).abs().mean(1)[0][mask].mean())


def format_table(rows: list[dict], parametrizations) -> str:
    """Markdown: one line per (mesh, parametrization), means over prompts and seeds."""
    lines = ["| mesh | seam edges | parametrization | seam mismatch, mean | seam mismatch, p95 | prompt accuracy "
             "| texel noise | s / run |", "|---|---|---|---|---|---|---|---|"]
    meshes = list(dict.fromkeys(r["mesh"] for r in rows))
    for mesh in meshes:
        for kind in parametrizations:
            sel = [r for r in rows if r["mesh"] == mesh and r["parametrization"] == kind]
            if not sel:
                continue

            def mean(key):
                return float(np.mean([r[key] for r in sel]))

            lines.append(f"| {mesh} | {sel[0]['seam_edges']} | {kind} | {mean('seam_mean'):.3f} | {mean('seam_p95'):.3f} "
                         f"| {mean('prompt_accuracy'):.2f} | {mean('texel_noise'):.4f} | {mean('seconds'):.0f} |")
    return "\n".join(lines)


def _demo_settings() -> str:
    from ..settings import BUILTIN, family_defaults

    d = family_defaults(BUILTIN)

    return f"texture {d['texture_size']}, render {d['render_size']}, batch {d['batch']}, lr {d['lr']}"


def reproducing_command(args, parser: argparse.ArgumentParser) -> str:
    """The ``nfsd bench seams`` command line that reproduces a run: every option that changes the
    table, the ones left at their defaults omitted."""
    command = f"nfsd bench seams --seeds {args.seeds} --steps {args.steps}"
    for name in ("meshes", "parametrizations", "prompts"):
        values = getattr(args, name)
        if values != parser.get_default(name):
            command += f" --{name} " + " ".join(f'"{v}"' if " " in v else v for v in values)
    return command


def build_parser() -> argparse.ArgumentParser:
    from ..cli_args import DEMO_PROMPT

    p = argparse.ArgumentParser(prog="nfsd bench seams", description=__doc__.split("\n\n")[0])
    p.add_argument("--meshes", nargs="+", choices=MESHES, default=list(MESHES))
    p.add_argument("--parametrizations", nargs="+", default=["pyramid", "surface"])
    p.add_argument("--prompts", nargs="+", default=[DEMO_PROMPT])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--write", action="store_true", help="replace the Seams table in BENCHMARKS.md")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = run(args.meshes, args.parametrizations, args.prompts, args.seeds, args.steps)
    table = format_table(rows, args.parametrizations)
    print(table)
    if args.write:
        prompts = ", ".join(f'"{text}"' for text in args.prompts)
        write_section(repo_root() / "BENCHMARKS.md", (
            f"Measured by `{reproducing_command(args, p)} --write` "
            f"({time.perf_counter() - t0:.0f} s, {args.threads} thread(s)); prompt(s) {prompts}, seeds 0..{args.seeds - 1}, "
            f"`nfsd demo` settings ({_demo_settings()}). Means over prompts and seeds.\n\n" + table),
            SECTION_START, SECTION_END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
