"""``nfsd bench renderer``: do nvdiffrast and the pure-PyTorch reference agree, and how fast is each?

    nfsd bench renderer --device cuda --resolution 512 --texture-size 1024,768 --mesh default

For each texture size (the default pairs a power of two with 768, whose mip stack stops at 3 x 3),
renders the same mesh, texture and cameras with both rasterizers and prints: coverage agreement,
the largest colour difference on interior pixels (covered, with every 4-neighbour covered by the
same surface, away from silhouettes where antialiasing legitimately differs), the cosine similarity
of the position gradients and of the texture gradients, and the forward+backward time of each.
Targets (issues 2, 7 and 14): identical coverage (up to 1 pixel in 10,000, pixel centres exactly on
an edge follow different fill rules), colours within 1e-3, position-gradient cosine >= 0.99; a
``targets:`` line says PASS or FAIL per filter mode and the exit status is 1 if any fails.
Without CUDA and nvdiffrast it times the reference alone.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..render.cameras import orbit_cameras
from ..distill.optimize import resolve_device
from ..geometry.builtin_meshes import builtin_mesh
from ..geometry.unwrap import ensure_uvs
from ..geometry.mesh import unit_sphere_transform
from ..render.nvdiffrast_rasterizer import NvdiffrastRasterizer, nvdiffrast_available
from ..render.torch_rasterizer import TorchRasterizer
from ..render.renderer import flat_lighting, render_views
from ..render.rasterizer import mip_levels


def bench_scene(mesh_name: str, device, texture_size: int, seed: int = 0):
    """``(positions [V, 3] in the unit sphere, triangles [F, 3] int32, uvs [F, 3, 2], texture [S, S, 3] row 0
    bottom)`` of a built-in mesh, seeded: the one scene both rasterizers draw."""
    mesh = ensure_uvs(builtin_mesh(mesh_name))
    transform = unit_sphere_transform(mesh.world_positions())
    positions = torch.from_numpy(transform.apply(mesh.world_positions()).astype(np.float32)).to(device)
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=gen)
    texture = F.interpolate(coarse, size=(texture_size, texture_size), mode="bilinear", align_corners=False)
    texture = texture[0].permute(1, 2, 0).contiguous().to(device)
    return (positions, torch.from_numpy(mesh.triangles).to(device), torch.from_numpy(mesh.uvs).to(device), texture)


def render_with_grads(rasterizer, scene, resolution: int, filter_mode: str, weights: torch.Tensor):
    """Render 4 orbit views; returns (image [B,3,H,W], mask, d loss/d positions, d loss/d texture, seconds)."""
    positions, triangles, uvs, texture = scene
    positions = positions.clone().requires_grad_(True)
    texture = texture.clone().requires_grad_(True)
    cams = orbit_cameras([0.0, 90.0, 180.0, 270.0], [15.0, 15.0, 15.0, 50.0]).to(positions.device)
    if positions.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = render_views(rasterizer, positions, triangles, uvs, texture, cams, resolution,
                       flat_lighting(4, (0.2, 0.4, 0.6)), filter_mode=filter_mode)
    (out.image * weights).sum().backward()
    if positions.is_cuda:
        torch.cuda.synchronize()
    return out.image.detach(), out.mask.detach(), positions.grad, texture.grad, time.perf_counter() - t0


def compare(reference, candidate) -> dict:
    """Agreement figures between two ``render_with_grads`` results."""
    img_a, mask_a, gpos_a, gtex_a, _ = reference
    img_b, mask_b, gpos_b, gtex_b, _ = candidate
    cov_a, cov_b = mask_a > 0.999, mask_b > 0.999
    interior = cov_a & cov_b
    for dim in (2, 3):  # erode: all 4-neighbours covered too
        interior[:, :, 1:-1] &= torch.roll(cov_a, 1, dim)[:, :, 1:-1] & torch.roll(cov_a, -1, dim)[:, :, 1:-1]
    diff = (img_a - img_b).abs().amax(dim=1, keepdim=True)[interior]
    cos = lambda a, b: F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()  # noqa: E731
    return {
        "coverage_mismatch_px": int(((mask_a > 0.5) != (mask_b > 0.5)).sum()),
        "covered_px": int((mask_a > 0.5).sum()),
        "interior_max_diff": float(diff.max()) if diff.numel() else float("nan"),
        "interior_px_over_1e-3": int((diff > 1e-3).sum()),
        "position_grad_cosine": cos(gpos_a, gpos_b),
        "texture_grad_cosine": cos(gtex_a, gtex_b),
    }


def meets_targets(figures: dict) -> bool:
    """The agreement targets of the module docstring."""
    return (figures["coverage_mismatch_px"] <= 1e-4 * max(figures["covered_px"], 1)
            and figures["interior_max_diff"] <= 1e-3 and figures["position_grad_cosine"] >= 0.99)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="nfsd bench renderer", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--texture-size", default="1024,768", help="comma-separated texture sizes (default: %(default)s)")
    p.add_argument("--mesh", default="default")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    weights = torch.randn(4, 3, args.resolution, args.resolution, generator=torch.Generator().manual_seed(1)).to(device)
    candidates = {"torch": TorchRasterizer()}
    if device.type == "cuda" and nvdiffrast_available():
        candidates["nvdiffrast"] = NvdiffrastRasterizer(device)
    else:
        print("nvdiffrast: not available here (needs CUDA and `pip install diffrp-nvdiffrast`): timing the reference only")
    failed = False
    for texture_size in (int(s) for s in args.texture_size.split(",")):
        scene = bench_scene(args.mesh, device, texture_size)
        print(f"device={device} mesh={args.mesh} resolution={args.resolution} texture={texture_size} "
              f"(mip levels {mip_levels(texture_size, texture_size)}) views=4", flush=True)
        results = {}
        for name, rast in candidates.items():
            for mode in ("linear", "linear-mipmap-linear"):
                runs = [render_with_grads(rast, scene, args.resolution, mode, weights) for _ in range(args.repeat + 1)]
                results[(name, mode)] = runs[-1]
                times = sorted(r[-1] for r in runs[1:])
                print(f"{name:>10} {mode:>21}: forward+backward median {1000 * times[len(times) // 2]:8.1f} ms "
                      f"(min {1000 * times[0]:.1f})", flush=True)
        if "nvdiffrast" in candidates:
            for mode in ("linear", "linear-mipmap-linear"):
                figures = compare(results[("torch", mode)], results[("nvdiffrast", mode)])
                ok = meets_targets(figures)
                failed |= not ok
                print(f"agreement ({mode}): " + ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                                                         for k, v in figures.items()))
                print(f"targets ({mode}, texture {texture_size}): {'PASS' if ok else 'FAIL'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
