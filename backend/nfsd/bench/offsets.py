"""Offsets benchmark: does a shape refinement show, and does it stay clean?

    nfsd bench offsets [--steps 150] [--demo-steps 300]
    python -m nfsd.bench.offsets --smoke

Two priors, each run at the old and the current offset defaults (same seed, same cameras):

- bump: ``nfsd.priors.analytic.ShapePrior`` on a small icosphere whose wanted shape has a Gaussian bump of
  10 % of the radius on its front; reports the share of the bump's height recovered at its apex.
- demo: the built-in prior on the built-in ``blob`` mesh, "red and white stripes" (what
  ``nfsd demo --offsets`` does, shorter); a prior that wants no particular shape: the offsets
  should stay small and clean there.

For each: the largest and the mean offset as % of the bounding-sphere radius, and the number of
self-intersecting faces (pymeshlab) of the displaced mesh. Cracks cannot open: offsets are per
vertex and vertices at one place share theirs (``nfsd.distill.offsets.NormalOffsets``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

OLD_DEFAULTS = dict(offset_strength=0.03, offset_lr=0.01, laplacian_weight=1e3, normal_weight=1e2)
BUMP_HEIGHT = 0.1  # fraction of the radius
SECTION_START = "<!-- offsets-benchmark:start -->"
SECTION_END = "<!-- offsets-benchmark:end -->"


def icosphere(subdivisions: int = 2):
    """A unit icosphere ``nfsd.geometry.mesh.Mesh`` (subdivision 2: 162 vertices, 320 faces) with spherical UVs."""
    import trimesh

    from ..geometry.mesh import Mesh

    ico = trimesh.creation.icosphere(subdivisions=subdivisions)
    pos = ico.vertices.astype(np.float32)
    tri = ico.faces.astype(np.int32)
    u = 0.5 + np.arctan2(pos[:, 0], -pos[:, 1]) / (2 * np.pi)
    v = 0.5 + np.arcsin(np.clip(pos[:, 2], -1, 1)) / np.pi
    return Mesh(positions=pos, triangles=tri, uvs=np.stack([u, v], 1)[tri].astype(np.float32))


def bump_offsets(mesh, height: float = BUMP_HEIGHT, width: float = 0.35, direction=(0.0, -1.0, 0.0)) -> np.ndarray:
    """``[V, 3]`` float32: a Gaussian bump of ``height`` (object units) along the normals of a sphere
    centred at the origin, ``width`` radians wide, on ``direction`` (default the front, -Y)."""
    p = mesh.positions.astype(np.float64)
    n = p / np.linalg.norm(p, axis=1, keepdims=True)
    angle = np.arccos(np.clip(n @ np.asarray(direction), -1.0, 1.0))
    return ((height * np.exp(-0.5 * (angle / width) ** 2))[:, None] * n).astype(np.float32)


def self_intersections(positions: np.ndarray, triangles: np.ndarray) -> int:
    """Number of faces that intersect another face (pymeshlab)."""
    import pymeshlab

    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(np.asarray(positions, np.float64), np.asarray(triangles, np.int32)))
    ms.compute_selection_by_self_intersections_per_face()
    return int(ms.current_mesh().selected_face_number())


def offset_stats(mesh, offsets: np.ndarray) -> dict:
    """Max and mean offset as % of the bounding-sphere radius, and the displaced mesh's self-intersections."""
    from ..geometry.mesh import framing_transform

    scale = framing_transform(mesh).scale  # 1 / radius, as the engine frames the mesh
    lengths = np.linalg.norm(offsets, axis=1) * scale * 100
    return {"max_pct": float(lengths.max()), "mean_pct": float(lengths.mean()),
            "self_intersections": self_intersections(mesh.positions + offsets, mesh.triangles)}


