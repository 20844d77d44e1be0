"""Measurements on rendered views of a texturing result: the numbers the quality benchmarks report.

Images are float32 ``[V, 3, S, S]`` in [0, 1] (row 0 top), masks ``[V, 1, S, S]`` (1 inside the
object, antialiased at the silhouette); every measure reads only pixels well inside the object.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def render_result(result, size: int, azimuths, elevation: float, background=(0.5, 0.5, 0.5)):
    """Fixed orbit views of a ``TextureResult``: images ``[V, 3, S, S]`` and masks ``[V, 1, S, S]`` (row 0 top)."""
    from ..outputs import render_result as render

    out = render(result, size, azimuths, elevation, background)
    return out.image, out.mask


def saturation(images: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean HSV saturation ``(max - min) / max`` over pixels with ``mask > 0.99``."""
    mx, mn = images.amax(1), images.amin(1)
    s = (mx - mn) / mx.clamp(min=1e-4)
    m = mask[:, 0] > 0.99
    return float(s[m].mean()) if m.any() else float("nan")


def clipped_fraction(images: torch.Tensor, mask: torch.Tensor, eps: float = 0.02) -> float:
    m = (mask > 0.99).expand_as(images)
    v = images[m]
    return float(((v < eps) | (v > 1 - eps)).float().mean()) if v.numel() else float("nan")


def high_frequency_energy(images: torch.Tensor, mask: torch.Tensor, size: int = 32, sigma: float = 1.0) -> float:
    """Mean squared difference between the image and its Gaussian blur, at ``size`` (the prior's
    resolution), over pixels well inside the object (silhouette edges would count the outline)."""
    if images.shape[-1] != size:
        images = F.interpolate(images, (size, size), mode="bilinear", align_corners=False, antialias=True)
        mask = F.interpolate(mask, (size, size), mode="bilinear", align_corners=False, antialias=True)
    k = 5
    xs = torch.arange(k, dtype=torch.float32) - k // 2
    w = torch.exp(-xs**2 / (2 * sigma**2))
    w = w / w.sum()
    kern = (w.view(-1, 1) * w.view(1, -1)).expand(3, 1, k, k)
    blurred = F.conv2d(F.pad(images, (k // 2,) * 4, mode="replicate"), kern, groups=3)
    inner = -F.max_pool2d(-(mask > 0.99).float(), k, stride=1, padding=k // 2)  # eroded mask
    energy = ((images - blurred) ** 2).sum(1, keepdim=True)
    return float((energy * inner).sum() / inner.sum().clamp(min=1))
