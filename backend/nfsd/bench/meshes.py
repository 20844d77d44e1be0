"""Real-mesh benchmark: is ``nfsd texture MESH PROMPT``'s default result recognisable on real meshes?

    nfsd bench meshes [--meshes suzanne hardsurface quadruped quadruped_noisy] [--prompts ...]
                      [--seeds 1] [--first-seed 0] [--steps N] [--out DIR] [--write]
    nfsd bench meshes --steps 2 --meshes hardsurface      # a quick check of the pipe

Four meshes with different UV layouts, made by ``scripts/make_bench_meshes.py`` (Blender) and kept
in ``benchmarks/meshes/``:

- ``suzanne``: Blender's monkey subdivided once, its own UVs (few large islands, quads);
- ``hardsurface``: a bevelled box with a boss and a slot, quads, Smart-UV-projected (box islands);
- ``quadruped``: an animal-like remeshed "scan" with thin legs, horns, ears and a tail, Smart UV
  Project (hundreds of small islands);
- ``quadruped_noisy``: the same animal with surface noise and no UVs: xatlas unwraps it, as for
  a scan without a UV map.

Each mesh is read with ``load_mesh`` and unwrapped with ``ensure_uvs`` exactly as ``nfsd texture``
does, then textured with ``nfsd texture``'s defaults for the built-in prior (``TextureConfig`` with
``config.BUILTIN_PRIOR_DEFAULTS``: 600 steps, texture 256, render 128, batch 2, surface field, lr 0.04) on the
CPU; ``--steps`` etc. override them and the table says so.
Each result is scored by:

- prompt accuracy: share of four orbit views (elevation 15, flat light, grey background, 64 px)
  that the built-in classifier assigns to the prompt's pattern and colours, as ``nfsd bench
  quality`` does; the "dataset textures" column lays the dataset's own images of the prompt on the
  same UVs: the ceiling the mesh and its UV layout allow;
- seam mismatch (``nfsd.geometry.seams``): colour jump across UV seam edges, mean weighted by 3D length;
- seconds per run (the optimization, unwrap excluded).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

SECTION_START = "<!-- meshes-benchmark:start -->"
SECTION_END = "<!-- meshes-benchmark:end -->"
MESH_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "meshes"
MESHES = ("suzanne", "hardsurface", "quadruped", "quadruped_noisy")
DEFAULT_PROMPTS = ("red and white stripes", "blue dots on yellow")
VIEW_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)
VIEW_ELEVATION = 15.0
VIEW_SIZE = 64


@dataclasses.dataclass
class BenchMesh:
    name: str
    mesh: object          # nfsd.geometry.mesh.Mesh with UVs (its own or xatlas')
    faces: int            # triangles after fan triangulation
    polygons: int         # faces in the file (quads stay quads there)
    uv_source: str        # "own" | "xatlas"
    seam_edges: object    # nfsd.geometry.seams.SeamEdges


def load_bench_mesh(name: str, mesh_dir: Path = MESH_DIR) -> BenchMesh:
    """One of ``MESHES`` as ``nfsd texture`` would see it: read, checked, unwrapped if it has no UVs."""
    from ..geometry.mesh_files import load_mesh
    from ..geometry.seams import find_seam_edges
    from ..geometry.unwrap import ensure_uvs

    path = Path(mesh_dir) / f"{name}.obj"
    mesh = load_mesh(path)
    own = mesh.uvs is not None
    mesh = ensure_uvs(mesh)
    polygons = sum(1 for line in path.read_text().splitlines() if line.startswith("f "))
    edges = find_seam_edges(mesh.positions, mesh.triangles, mesh.uvs)
    return BenchMesh(name, mesh, len(mesh.triangles), polygons, "own" if own else "xatlas", edges)


def score(result, prompt: str, classifier, edges=None) -> dict:
    """Prompt accuracy on the orbit views and seam mismatch of one ``TextureResult``."""
    from ..builtin.training.classifier import prompt_matches
    from ..builtin.training.view_metrics import render_result
    from ..geometry.seams import seam_mismatch

    images, _ = render_result(result, VIEW_SIZE, VIEW_AZIMUTHS, VIEW_ELEVATION)
    acc = float(prompt_matches(classifier, images, [prompt] * len(images)).float().mean())
    m = result.mesh
    seam = seam_mismatch(result.texture, m.positions, m.triangles, result.uvs, edges=edges)
    return {"prompt_accuracy": acc, "seam_mean": seam["mean"], "seam_p95": seam["p95"], "images": images}


def reference_accuracy(bench: BenchMesh, prompts, classifier) -> float:
    """Prompt accuracy of the dataset's own textures of ``prompts`` laid on the mesh's UVs."""
    from ..builtin.training.quality import QualityConfig, dataset_reference

    cfg = QualityConfig(texture_size=256, render_size=VIEW_SIZE, view_azimuths=VIEW_AZIMUTHS,
                        view_elevation=VIEW_ELEVATION)
    ref = dataset_reference(bench.mesh, prompts, classifier, cfg)
    return float(np.mean([r["prompt_accuracy"] for r in ref.values()]))


def run(meshes, prompts, seeds, overrides: dict, out_dir: Path | None = None, log=print) -> list[dict]:
    """Texture every (mesh, prompt, seed in ``seeds``) with the defaults (plus ``overrides``); one row per run."""
    from ..builtin.training.classifier import load_classifier
    from ..distill.config import BUILTIN_PRIOR_DEFAULTS
    from ..distill.config import TextureConfig
    from ..distill.engine import texture_mesh
    from ..priors.prior import load_prior

    classifier = load_classifier()
    prior = load_prior(TextureConfig().model, "cpu")
    rows = []
    for name in meshes:
        bench = load_bench_mesh(name)
        ceiling = reference_accuracy(bench, prompts, classifier)
        for prompt in prompts:
            for seed in seeds:
                config = TextureConfig(prompt=prompt, seed=seed, device="cpu", **{**BUILTIN_PRIOR_DEFAULTS, **overrides})
                t0 = time.perf_counter()
                result = texture_mesh(bench.mesh, config, prior=prior)
                seconds = time.perf_counter() - t0
                s = score(result, prompt, classifier, bench.seam_edges)
                rows.append({"mesh": name, "faces": bench.faces, "polygons": bench.polygons,
                             "uv_source": bench.uv_source, "seam_edges": len(bench.seam_edges), "prompt": prompt,
                             "seed": seed, "prompt_accuracy": s["prompt_accuracy"], "ceiling": ceiling,
                             "seam_mean": s["seam_mean"], "seconds": seconds})
                log(f"{name:15s} {prompt!r} seed {seed}: acc {s['prompt_accuracy']:.2f} (data {ceiling:.2f}) "
                    f"seam {s['seam_mean']:.3f} ({seconds:.0f}s)")
                if out_dir is not None:
                    _save_views(Path(out_dir), f"{name}_{prompt}_s{seed}".replace(" ", "_"), s["images"])
    return rows


def _save_views(out_dir: Path, stem: str, images: torch.Tensor) -> None:
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    strip = (images.permute(2, 0, 3, 1).reshape(images.shape[2], -1, 3).clamp(0, 1).numpy() * 255).astype(np.uint8)
    Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2), Image.NEAREST).save(out_dir / f"{stem}.png")


def format_table(rows: list[dict]) -> str:
    """Markdown: one line per mesh, means over prompts and seeds."""
    lines = ["| mesh | triangles (file polygons) | UVs | seam edges | prompt accuracy | dataset textures "
             "| seam mismatch, mean | s / run |", "|---|---|---|---|---|---|---|---|"]
    for mesh in dict.fromkeys(r["mesh"] for r in rows):
        sel = [r for r in rows if r["mesh"] == mesh]

        def mean(key):
            return float(np.mean([r[key] for r in sel]))

        r0 = sel[0]
        lines.append(f"| {mesh} | {r0['faces']} ({r0['polygons']}) | {r0['uv_source']} | {r0['seam_edges']} "
                     f"| {mean('prompt_accuracy'):.2f} | {r0['ceiling']:.2f} | {mean('seam_mean'):.3f} "
                     f"| {mean('seconds'):.0f} |")
    return "\n".join(lines)


def reproducing_words(argv: list[str]) -> list[str]:
    """The benchmark's options as the table's header names them: ``--out``'s folder (this machine's)
    becomes ``DIR``, the rest stays as given."""
    words = list(argv)
    for i, word in enumerate(words[:-1]):
        if word == "--out":
            words[i + 1] = "DIR"
    return words


def main(argv=None) -> int:
    from .report import repo_root, write_section
    from ..distill.config import BUILTIN_PRIOR_DEFAULTS
    from ..distill.config import TextureConfig

    d = TextureConfig(**BUILTIN_PRIOR_DEFAULTS)
    p = argparse.ArgumentParser(prog="nfsd bench meshes", description=__doc__.split("\n\n")[0])
    p.add_argument("--meshes", nargs="+", choices=MESHES, default=list(MESHES))
    p.add_argument("--prompts", nargs="+", default=list(DEFAULT_PROMPTS))
    p.add_argument("--seeds", type=int, default=1, help="how many seeds (default %(default)s)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds FIRST..FIRST+N-1 (default %(default)s)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--texture-size", type=int, default=d.texture_size)
    p.add_argument("--render-size", type=int, default=d.render_size)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--parametrization", choices=("pyramid", "pixels", "surface"), default=d.parametrization)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="write each run's four orbit views here as PNG")
    p.add_argument("--write", action="store_true", help="replace the real-mesh table in BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.steps < 1:
        p.error("--seeds and --steps must be at least 1")
    torch.set_num_threads(args.threads)
    overrides = {k: getattr(args, k) for k in ("steps", "texture_size", "render_size", "batch", "parametrization")
                 if getattr(args, k) != getattr(d, k)}
    t0 = time.perf_counter()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    rows = run(args.meshes, args.prompts, seeds, overrides, args.out, log=lambda s: print(s, flush=True))
    table = format_table(rows)
    print(table)
    if args.write:
        settings = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "none"
        defaults = ", ".join(f"{k} {v}" for k, v in BUILTIN_PRIOR_DEFAULTS.items())
        prompts = ", ".join(f'"{q}"' for q in args.prompts)
        words = reproducing_words(argv if argv is not None else sys.argv[1:])
        write_section(repo_root() / "BENCHMARKS.md", (
            f"Measured by `nfsd bench meshes {' '.join(words)}` "
            f"({time.perf_counter() - t0:.0f} s, {args.threads} thread(s), CPU); prompts {prompts}, seeds "
            f"{seeds[0]}..{seeds[-1]}; `nfsd texture`'s built-in-prior defaults ({defaults}) with overrides: "
            f"{settings}. Means over prompts and seeds.\n\n" + table), SECTION_START, SECTION_END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
