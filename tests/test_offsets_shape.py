"""A shape refinement that shows: with a prior that wants a bump, the default offset settings grow
most of it, without self-intersections, within the bound, along the normals."""

import numpy as np
import pytest

from nfsd.bench.offsets import BUMP_HEIGHT, icosphere, run_bump, self_intersections
from nfsd.settings import TextureConfig
from nfsd.geometry.mesh import framing_transform


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_default_offsets_recover_most_of_a_wanted_bump_cleanly():
    # Default settings but the steps: 150 instead of 400 keep the test short (400 only grow it further).
    out = run_bump({}, steps=150)
    mesh, offsets = out["mesh"], out["offsets"]
    assert out["recovered"] >= 0.5, out["recovered"]
    assert out["self_intersections"] == 0
    # Far from the bump the surface stays where it was (well under a tenth of the bump).
    far = np.linalg.norm(mesh.positions - np.array([0, -1, 0]), axis=1) > 1.2
    assert np.linalg.norm(offsets[far], axis=1).mean() < 0.1 * BUMP_HEIGHT
    # The surface moved (a run that left it in place would pass the checks below trivially) ...
    lengths = np.linalg.norm(offsets, axis=1)
    assert not np.allclose(mesh.positions + offsets, mesh.positions) and lengths.max() > 0.1 * BUMP_HEIGHT
    # ... never by more than the bound (offset_strength, a fraction of the bounding sphere's radius) ...
    bound = TextureConfig().offset_strength / framing_transform(mesh).scale
    assert lengths.max() <= bound * (1 + 1e-5), (lengths.max(), bound)
    assert out["max_pct"] <= 100 * TextureConfig().offset_strength * (1 + 1e-5)
    # ... and only along the base mesh's vertex normals (the icosphere's: radial).
    moving = lengths > 1e-6 * bound
    radial = mesh.positions[moving] / np.linalg.norm(mesh.positions[moving], axis=1, keepdims=True)
    cosine = np.abs(np.sum(offsets[moving] * radial, axis=1)) / lengths[moving]
    assert cosine.min() > 0.99, cosine.min()


def test_self_intersections_are_counted():
    mesh = icosphere(1)
    assert self_intersections(mesh.positions, mesh.triangles) == 0
    folded = mesh.positions.copy()
    folded[0] = -folded[0] * 1.5  # push one vertex through the far side: its faces cross the surface there
    assert self_intersections(folded, mesh.triangles) > 0
