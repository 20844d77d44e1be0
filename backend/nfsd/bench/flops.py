"""``nfsd bench flops``: where an NFSD step's FLOPs go, with the full VAE or the tiny encoder on the gradient path.

    nfsd bench flops                      # the FLOP table (meta tensors: no weights, a second or two)
    nfsd bench flops --time-size 128      # + CPU timings of both encoders side by side (real size, random weights)

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on networks built on the meta
device from the real configurations (SD-1.5, SDXL; written in ``nfsd.priors.tiny`` / here, nothing is
downloaded). Per step and per view: one UNet call at batch 3 (NFSD: prompt, negative, empty prompt)
or batch 2 (SDS, CSD), and the encoder's forward + backward to the render (weights frozen, as in the
engine: the backward computes the input gradient only). Text encoders run once per job, not per step.

The timing part runs the real-size encoders (random weights, float32, CPU) forward + backward at a
small render size, full and tiny alternately in the same run, and prints the ratio; and a few
engine steps of the tiny test model with ``--encoder full`` and ``--encoder tiny``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ..priors.families import SD15_UNET, SD_VAE, SDXL_UNET, SDXL_VAE  # the real architectures

# TAESD and TAESDXL are AutoencoderTiny()'s defaults.
SETUPS = {
    # name: (unet config, vae config, render size, text tokens x width, pooled width or None)
    "SD-1.5 @512": (SD15_UNET, SD_VAE, 512, (77, 768), None),
    "SDXL @1024": (SDXL_UNET, SDXL_VAE, 1024, (77, 2048), 1280),
    "SDXL @512": (SDXL_UNET, SDXL_VAE, 512, (77, 2048), 1280),
}


def _flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def unet_flops(unet, size: int, batch: int, text: tuple[int, int], pooled: int | None, device="meta") -> int:
    """FLOPs of one UNet call on ``batch`` latents of a ``size``-pixel render (latent ``size / 8``)."""
    z = torch.randn(batch, 4, size // 8, size // 8, device=device)
    t = torch.full((batch,), 500, device=device)
    emb = torch.randn(batch, *text, device=device)
    extra = {}
    if pooled:
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, pooled, device=device),
                                      "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * batch,
                                                               device=device, dtype=torch.float32)}
    with torch.no_grad():
        return _flops(lambda: unet(z, t, encoder_hidden_states=emb, **extra))


def encode_backward(vae, images: torch.Tensor) -> None:
    """Forward + backward of the encoder to ``images`` (what one step pays)."""
    out = vae.encode(images * 2 - 1)
    z = out.latents if hasattr(out, "latents") else out.latent_dist.sample()
    z.sum().backward()


def encoder_flops(vae, size: int, device="meta") -> int:
    images = torch.rand(1, 3, size, size, device=device, requires_grad=True)
    return _flops(lambda: encode_backward(vae, images))


def build_networks(unet_cfg: dict, vae_cfg: dict, device="meta"):
    """UNet, full VAE and tiny autoencoder of one family, frozen (``device="meta"``: shapes only)."""
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel

    with torch.device(device):
        nets = UNet2DConditionModel(**unet_cfg), AutoencoderKL(**vae_cfg), AutoencoderTiny()
    for net in nets:
        net.requires_grad_(False)
    return nets


def flop_table(setups=tuple(SETUPS)) -> list[dict]:
    """One row per setup (names of ``SETUPS``): TFLOPs of the UNet (batch 3 / 2) and of each encoder's
    forward + backward."""
    rows = []
    built = {}
    for name in setups:
        unet_cfg, vae_cfg, size, text, pooled = SETUPS[name]
        key = id(unet_cfg)
        if key not in built:
            built[key] = build_networks(unet_cfg, vae_cfg)
        unet, vae, tiny = built[key]
        rows.append({
            "setup": name,
            "unet_b3": unet_flops(unet, size, 3, text, pooled) / 1e12,
            "unet_b2": unet_flops(unet, size, 2, text, pooled) / 1e12,
            "full": encoder_flops(vae, size) / 1e12,
            "tiny": encoder_flops(tiny, size) / 1e12,
        })
    return rows


def print_flop_table(rows: list[dict]) -> None:
    print("TFLOP per step and view (FlopCounterMode; encoder = forward + backward to the render, weights frozen)")
    head = (f"{'setup':<12} | {'UNet b3':>7} {'UNet b2':>7} | {'VAE enc':>7} {'tiny enc':>8} | "
            f"{'NFSD full':>9} {'NFSD tiny':>9} {'x':>5} | {'SDS/CSD full':>12} {'tiny':>6} {'x':>5}")
    print(head)
    print("-" * len(head))
    for r in rows:
        nf, nt = r["unet_b3"] + r["full"], r["unet_b3"] + r["tiny"]
        sf, st = r["unet_b2"] + r["full"], r["unet_b2"] + r["tiny"]
        print(f"{r['setup']:<12} | {r['unet_b3']:7.2f} {r['unet_b2']:7.2f} | {r['full']:7.2f} {r['tiny']:8.3f} | "
              f"{nf:9.2f} {nt:9.2f} {nf / nt:4.2f}x | {sf:12.2f} {st:6.2f} {sf / st:4.2f}x")


def time_encoders(size: int, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per forward + backward of the real-size SD VAE encoder and TAESD at ``size`` px (CPU,
    float32, random weights), alternated so both see the same machine load."""
    _unet, vae, tiny = build_networks(SD15_UNET, SD_VAE, device="cpu")
    vae.decoder = tiny.decoder = None
    full_s, tiny_s = [], []
    for i in range(repeats + 1):
        for net, out in ((vae, full_s), (tiny, tiny_s)):
            images = torch.rand(1, 3, size, size, requires_grad=True)
            t0 = time.perf_counter()
            encode_backward(net, images)
            if i > 0:  # the first round warms up
                out.append(time.perf_counter() - t0)
    return full_s, tiny_s


