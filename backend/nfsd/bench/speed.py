"""``nfsd bench speed``: time the NFSD step on Stable-Diffusion-shaped random models.

    nfsd bench speed --device cuda --arch sd15 --render-size 512 --batch 1,4 --texture-size 1024,2048
    nfsd bench speed --arch tiny --render-size 64 --batch 1,2 --texture-size 256   # the CPU smoke
    nfsd bench speed --device cuda --arch sdxl --render-size 512 --encoder tiny     # TAESDXL-shaped encoder

For each (batch, texture size) it runs warm-up plus timed steps of the real engine (every step
synchronized so the time is the step's own), then, in the same run, a naive baseline step: one UNet
call per embedding (three calls), float32, the prompt embeddings recomputed every step. It prints
per-step median/min/max, steps per second, peak GPU memory, the estimated wall time of a default
job, and the speed-up of the engine over the baseline. Weights are random (no download): the
shapes and FLOPs are the real model's. ``--encoder tiny`` puts a random AutoencoderTiny of TAESD's
shape (TAESDXL's for SDXL: the same layout) on the engine's gradient path; the baseline keeps the
full VAE, so the speed-up then includes the encoder's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from ..distill import guidance
from ..render.cameras import CameraConfig, sample_cameras
from ..distill.engine import TextureJob
from ..distill.optimize import resolve_device, view_prompt
from ..settings import TextureConfig
from ..geometry.builtin_meshes import builtin_mesh
from ..geometry.unwrap import ensure_uvs
from ..geometry.mesh import unit_sphere_transform
from ..render.renderer import get_rasterizer, random_lighting, render_views
from ..distill.texture import make_texture
from ..priors.tiny import build_random_prior


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_engine(mesh, prior, config: TextureConfig, warmup: int, steps: int) -> list[float]:
    """Per-step seconds of the engine (``progress_every=1`` so every step ends with a sync)."""
    stamps: list[float] = []
    cfg = TextureConfig(**{**config.to_dict(), "steps": warmup + steps, "progress_every": 1})

    def on_progress(p):
        if p.phase == "optimizing":
            stamps.append(time.perf_counter())

    TextureJob(mesh, cfg, prior=prior).run(on_progress)
    return list(np.diff(stamps[warmup - 1:])) if warmup > 0 else list(np.diff(stamps))


def time_naive(mesh, prior, config: TextureConfig, warmup: int, steps: int) -> list[float]:
    """Per-step seconds of the naive baseline: three UNet calls, embeddings recomputed each step."""
    device = prior.device
    mesh = ensure_uvs(mesh)
    transform = unit_sphere_transform(mesh.world_positions())
    base = torch.from_numpy(transform.apply(mesh.world_positions()).astype(np.float32)).to(device)
    tri = torch.from_numpy(mesh.triangles.astype(np.int32)).to(device)
    uvs = torch.from_numpy(mesh.uvs.astype(np.float32)).to(device)
    rasterizer = get_rasterizer(config.renderer, device)
    texture = make_texture(config.parametrization, config.texture_size, surface=(base, tri, uvs)).to(device)
    opt = torch.optim.Adam(texture.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        cams = sample_cameras(config.batch, gen, CameraConfig())
        light = random_lighting(config.batch, gen, eye=cams.eye).to(device)
        out = render_views(rasterizer, base, tri, uvs, texture(), cams.to(device), config.render_size, light)
        z = prior.encode(out.image)
        t = torch.randint(20, 980, (config.batch,), generator=gen).to(device)
        noise = torch.randn(z.shape, generator=gen).to(device, z.dtype)
        with torch.no_grad():
            z_t = prior.add_noise(z.detach(), noise, t)
            e_y = torch.cat([prior.predict_eps(z_t[b:b + 1], t[b:b + 1], prior.embed([view_prompt(config.prompt, w)]))
                             for b, w in enumerate(cams.view_words)])
            e_neg = prior.predict_eps(z_t, t, prior.embed([config.negative_prompt] * config.batch))
            e_0 = prior.predict_eps(z_t, t, prior.embed([""] * config.batch))
            g = guidance.nfsd_gradient(guidance.Predictions(e_y, e_neg, e_0, noise, t, prior.alphas_cumprod))
        guidance.distillation_loss(z, g).backward()
        opt.step()
        opt.zero_grad()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _random_tiny_encoder(arch: str) -> str:
    """A folder with a random AutoencoderTiny for ``arch``: TAESD's shape for real architectures
    (TAESDXL has the same layout), the tiny test model's otherwise."""
    from diffusers import AutoencoderTiny

    from ..priors.tiny import TINY_AUTOENCODER

    folder = tempfile.mkdtemp(prefix="nfsd-bench-taesd-")
    torch.manual_seed(0)
    (AutoencoderTiny(**TINY_AUTOENCODER) if arch.startswith("tiny") else AutoencoderTiny()).save_pretrained(folder)
    return folder


