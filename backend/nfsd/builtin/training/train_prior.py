"""Train the built-in prior: a small latent text-to-texture diffusion model, Stable Diffusion in miniature.

    python -m nfsd.builtin.training.train_prior --vae <autoencoder> --steps 200 --out /tmp/prior   # a quick try

The shipped weights came from these seeded commands on the shared 2-core CPU. First generation
(32 px, about two hours; the decoder fine-tunes ran beside the prior's training, one thread each):

    python -m nfsd.builtin.training.autoencoder --out /tmp/vae                                   # 1500 steps, 14 min
    python -m nfsd.builtin.training.train_prior --vae /tmp/vae --save-every 1000 --out /tmp/p1   # 8000 steps, 48 min
    python -m nfsd.builtin.training.autoencoder --resume /tmp/vae --decoder-only --steps 2500 --lr 5e-4 \
        --warmup 50 --seed 1 --out /tmp/vae2                                            # 19 min
    python -m nfsd.builtin.training.autoencoder --resume /tmp/vae2 --decoder-only --steps 3000 --lr 3e-4 \
        --warmup 50 --seed 2 --out /tmp/vae3                                            # 22 min
    # /tmp/vae3 replaces /tmp/p1/vae (same encoder, so the same latent space), then:
    python -m nfsd.builtin.training.train_prior --resume /tmp/p1 --steps 3000 --lr 3e-4 --warmup 20 --seed 3 \
        --threads 2 --out /tmp/p2                                                       # 13 min, idle CPU
    python -m nfsd.builtin.training.train_prior --resume /tmp/p2 --steps 6000 --lr 3e-4 --warmup 20 --seed 4 \
        --threads 2 --out /tmp/p32                                                      # 26 min, idle CPU

Second generation (64 px renders, 16x16 latents; the same autoencoder, which is convolutional and
reconstructs 64 px images at 27.2 dB against 23.5 at 32): the 32 px prior continued at 64 px on
half dataset images, half views of 48 generated meshes from the engine's cameras
(``nfsd.builtin.training.scenes``, 2304 views baked in 100 s), beside the classifier's retraining:

    python -m nfsd.builtin.training.train_prior --resume /tmp/p32 --size 64 --scene-meshes 48 --views-per-mesh 48 \
        --steps 2600 --lr 3e-4 --warmup 50 --seed 5 --save-every 500 --out weights/prior   # 65 min, 1 thread

Third stage, on a lent GPU (an H200; ``scripts/gpu_train_prior.sh``, two device calls, 12-13 worker
processes drawing the batches, the learning rate decaying to a time limit; each call's exact command
is in that script):

    # three candidates side by side for 400 s each: A the shipped prior continued (batch 256, lr 3e-4,
    # seed 6: 1023 steps), B (64,128) and C (48,96,96) from scratch (batch 128, lr 1e-3: 2950 / 2445 steps)
    bash scripts/gpu_train_prior.sh                          # TRAIN_SECONDS=400, 96 meshes x 32 views
    # A (64 prompts, seed 0: 0.672; B 0.562, C 0.422, the CPU-trained prior 0.531) became the shipped
    # prior, then continued alone for 220 s (batch 256, lr 2e-4, seed 9: 1661 steps):
    bash scripts/gpu_train_prior.sh continue                 # TRAIN_SECONDS=220

Sample accuracy (``python -m nfsd.builtin.training.sampling --model DIR``: DDIM 25 steps, guidance 3, 64
prompts, the shipped classifier) along the way:
0.30 after 1000 steps, 0.44 after 3000, 0.47 after 5000, 0.50 after 8000, 0.56 after 3000 more, 0.625
after the last 6000 (on 148 of the 176 prompts, seeds 1 / 2: 0.635 / 0.628 before it, 0.655 / 0.642 after).
The decoder fine-tunes raised the classifier's accuracy on reconstructions from 0.74 to 0.81
(22.7 dB): the decoder, not the UNet, now caps what patterns can be read. At 64 px, with the 64 px
classifier (all 176 prompts, seeds 1 / 2): 0.568 / 0.580 after 1500 steps, 0.597 / 0.562 after 2600
(64 prompts, seed 0: 0.531); the 32 px prior's samples read 0.682 / 0.705 by the same classifier.
The 64 px samples carry more pattern periods and finer edges, which the classifier reads less
often; what counts is the distilled texture on meshes (BENCHMARKS.md, "Real meshes"), where 64 px
renders let a stripe on a leg be more than a pixel.

A ``UNet2DConditionModel`` on the autoencoder's latents (8x8x4 at 32 px, 16x16x4 at 64) (48/96 channels, cross-attention at
both levels, v-prediction, SD's 1000-step scaled-linear schedule) and a tiny ``CLIPTextModel`` are
trained together on ``nfsd.builtin.training.dataset`` batches drawn on the fly. Captions carry view suffixes
at random, 10% are the NFSD negative words on degraded images (so NFSD's ``e_0 - e_neg`` term points
somewhere meaningful), and 12% are empty (condition dropout for classifier-free guidance). An EMA
of the weights is what gets saved, in float16.

Why latent: the first shipped prior was a 1 M-parameter UNet on 32x32 pixels (``--channels
16,32,64`` without ``--vae``; 5800 CPU steps). Its samples were speckled colour soup, recognised by
the classifier 0.109 of the time (0.141 after 3000 more steps). With the global text embedding
(``prior_model.GLOBAL_TEXT``; kept, not measured on its own), neither a wider pixel UNet nor a cosine schedule
changed that: 0.13-0.14 after 800 steps (guidance 1.5). 1000 steps in latent space gave coherent
images with the prompt's colours and 0.30. Within one hour, the first two commands alone (the
autoencoder, then 8000 steps) reach about 0.50.

The output folder is a diffusers Stable-Diffusion-layout folder (``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``) that ``nfsd.priors.prior.load_prior`` reads like any
other model. Without ``--vae`` the UNet works on pixels (no ``vae/``), as the first design did.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from . import dataset as ds
from ..prior_model import build_models, load_vae, save_prior

WEIGHTS_DIR = Path(__file__).parents[1] / "weights"
PRIOR_DIR = WEIGHTS_DIR / "prior"


@dataclass
class PriorTrainConfig:
    """Model shape and optimisation settings (defaults: the shipped model)."""

    steps: int = 8000
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    seed: int = 0
    size: int = 32
    block_out_channels: tuple[int, ...] = (48, 96)  # the first, pixel-space prior: (16, 32, 64)
    cross_attention_dim: int = 64
    text_layers: int = 2
    max_tokens: int = 32
    threads: int = 1  # the shared 2-core machine: one thread wastes less on contention
    prediction_type: str = "v_prediction"
    beta_schedule: str = "linear"  # or "squaredcos_cap_v2" (Nichol & Dhariwal's cosine)
    global_text: bool = True  # pooled text embedding added to the time embedding (scale-shift in every ResNet)
    resume: str | None = None  # a saved prior folder to continue from (its EMA weights)
    save_every: int = 0  # also save the EMA weights every N steps (0: only at the end)
    vae: str | None = None  # a trained autoencoder folder (nfsd.builtin.training.autoencoder): a latent-space prior
    layers_per_block: int = 1
    scene_meshes: int = 0  # > 0: bake views of that many generated meshes (nfsd.builtin.training.scenes) into the data
    views_per_mesh: int = 48
    scene_fraction: float = 0.5  # share of baked mesh views in each batch
    device: str = "cpu"  # "cuda": the UNet, text encoder and autoencoder run there; batches are still drawn on CPUs
    workers: int = 0  # > 0: draw batches in that many worker processes (each seeded by seed and its index)
    time_limit: float = 0.0  # > 0: seconds; the learning-rate schedule follows max(step / steps, time / limit)


class _Batches(torch.utils.data.IterableDataset):
    """Endless ``(images, texts)`` training batches; in worker ``k`` of a DataLoader the generator is
    seeded by ``(seed, k)``, so several processes draw different, reproducible batches. Images
    travel as float16 numpy arrays, pickled through the loader's pipe: tensors would go through
    shared memory, which containers often keep at 64 MB."""

    def __init__(self, cfg: PriorTrainConfig, bank):
        self.cfg, self.bank = cfg, bank

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        torch.set_num_threads(1)
        g = torch.Generator().manual_seed(self.cfg.seed * 1000 + 1 + (info.id if info else 0))
        data_cfg = ds.DatasetConfig(size=self.cfg.size, scene_fraction=self.cfg.scene_fraction)
        while True:
            images, texts = ds.training_batch(self.cfg.batch, g, data_cfg, scenes=self.bank)
            yield images.half().numpy(), texts


def _as_is(batch):
    return batch


def _batch_stream(cfg: PriorTrainConfig, bank, g: torch.Generator):
    """Training batches: drawn in this process from ``g`` (``workers=0``, as the shipped CPU runs
    did) or by ``cfg.workers`` worker processes."""
    data_cfg = ds.DatasetConfig(size=cfg.size, scene_fraction=cfg.scene_fraction)
    if cfg.workers <= 0:
        while True:
            yield ds.training_batch(cfg.batch, g, data_cfg, scenes=bank)
    loader = torch.utils.data.DataLoader(_Batches(cfg, bank), batch_size=None, num_workers=cfg.workers,
                                         collate_fn=_as_is, prefetch_factor=2, persistent_workers=True)
    for images, texts in loader:
        yield torch.from_numpy(images).float(), texts


def lr_factor(progress: float, step: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 5% at ``progress`` 1 (as
    ``warmup_cosine``, with progress measured in steps or, under a time limit, in time)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(cfg: PriorTrainConfig, out: Path = PRIOR_DIR, log=print) -> dict:
    """Train and save the prior to ``out``; returns a summary (final loss, wall time, steps)."""
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if cfg.vae is None and cfg.resume and (Path(cfg.resume) / "vae").is_dir():
        cfg = replace(cfg, vae=str(Path(cfg.resume) / "vae"))  # continuing a latent prior keeps its autoencoder
    vae = load_vae(cfg.vae)
    tokenizer, text_encoder, unet, scheduler = build_models(cfg, vae)
    previous = None
    if cfg.resume:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        unet = UNet2DConditionModel.from_pretrained(Path(cfg.resume) / "unet").float()
        text_encoder = CLIPTextModel.from_pretrained(Path(cfg.resume) / "text_encoder").float()
        info_path = Path(cfg.resume) / "training.json"
        previous = json.loads(info_path.read_text()) if info_path.is_file() else None
    if vae is not None:  # a resumed UNet may be trained at another size: its config says the new one
        unet.register_to_config(sample_size=cfg.size // 2 ** (len(vae.config.block_out_channels) - 1))
    bank = None
    if cfg.scene_meshes:
        from .scenes import bake_views, training_meshes

        t_bake = time.time()
        bank = bake_views(training_meshes(cfg.scene_meshes, seed=cfg.seed), cfg.views_per_mesh, cfg.size, seed=cfg.seed)
        log(f"baked {len(bank)} views of {cfg.scene_meshes} meshes at {cfg.size} px in {time.time() - t_bake:.0f}s")
    g = torch.Generator().manual_seed(cfg.seed)
    stream = _batch_stream(cfg, bank, g)
    batches = itertools.chain([next(stream)], stream)  # worker processes start before CUDA does
    unet, text_encoder = unet.to(device), text_encoder.to(device)
    if vae is not None:
        vae = vae.to(device)
    unet.train()
    text_encoder.train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    log(f"unet {sum(p.numel() for p in unet.parameters())/1e6:.2f} M params, "
        f"text encoder {sum(p.numel() for p in text_encoder.parameters())/1e6:.2f} M")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)

    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    alphas = scheduler.alphas_cumprod.to(device)
    ema_pairs = [(list(src.parameters()), list(dst.parameters())) for src, dst in ((unet, ema_unet), (text_encoder, ema_text))]
    t0, running, history, done = time.time(), None, [], 0
    for step in range(cfg.steps):
        progress = max(step / cfg.steps, (time.time() - t0) / cfg.time_limit if cfg.time_limit > 0 else 0.0)
        if progress >= 1.0:
            log(f"time limit reached after {step} steps")
            break
        lr = cfg.lr * lr_factor(progress, step, cfg.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        images, texts = next(batches)
        x0 = images.to(device, non_blocking=True) * 2 - 1
        if vae is not None:
            with torch.no_grad():
                post = vae.encode(x0).latent_dist
                eps = torch.randn(post.mean.shape, generator=g).to(device)
                x0 = (post.mean + post.std * eps) * vae.config.scaling_factor
        noise = torch.randn(x0.shape, generator=g).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(texts),), generator=g).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        ids = tokenizer(texts, padding="max_length", max_length=cfg.max_tokens, truncation=True,
                        return_tensors="pt").input_ids.to(device)
        emb = text_encoder(ids).last_hidden_state
        pred = unet(x_t, t, encoder_hidden_states=emb).sample
        target = noise if cfg.prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        done = step + 1
        # EMA warms up (decay grows with the step) so early weights are not frozen in.
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for src, dst in ema_pairs:
                torch._foreach_lerp_(dst, src, 1 - decay)
        if step % 25 == 0 or step == cfg.steps - 1:
            # read every 25 steps (.item() waits for the GPU): 0.6 per read ~ the former 0.98 per step
            running = loss.item() if running is None else 0.6 * running + 0.4 * loss.item()
            el = time.time() - t0
            eta = el / (step + 1) * (cfg.steps - step - 1)
            if cfg.time_limit > 0:
                eta = min(eta, cfg.time_limit - el)
            log(f"step {step}/{cfg.steps} loss {running:.4f} lr {lr:.2e} {el:.0f}s eta {eta:.0f}s")
            history.append((step, round(running, 5)))
        if cfg.save_every and step and step % cfg.save_every == 0:
            save_prior(out, tokenizer, ema_text, ema_unet, scheduler, {"config": asdict(cfg), "step": step}, vae=vae)
    wall = time.time() - t0
    ema_unet, ema_text = ema_unet.cpu(), ema_text.cpu()
    vae = vae.cpu() if vae is not None else None
    info = {"config": asdict(cfg), "final_loss_ema": running, "wall_seconds": round(wall, 1), "steps_done": done,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "loss_history": history, "torch": torch.__version__, "previous_stage": previous}
    save_prior(out, tokenizer, ema_text, ema_unet, scheduler, info, vae=vae)
    log(f"saved {out} after {wall:.0f}s, final loss {running:.4f}")
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nfsd.builtin.training.train_prior", description=__doc__.split("\n\n")[0])
    defaults = PriorTrainConfig()
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--resume", default=None, help="continue from a saved prior folder")
    parser.add_argument("--prediction-type", choices=("v_prediction", "epsilon"), default=defaults.prediction_type)
    parser.add_argument("--channels", default=",".join(map(str, defaults.block_out_channels)),
                        help="UNet block widths, comma-separated")
    parser.add_argument("--no-global-text", dest="global_text", action="store_false",
                        help="text reaches the UNet only through cross-attention (the first shipped design)")
    parser.add_argument("--save-every", type=int, default=0, help="save the EMA weights every N steps too")
    parser.add_argument("--ema-decay", type=float, default=defaults.ema_decay)
    parser.add_argument("--vae", default=None, help="a trained autoencoder folder: train a latent-space prior")
    parser.add_argument("--layers-per-block", type=int, default=defaults.layers_per_block)
    parser.add_argument("--beta-schedule", default=defaults.beta_schedule, choices=("linear", "squaredcos_cap_v2"))
    parser.add_argument("--size", type=int, default=defaults.size, help="image size in pixels (latents: size / 4)")
    parser.add_argument("--scene-meshes", type=int, default=0,
                        help="also train on views of this many generated meshes (nfsd.builtin.training.scenes)")
    parser.add_argument("--views-per-mesh", type=int, default=defaults.views_per_mesh)
    parser.add_argument("--scene-fraction", type=float, default=defaults.scene_fraction)
    parser.add_argument("--device", default=defaults.device, help="where the models train: cpu or cuda")
    parser.add_argument("--workers", type=int, default=defaults.workers,
                        help="draw batches in this many worker processes (0: in the training process)")
    parser.add_argument("--time-limit", type=float, default=defaults.time_limit,
                        help="stop after this many seconds (the learning rate decays to fit); 0: no limit")
    parser.add_argument("--out", type=Path, default=PRIOR_DIR, help=f"output folder (default {PRIOR_DIR})")
    args = parser.parse_args(argv)
    cfg = PriorTrainConfig(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, threads=args.threads,
                           warmup=args.warmup, resume=args.resume, prediction_type=args.prediction_type,
                           global_text=args.global_text, beta_schedule=args.beta_schedule, vae=args.vae,
                           layers_per_block=args.layers_per_block, ema_decay=args.ema_decay, save_every=args.save_every,
                           block_out_channels=tuple(int(c) for c in args.channels.split(",")), size=args.size,
                           scene_meshes=args.scene_meshes, views_per_mesh=args.views_per_mesh,
                           scene_fraction=args.scene_fraction, device=args.device, workers=args.workers,
                           time_limit=args.time_limit)
    train(cfg, args.out, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