def run_bump(settings: dict, steps: int, seed: int = 0) -> dict:
    """The bump test: default settings but ``settings``, render 32, texture 32."""
    from ..distill.config import TextureConfig
    from ..distill.engine import texture_mesh
    from ..priors.analytic import ShapePrior

    mesh = icosphere(2)
    target = bump_offsets(mesh)
    apex = int(np.argmax(np.linalg.norm(target, axis=1)))
    cfg = TextureConfig(prompt="a bump", offsets=True, steps=steps, render_size=32, texture_size=32, device="cpu",
                        seed=seed, **settings)
    result = texture_mesh(mesh, cfg, prior=ShapePrior(mesh, target, image_size=32, albedo=(0.5, 0.5, 0.5)))
    normal = mesh.positions[apex] / np.linalg.norm(mesh.positions[apex])
    return {"recovered": float(result.offsets[apex] @ normal) / BUMP_HEIGHT, **offset_stats(mesh, result.offsets),
            "mesh": mesh, "offsets": result.offsets}


def run_demo(settings: dict, steps: int, seed: int = 0) -> dict:
    from ..distill.config import TextureConfig
    from ..distill.engine import texture_mesh
    from ..geometry.builtin_meshes import builtin_mesh
    from ..geometry.unwrap import ensure_uvs

    mesh = ensure_uvs(builtin_mesh("blob"))
    cfg = TextureConfig(prompt="red and white stripes", offsets=True, steps=steps, texture_size=128, render_size=64,
                        batch=2, device="cpu", seed=seed, **settings)
    result = texture_mesh(mesh, cfg)
    return offset_stats(mesh, result.offsets)


def main(argv=None) -> int:
    from .report import repo_root, write_section
    from ..distill.config import TextureConfig

    parser = argparse.ArgumentParser(prog="nfsd bench offsets", description="Offsets: size and self-intersections.")
    parser.add_argument("--steps", type=int, default=150, help="bump test steps (default %(default)s)")
    parser.add_argument("--demo-steps", type=int, default=300, help="built-in demo steps (default %(default)s, as nfsd demo)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only, do not touch BENCHMARKS.md")
    parser.add_argument("--smoke", action="store_true", help="2 steps each, nothing written")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.demo_steps, args.no_write = 2, 2, True
    torch.set_num_threads(max(args.threads, 1))
    d = TextureConfig()
    current = dict(offset_strength=d.offset_strength, offset_lr=d.offset_lr, laplacian_weight=d.laplacian_weight,
                   normal_weight=d.normal_weight)
    stronger_only = dict(OLD_DEFAULTS, offset_strength=current["offset_strength"], offset_lr=current["offset_lr"])
    runs = [("bump", "old defaults", OLD_DEFAULTS), ("bump", "old regularizers", stronger_only),
            ("bump", "current defaults", current), ("demo", "old defaults", OLD_DEFAULTS),
            ("demo", "current defaults", current)]
    rows = []
    t0 = time.perf_counter()
    for prior, label, settings in runs:
        desc = ", ".join(f"{k} {v:g}" for k, v in settings.items())
        out = run_bump(settings, args.steps) if prior == "bump" else run_demo(settings, args.demo_steps)
        rows.append((f"{prior}, {label} ({desc})", out))
        print(rows[-1][0], {k: v for k, v in out.items() if k not in ("mesh", "offsets")}, flush=True)
    text = ("## Offsets: size and self-intersections\n\n"
            f"`nfsd bench offsets --steps {args.steps} --demo-steps {args.demo_steps}` — bump: ShapePrior on a "
            f"320-face icosphere wanting a {BUMP_HEIGHT:.0%}-of-radius bump, {args.steps} steps, render 32, batch 1; "
            f"demo: built-in prior, blob mesh (3968 faces), 'red and white stripes', {args.demo_steps} steps, "
            f"render 64, texture 128, batch 2. CPU, 1 thread, seed 0. Total {(time.perf_counter() - t0) / 60:.1f} min.\n\n"
            "| run (settings) | bump height recovered | max offset (% radius) | mean offset (% radius) | "
            "self-intersecting faces |\n|---|---|---|---|---|\n")
    for name, r in rows:
        rec = f"{r['recovered']:.0%}" if "recovered" in r else "-"
        text += f"| {name} | {rec} | {r['max_pct']:.2f} | {r['mean_pct']:.2f} | {r['self_intersections']} |\n"
    print(text)
    if not args.no_write:
        path = repo_root() / "BENCHMARKS.md"
        write_section(path, text, SECTION_START, SECTION_END)
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
