"""Meshes that used to hang or crash the unwrap: far-out coordinates, NaN, a child that never ends."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from nfsd.errors import MeshError
from nfsd.geometry import unwrap as unwrap_mod
from nfsd.geometry.mesh import Mesh
from nfsd.geometry.unwrap import ensure_uvs, unwrap_in_child


def sphere(n=12):
    """A UV sphere without UVs (n x n quads, two triangles each)."""
    th, ph = np.meshgrid(np.linspace(0.1, np.pi - 0.1, n), np.linspace(0, 2 * np.pi, n, endpoint=False), indexing="ij")
    pos = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1).reshape(-1, 3)
    tri = []
    for i in range(n - 1):
        for j in range(n):
            a, b, c, d = i * n + j, i * n + (j + 1) % n, (i + 1) * n + j, (i + 1) * n + (j + 1) % n
            tri += [[a, b, d], [a, d, c]]
    return pos.astype(np.float32), np.array(tri, np.int32)


@pytest.mark.parametrize("scale", [1e-3, 1e11, 1e20])
def test_a_mesh_of_any_sensible_size_unwraps_in_seconds(scale):
    pos, tri = sphere()
    t0 = time.monotonic()
    uvs = unwrap_in_child(pos * np.float32(scale), tri, timeout=60)
    assert time.monotonic() - t0 < 60
    assert uvs.shape == (len(tri), 3, 2) and np.isfinite(uvs).all() and uvs.max() > 0.5


def test_a_mesh_at_1e11_goes_through_ensure_uvs():
    pos, tri = sphere()
    mesh = ensure_uvs(Mesh(positions=pos * np.float32(1e11), triangles=tri), timeout=60)
    assert mesh.uvs_generated and mesh.uvs.shape == (len(tri), 3, 2)


@pytest.mark.parametrize("positions, match", [
    (lambda p: np.where(np.arange(len(p))[:, None] == 3, np.nan, p), "non-finite"),
    (lambda p: p + np.float32(1e12), "float32 cannot hold its shape"),
    (lambda p: p * np.float32(1e35), "coordinates reach"),
])
def test_absurd_coordinates_are_refused_in_words(positions, match):
    pos, tri = sphere()
    with pytest.raises(MeshError, match=match):
        unwrap_in_child(positions(pos).astype(np.float32), tri, timeout=60)


def test_an_unwrap_that_runs_past_its_time_is_stopped(monkeypatch):
    monkeypatch.setattr(unwrap_mod, "_child_command",
                        lambda inp, out: [sys.executable, "-c", "import time; time.sleep(120)"])
    pos, tri = sphere()
    t0 = time.monotonic()
    with pytest.raises(MeshError, match="took more than 1 s.*Smart UV Project"):
        unwrap_in_child(pos, tri, timeout=1)
    assert time.monotonic() - t0 < 10
