"""The distillation rules: pure functions of the model's predictions (docs/ARCHITECTURE.md, "Distillation rules").

Every rule takes the noise predictions of ONE batched UNet call (``predict``) and returns the
latent-space gradient ``g`` (``[B, C, h, w]``, no autograd history); ``distillation_loss`` turns it
into a loss whose gradient with respect to the latents is exactly ``g / B``. ``rule_inputs`` says
which predictions a rule reads, so the call batches only those: NFSD reads the render's ``z_t`` with
``[prompt + view, negative prompt, ""]`` (3 per view); SDS and CSD ``[prompt + view, ""]`` (2; CSD
3 with a negative weight); DDS (an edit) also reads the render of the original texture ``z_ref_t``
with ``[source prompt + view, ""]``: 4 per view.

Guidance scale ``s`` follows the diffusers convention ``e_0 + s (e_y - e_0)`` (not threestudio's s+1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import ConfigError

NFSD_NEGATIVE_PROMPT = (
    "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, low-resolution, gloomy"
)
# The t < 200 switch of NFSD is defined on a 1000-step schedule; scaled for others.
NFSD_SWITCH_FRACTION = 200 / 1000


@dataclass(frozen=True)
class Predictions:
    """Noise predictions of one batched UNet call and what they were computed from.

    Attributes:
        e_y:   ``[B, C, h, w]`` conditioned on the prompt (with its view word).
        e_neg: ``[B, C, h, w]`` conditioned on the negative prompt; None when the rule does not read it.
        e_0:   ``[B, C, h, w]`` unconditional (empty prompt).
        eps:   ``[B, C, h, w]`` the noise that was added.
        t:     ``[B]`` long, timestep index per view.
        alphas_cumprod: ``[T]`` float32, the schedule (``T`` train timesteps).
        e_ref_y: ``[B, C, h, w]`` (DDS only) on ``z_ref_t``, the ORIGINAL texture's render noised
            with the same ``eps`` and ``t``, conditioned on the source prompt (with its view word).
        e_ref_0: ``[B, C, h, w]`` (DDS only) on ``z_ref_t``, unconditional.
    """

    e_y: torch.Tensor
    e_neg: torch.Tensor | None
    e_0: torch.Tensor
    eps: torch.Tensor
    t: torch.Tensor
    alphas_cumprod: torch.Tensor
    e_ref_y: torch.Tensor | None = None
    e_ref_0: torch.Tensor | None = None

    def weight(self) -> torch.Tensor:
        """``w(t) = 1 - a_t`` shaped ``[B, 1, 1, 1]``."""
        return (1.0 - self.alphas_cumprod[self.t]).view(-1, 1, 1, 1)


def nfsd_gradient(p: Predictions, scale: float = 7.5) -> torch.Tensor:
    """Noise-Free Score Distillation (Katzir et al. 2024).

    ``d_C = e_y - e_0``;  ``d_D = e_0`` if ``t < 200`` (per view, scaled to the schedule) else
    ``e_0 - e_neg``;  ``g = w(t) (d_D + s d_C)``.
    """
    switch = NFSD_SWITCH_FRACTION * p.alphas_cumprod.shape[0]
    small_t = (p.t < switch).view(-1, 1, 1, 1)
    d_c = p.e_y - p.e_0
    d_d = torch.where(small_t, p.e_0, p.e_0 - p.e_neg)
    return p.weight().to(d_c.dtype) * (d_d + scale * d_c)


def sds_gradient(p: Predictions, scale: float = 100.0) -> torch.Tensor:
    """Score Distillation Sampling: ``g = w(t) (e_0 + s (e_y - e_0) - eps)``."""
    guided = p.e_0 + scale * (p.e_y - p.e_0)
    return p.weight().to(guided.dtype) * (guided - p.eps)


def csd_gradient(p: Predictions, scale: float = 7.5, negative_weight: float = 0.0) -> torch.Tensor:
    """Classifier Score Distillation (Yu et al. 2023): ``g = w(t) (s (e_y - e_0) - s_neg (e_neg - e_0))``.

    ``s_neg = negative_weight``; at 0 (the default) ``e_neg`` is not read, so the UNet call is batch 2.
    """
    d_c = p.e_y - p.e_0
    g = scale * d_c
    if negative_weight:
        g = g - negative_weight * (p.e_neg - p.e_0)
    return p.weight().to(d_c.dtype) * g


def dds_gradient(p: Predictions, scale: float = 7.5) -> torch.Tensor:
    """Delta Denoising Score (Hertz et al. 2023), for editing an existing texture.

    ``cfg(z; y) = e_0 + s (e_y - e_0)``;
    ``g = w(t) (cfg(z_t; y_target) - cfg(z_ref_t; y_source))`` where ``z_ref_t`` is the original
    texture's render, same camera, ``t`` and ``eps``. The source branch cancels the parts of the
    score that do not depend on the prompt (noise, blur, the prior's own bias), so what is left
    moves only what the prompts disagree on. No ``eps`` and no ``e_neg``.
    """
    if p.e_ref_y is None or p.e_ref_0 is None:
        raise ValueError("dds_gradient needs e_ref_y and e_ref_0 (predictions on the original render)")
    target = p.e_0 + scale * (p.e_y - p.e_0)
    source = p.e_ref_0 + scale * (p.e_ref_y - p.e_ref_0)
    return p.weight().to(target.dtype) * (target - source)


RULES: dict[str, Callable[[Predictions, float], torch.Tensor]] = {
    "nfsd": nfsd_gradient,
    "sds": sds_gradient,
    "csd": csd_gradient,
    "dds": dds_gradient,
}
DEFAULT_SCALES = {"nfsd": 7.5, "sds": 100.0, "csd": 7.5, "dds": 7.5}
# Rules that edit an existing texture: they need it (init texture) and the prompt it was made from.
EDIT_MODES = ("dds",)


def rule_inputs(mode: str, negative_weight: float = 0.0) -> tuple[tuple[str, str], ...]:
    """The predictions rule ``mode`` reads, in the order of the batched UNet call: pairs (latent,
    embedding), latent ``"z"`` (the render) or ``"ref"`` (the original texture's render), embedding
    ``"y"`` (prompt + view), ``"neg"``, ``"0"`` (empty) or ``"src"`` (source prompt + view)."""
    if mode == "dds":
        return (("z", "y"), ("z", "0"), ("ref", "src"), ("ref", "0"))
    if needs_negative(mode, negative_weight):
        return (("z", "y"), ("z", "neg"), ("z", "0"))
    return (("z", "y"), ("z", "0"))


def needs_negative(mode: str, negative_weight: float = 0.0) -> bool:
    """Whether the rule reads ``e_neg``: NFSD always; CSD only with a negative weight; SDS never.
    When False the engine leaves the negative prompt out of the UNet batch (2 per view, not 3)."""
    return mode == "nfsd" or (mode == "csd" and bool(negative_weight))


def get_rule(mode: str) -> Callable[[Predictions, float], torch.Tensor]:
    """The rule called ``mode`` (``nfsd``, ``sds``, ``csd`` or ``dds``)."""
    try:
        return RULES[mode]
    except KeyError:
        raise ConfigError(f"unknown mode {mode!r}: choose one of {', '.join(RULES)}") from None


def predict(prior, mode: str, latents: dict, embeddings: dict, t: torch.Tensor, eps: torch.Tensor,
            negative_weight: float = 0.0) -> Predictions:
    """The ONE batched UNet call a rule needs: ``prior.predict_eps`` on the pairs ``rule_inputs``.

    Args:
        prior: a ``nfsd.priors.prior.Prior``.
        latents: ``{"z": z_t, "ref": z_ref_t}`` noised latents ``[B, C, h, w]`` ("ref" for edits only).
        embeddings: ``{"y", "neg", "0", "src"}`` -> per-view embeddings (those the rule reads), each
            with a leading batch dimension ``B``; ``torch.cat`` joins them (same text length).
        t: ``[B]`` long timesteps; eps: the noise that was added.
    """
    inputs = rule_inputs(mode, negative_weight)
    e = prior.predict_eps(torch.cat([latents[lat] for lat, _ in inputs]), torch.cat([t] * len(inputs)),
                          torch.cat([embeddings[key] for _, key in inputs]))
    p = dict(zip(inputs, e.chunk(len(inputs))))
    return Predictions(p[("z", "y")], p.get(("z", "neg")), p[("z", "0")], eps, t, prior.alphas_cumprod,
                       p.get(("ref", "src")), p.get(("ref", "0")))


def distillation_loss(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``0.5 * ||z - (z - g).detach()||^2 / B``: its gradient w.r.t. ``z`` is ``g / B``.

    ``g`` is cleaned with ``nan_to_num`` first so a single bad prediction cannot poison the texture.
    The loss is computed in float32 whatever the dtype of ``z``.
    """
    g = torch.nan_to_num(g.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    zf = z.float()
    target = (zf - g).detach()
    return 0.5 * ((zf - target) ** 2).sum() / z.shape[0]
