"""Sample a loaded prior with its own schedule (DDIM + classifier-free guidance): the check that a
prior has learned its prompts, independent of any distillation."""

from __future__ import annotations

import torch

from ...priors.prior import Prior


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


def eval_prompts(n: int = 64, seed: int = 0) -> list[str]:
    """``n`` dataset prompts in a seeded random order (the set the sample accuracy is measured on)."""
    from .. import vocabulary as vocab

    order = torch.randperm(len(vocab.SPECS), generator=torch.Generator().manual_seed(seed))[:n]
    return [vocab.SPECS[i].prompt for i in order]


def sample_accuracy(prior: Prior, prompts: list[str], steps: int = 25, guidance_scale: float = 3.0,
                    seed: int = 0) -> dict:
    """Sample one image per prompt and score it with the built-in classifier: the share whose
    most likely class is the prompt's (``accuracy``), whose pattern is right, whose colours are."""
    from .classifier import CLASS_KEYS, class_log_probs, class_of, load_classifier

    images = sample_images(prior, prompts, steps=steps, guidance_scale=guidance_scale, seed=seed)
    got = [CLASS_KEYS[i] for i in class_log_probs(load_classifier(), images).argmax(1).tolist()]
    want = [CLASS_KEYS[class_of(p)] for p in prompts]
    n = len(prompts)
    return {"accuracy": sum(a == b for a, b in zip(got, want)) / n,
            "pattern": sum(a[0] == b[0] for a, b in zip(got, want)) / n,
            "colours": sum(a[1] == b[1] for a, b in zip(got, want)) / n, "n": n, "images": images}


def main(argv=None) -> int:
    import argparse

    from ...priors.prior import load_prior

    parser = argparse.ArgumentParser(prog="python -m nfsd.builtin.training.sampling",
                                     description="Sample accuracy of a prior trained on the built-in dataset.")
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, nargs="+", default=[3.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    prior = load_prior(args.model, "cpu")
    for s in args.guidance:
        r = sample_accuracy(prior, eval_prompts(args.prompts), args.steps, s, args.seed)
        print(f"{args.model} guidance {s}: accuracy {r['accuracy']:.3f} (pattern {r['pattern']:.3f}, "
              f"colours {r['colours']:.3f}) on {r['n']} prompts, DDIM {args.steps} steps, seed {args.seed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