def time_tiny_engine(steps: int) -> tuple[list[float], list[float]]:
    """Per-step seconds of the engine on the tiny test model, ``--encoder full`` vs ``tiny``."""
    import tempfile
    from pathlib import Path

    from .speed import time_engine
    from ..distill.config import TextureConfig
    from ..geometry.builtin_meshes import builtin_mesh
    from ..priors.prior import load_prior
    from ..priors.tiny import build_tiny_autoencoder, build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_model(Path(tmp) / "tiny")
        build_tiny_autoencoder(folder / "vae_tiny")
        prior = load_prior(str(folder), "cpu", torch.float32)
        mesh = builtin_mesh("default")
        times = {}
        for encoder in ("full", "tiny"):
            cfg = TextureConfig(prompt="red and white stripes", model=str(folder), render_size=64, texture_size=256,
                                device="cpu", encoder=encoder)
            times[encoder] = time_engine(mesh, prior, cfg, warmup=2, steps=steps)
    return times["full"], times["tiny"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="nfsd bench flops", description=__doc__.split("\n\n")[0])
    p.add_argument("--time-size", type=int, default=0,
                   help="also time the real-size SD encoders (full vs tiny) at this render size on the CPU (0: skip)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds of each encoder")
    p.add_argument("--engine-steps", type=int, default=10, help="timed engine steps per encoder on the tiny model")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for the timings")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    print_flop_table(flop_table())
    if args.time_size:
        full_s, tiny_s = time_encoders(args.time_size, args.repeats)
        f, t = statistics.median(full_s), statistics.median(tiny_s)
        print(f"\nCPU, {args.threads} thread(s), SD-1.5 encoders at {args.time_size}px, forward + backward, "
              f"median of {args.repeats}: VAE {1000 * f:.0f} ms, tiny {1000 * t:.0f} ms, ratio {f / t:.1f}x")
    if args.engine_steps:
        full_s, tiny_s = time_tiny_engine(args.engine_steps)
        f, t = statistics.median(full_s), statistics.median(tiny_s)
        print(f"CPU, tiny test model, engine step (render 64, NFSD, batch 1), median of {args.engine_steps}: "
              f"--encoder full {1000 * f:.1f} ms, --encoder tiny {1000 * t:.1f} ms, ratio {f / t:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
