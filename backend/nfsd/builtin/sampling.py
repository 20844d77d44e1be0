"""Sample a loaded prior with its own schedule (DDIM + classifier-free guidance): the check that a
prior has learned its prompts, independent of any distillation."""

from __future__ import annotations

import torch

from ..prior import Prior


def ddim_scheduler(prior: Prior):
    """A ``DDIMScheduler`` on the prior's training schedule (betas recovered from ``alphas_cumprod``)."""
    from diffusers import DDIMScheduler

    a = prior.alphas_cumprod.double().cpu()
    betas = 1 - a / torch.cat([torch.ones(1, dtype=a.dtype), a[:-1]])
    return DDIMScheduler(num_train_timesteps=len(a), trained_betas=betas.float().numpy(),
                         prediction_type="epsilon", clip_sample=prior.vae is None, set_alpha_to_one=True)


@torch.no_grad()
def sample_images(prior: Prior, prompts: list[str], steps: int = 30, guidance_scale: float = 5.0,
                  seed: int = 0, negative_prompt: str = "") -> torch.Tensor:
    """Images ``[N, 3, S, S]`` float32 in [0, 1] (row 0 top), one per prompt.

    ``eps = e_neg + s (e_y - e_neg)`` with ``e_neg`` the prediction for ``negative_prompt``
    (``""``: plain classifier-free guidance). Deterministic for a given ``seed`` on the CPU.
    """
    sched = ddim_scheduler(prior)
    sched.set_timesteps(steps)
    n = len(prompts)
    emb = prior.embed(list(prompts) + [negative_prompt] * n)
    g = torch.Generator().manual_seed(seed)
    size = prior.unet.config.sample_size
    channels = prior.unet.config.in_channels
    x = torch.randn(n, channels, size, size, generator=g).to(prior.device, prior.dtype)
    for t in sched.timesteps:
        tt = torch.full((2 * n,), int(t), device=prior.device, dtype=torch.long)
        e_y, e_neg = prior.predict_eps(torch.cat([x, x]), tt, emb).chunk(2)
        eps = e_neg + guidance_scale * (e_y - e_neg)
        x = sched.step(eps, t, x).prev_sample
    return prior.decode(x)