def _fmt_ms(xs):
    return f"{1000 * statistics.median(xs):8.1f} {1000 * min(xs):8.1f} {1000 * max(xs):8.1f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="nfsd bench speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--arch", choices=("tiny", "tiny-sdxl", "sd15", "sd21", "sdxl"), default="tiny")
    p.add_argument("--render-size", type=int, default=None, help="default: 512 (64 for tiny)")
    p.add_argument("--batch", default="1,4", help="comma-separated batch sizes")
    p.add_argument("--texture-size", default="1024", help="comma-separated texture sizes")
    p.add_argument("--offsets", action="store_true")
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default=None, help="default: fp16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet and VAE encoder")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--baseline-steps", type=int, default=None, help="timed naive steps (default: --steps)")
    p.add_argument("--job-steps", type=int, default=TextureConfig().steps, help="steps of the default job to estimate")
    p.add_argument("--mesh", default="default", help="built-in mesh name")
    p.add_argument("--encoder", choices=("full", "tiny"), default="full",
                   help="the engine's encoder on the gradient path (tiny: a random TAESD-shaped AutoencoderTiny)")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, None: None}[args.dtype]
    render_size = args.render_size or (64 if args.arch.startswith("tiny") else 512)
    batches = [int(b) for b in args.batch.split(",")]
    tex_sizes = [int(s) for s in args.texture_size.split(",")]
    mesh = builtin_mesh(args.mesh)

    t0 = time.perf_counter()
    prior = build_random_prior(args.arch, device, dtype)
    fp32 = prior if prior.dtype == torch.float32 else build_random_prior(args.arch, device, torch.float32)
    tiny_encoder = _random_tiny_encoder(args.arch) if args.encoder == "tiny" else None
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}) arch={args.arch} "
          f"dtype={str(prior.dtype).replace('torch.', '')} render={render_size} encoder={args.encoder} compile={args.compile} "
          f"mesh={args.mesh} ({mesh.num_faces} faces) models built in {time.perf_counter() - t0:.1f}s")
    header = (f"{'batch':>5} {'tex':>5} | {'median':>8} {'min':>8} {'max':>8} ms | {'steps/s':>7} | {'peak GB':>7} | "
              f"{'job est s':>9} | {'naive ms':>8} | {'speed-up':>8}")
    print(header)
    print("-" * len(header))
    rows = []
    for batch in batches:
        for tex in tex_sizes:
            cfg = TextureConfig(prompt="red and white stripes", batch=batch, texture_size=tex, render_size=render_size,
                                offsets=args.offsets, device=str(device), compile=args.compile,
                                encoder=args.encoder, tiny_encoder=tiny_encoder)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            fast = time_engine(mesh, prior, cfg, args.warmup, args.steps)
            peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
            naive = time_naive(mesh, fp32, cfg, min(args.warmup, 2), args.baseline_steps or args.steps)
            med = statistics.median(fast)
            job = med * args.job_steps
            rows.append((batch, tex, med, statistics.median(naive)))
            print(f"{batch:5d} {tex:5d} | {_fmt_ms(fast)}    | {1 / med:7.2f} | {peak:7.2f} | {job:9.1f} | "
                  f"{1000 * statistics.median(naive):8.1f} | {statistics.median(naive) / med:7.2f}x", flush=True)
    print(f"job estimate = median step x {args.job_steps} steps (the default job), model load and output writing excluded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
