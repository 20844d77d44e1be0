"""Train the built-in prior's tiny autoencoder: 32x32 RGB <-> 8x8x4 latents, like SD's VAE at 1/8 the size.

    python -m nfsd.builtin.training.autoencoder --out /tmp/vae          # the shipped first stage: 14 min, one CPU thread

A diffusers ``AutoencoderKL`` (3 levels of 32/64/64 channels, 4 latent channels, factor 4) trained
on ``nfsd.builtin.training.dataset`` images with an L1 + MSE reconstruction loss and SD's tiny KL weight,
so the latent is an almost-deterministic code, like Stable Diffusion's. ``scaling_factor`` is set
to ``1 / std`` of the latents over fresh dataset images, as SD's 0.18215 was, so the diffusion
model sees unit-variance latents.

Why a latent model at all: a 1 M-parameter pixel-space UNet trained for 20 CPU-minutes drew
speckled colour soup (its x0 estimate at mid noise levels kept the noise). The decoder turns the
pattern's few degrees of freedom (phase, period, orientation, colours) into crisp pixels, and the
diffusion model only has to learn them on an 8x8 grid. The engine then distils through a VAE
encoder exactly as it does with Stable Diffusion.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import vocabulary as vocab
from . import dataset as ds


@dataclass
class AutoencoderTrainConfig:
    """Shape and optimisation settings (defaults: the shipped autoencoder's first stage)."""

    steps: int = 1500
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 100
    kl_weight: float = 1e-6
    seed: int = 0
    size: int = 32
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    latent_channels: int = 4
    threads: int = 1
    resume: str | None = None  # a trained autoencoder folder to continue from
    decoder_only: bool = False  # train only the decoder: the latent space (and a prior trained on it) stays valid


def build_autoencoder(cfg: AutoencoderTrainConfig):
    from diffusers import AutoencoderKL

    torch.manual_seed(cfg.seed)
    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=1, latent_channels=cfg.latent_channels, norm_num_groups=16, sample_size=cfg.size,
    )


@torch.no_grad()
def latent_std(vae, n: int = 512, seed: int = 123, size: int = 32) -> float:
    """Standard deviation of the (unscaled) latent means over ``n`` fresh dataset images."""
    g = torch.Generator().manual_seed(seed)
    images, _ = ds.training_batch(n, g, ds.DatasetConfig(size=size))
    z = vae.encode(images * 2 - 1).latent_dist.mean
    return z.std().item()


@torch.no_grad()
def reconstruction_report(vae, n: int = 512, seed: int = 1000, size: int = 32) -> dict:
    """PSNR of reconstructions of fresh dataset images and the classifier's accuracy on them."""
    from .classifier import load_classifier, prompt_matches

    g = torch.Generator().manual_seed(seed)
    specs = [vocab.SPECS[i] for i in torch.randint(0, len(vocab.SPECS), (n,), generator=g).tolist()]
    images = ds.sample_batch(specs, g, ds.DatasetConfig(size=size))
    rec = ((vae.decode(vae.encode(images * 2 - 1).latent_dist.mean).sample + 1) / 2).clamp(0, 1)
    mse = F.mse_loss(rec, images).item()
    clf = load_classifier()
    prompts = [s.prompt for s in specs]
    return {"psnr_db": round(10 * math.log10(1 / max(mse, 1e-12)), 2),
            "classifier_accuracy_reconstructed": round(prompt_matches(clf, rec, prompts).float().mean().item(), 4),
            "classifier_accuracy_original": round(prompt_matches(clf, images, prompts).float().mean().item(), 4)}


def warmup_cosine(opt, warmup: int, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 5% of the rate at ``steps``."""

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        p = (step - warmup) / max(1, steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train(cfg: AutoencoderTrainConfig, out: Path, log=print) -> dict:
    """Train, set ``scaling_factor``, save the diffusers folder to ``out``; returns a summary."""
    torch.set_num_threads(cfg.threads)
    if cfg.resume:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(cfg.resume).float()
    else:
        vae = build_autoencoder(cfg)
    vae.train()
    if cfg.decoder_only:
        vae.encoder.requires_grad_(False).eval()
        vae.quant_conv.requires_grad_(False)
    params = [p for p in vae.parameters() if p.requires_grad]
    log(f"autoencoder {sum(p.numel() for p in vae.parameters())/1e6:.2f} M params, training {sum(p.numel() for p in params)/1e6:.2f} M")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)

    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    g = torch.Generator().manual_seed(cfg.seed)
    data_cfg = ds.DatasetConfig(size=cfg.size)
    t0, running = time.time(), None
    for step in range(cfg.steps):
        images, _ = ds.training_batch(cfg.batch, g, data_cfg)  # includes the degraded "negative" images
        x = images * 2 - 1
        with torch.set_grad_enabled(not cfg.decoder_only):
            post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + cfg.kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0 or step == cfg.steps - 1:
            el = time.time() - t0
            log(f"step {step}/{cfg.steps} loss {running:.4f} {el:.0f}s eta {el / (step + 1) * (cfg.steps - step - 1):.0f}s")
    vae.eval()
    std = latent_std(vae, size=cfg.size)
    if not cfg.decoder_only:  # a frozen encoder keeps the scale a prior was trained with
        vae.register_to_config(scaling_factor=1.0 / std)
    report = reconstruction_report(vae, size=cfg.size)
    info = {"config": asdict(cfg), "final_loss_ema": running, "wall_seconds": round(time.time() - t0, 1),
            "latent_std": std, **report, "torch": torch.__version__}
    out = Path(out)
    vae.save_pretrained(out, safe_serialization=True)
    (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    log(f"saved {out}: {report}, scaling_factor {vae.config.scaling_factor:.4f}")
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nfsd.builtin.training.autoencoder", description=__doc__.split("\n\n")[0])
    d = AutoencoderTrainConfig()
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--threads", type=int, default=d.threads)
    parser.add_argument("--warmup", type=int, default=d.warmup)
    parser.add_argument("--resume", default=None, help="continue from a trained autoencoder folder")
    parser.add_argument("--decoder-only", action="store_true",
                        help="train only the decoder (keeps the latent space a prior was trained on)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (the prior's vae/)")
    args = parser.parse_args(argv)
    cfg = AutoencoderTrainConfig(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, threads=args.threads,
                                 warmup=args.warmup, resume=args.resume, decoder_only=args.decoder_only)
    train(cfg, args.out, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
