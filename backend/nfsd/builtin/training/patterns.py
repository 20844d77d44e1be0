"""The dataset's six patterns as soft two-colour masks, shared by flat images (``dataset``) and
textured renders of meshes (``scenes``); pattern ids index ``nfsd.builtin.vocabulary.PATTERNS``.
"""

from __future__ import annotations

import math

import torch


def uniform(n, lo, hi, g):
    """``[n]`` float32 drawn uniformly from ``[lo, hi)`` with ``g`` (the dataset's one source of randomness)."""
    return lo + (hi - lo) * torch.rand(n, generator=g)


def pattern_mask(pattern_ids: torch.Tensor, x: torch.Tensor, y: torch.Tensor, g: torch.Generator,
                 period_range=(0.16, 0.42), pixel: float = 1.0 / 64) -> torch.Tensor:
    """Soft two-colour masks ``[N, H, W]`` in [0, 1] (1 = second colour; dots: 1 = ground).

    ``x, y`` are ``[N, H, W]`` pattern coordinates (image width = 1); ``pixel`` sets the edge softness.
    """
    n = pattern_ids.shape[0]
    theta = uniform(n, 0, math.pi, g).view(n, 1, 1)
    period = uniform(n, *period_range, g).view(n, 1, 1)
    phase = torch.rand(n, 2, generator=g).view(n, 2, 1, 1)
    u = (x * torch.cos(theta) + y * torch.sin(theta)) / period
    v = (-x * torch.sin(theta) + y * torch.cos(theta)) / period
    edge = period / pixel  # periods -> pixels, for a one-pixel soft edge
    wave_amp = uniform(n, 0.15, 0.35, g).view(n, 1, 1)
    wave_len = uniform(n, 1.5, 3.0, g).view(n, 1, 1)

    def square(w):  # +-1 square wave with softened edges
        return torch.tanh(torch.sin(2 * math.pi * w) * edge / 2)

    out = torch.zeros_like(x)
    pid = pattern_ids.view(n, 1, 1)
    stripes = square(u + phase[:, 0])
    checker = square(u + phase[:, 0]) * square(v + phase[:, 1])
    fu = torch.remainder(u + phase[:, 0], 1.0) - 0.5
    fv = torch.remainder(v + phase[:, 1], 1.0) - 0.5
    radius = uniform(n, 0.22, 0.36, g).view(n, 1, 1)
    dots = torch.tanh((torch.sqrt(fu**2 + fv**2) - radius) * edge)  # -1 inside a dot
    # Gradients span the image along a random direction through its centre.
    d = ((x - 0.5) * torch.cos(theta * 2) + (y - 0.5) * torch.sin(theta * 2))
    gradient = (d / 0.7 + 0.5).clamp(0, 1) * 2 - 1
    waves = square(u + wave_amp * torch.sin(2 * math.pi * v / wave_len + 2 * math.pi * phase[:, 1]) + phase[:, 0])
    for i, m in ((1, stripes), (2, checker), (3, dots), (4, gradient), (5, waves)):
        out = torch.where(pid == i, m, out)
    return torch.where(pid == 0, torch.full_like(out, -1.0), out) * 0.5 + 0.5
