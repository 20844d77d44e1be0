"""The CUDA path's own code, run on the CPU: what ``NvdiffrastRasterizer`` hands ``nvdiffrast.torch``
(dtypes, contiguity, shapes, a mip stack nvdiffrast can build, one topology hash per job), checked on
a recording fake; the real library against the reference rasterizer where a GPU is; and out-of-memory
handling on a torch without ``torch.OutOfMemoryError``."""

import sys
import types

import numpy as np
import pytest
import torch

from nfsd.render.cameras import orbit_cameras
from nfsd.distill.engine import TextureJob
from nfsd.settings import TextureConfig
from nfsd.errors import ConfigError, OutOfMemory
from nfsd.jobs.job_run import is_cuda_oom
from nfsd.geometry.builtin_meshes import builtin_mesh
from nfsd.render.nvdiffrast_rasterizer import NvdiffrastRasterizer, nvdiffrast_available
from nfsd.render.torch_rasterizer import TorchRasterizer
from nfsd.render.rasterizer import mip_levels
from nfsd.render.renderer import render_views

REFERENCE = TorchRasterizer()


class FakeNvdiffrast(types.ModuleType):
    """``nvdiffrast.torch`` that records what our wrapper hands it (the contract: nvdiffrast's CUDA
    kernels want contiguous float32 / int32 tensors, ``resolution`` as a list of ints, a mip stack it
    can build) and draws with the reference rasterizer, so renders can be compared."""

    def __init__(self):
        super().__init__("nvdiffrast.torch")
        self.calls: list[tuple[str, dict]] = []
        self.hashes_built = 0

    def RasterizeCudaContext(self, device=None):  # noqa: N802 (nvdiffrast's name)
        return object()

    def rasterize(self, ctx, pos, tri, resolution):
        self.calls.append(("rasterize", dict(pos=pos, tri=tri, resolution=resolution)))
        return REFERENCE.rasterize(pos, tri, resolution), None

    def interpolate(self, attr, rast, tri):
        self.calls.append(("interpolate", dict(attr=attr, tri=tri)))
        return REFERENCE.interpolate(attr, rast, tri), None

    def texture(self, tex, uv, uv_da=None, filter_mode="auto", boundary_mode="wrap", max_mip_level=None):
        self.calls.append(("texture", dict(tex=tex, uv=uv, uv_da=uv_da, filter_mode=filter_mode,
                                           boundary_mode=boundary_mode, max_mip_level=max_mip_level)))
        return REFERENCE.texture(tex, uv, filter_mode, uv_da)

    def antialias(self, color, rast, pos, tri, topology_hash=None, pos_gradient_boost=1.0):
        self.calls.append(("antialias", dict(color=color, pos=pos, tri=tri, topology_hash=topology_hash)))
        return REFERENCE.antialias(color, rast, pos, tri)

    def antialias_construct_topology_hash(self, tri):
        self.hashes_built += 1
        return object()

    def args(self, name: str) -> list[dict]:
        return [kw for call, kw in self.calls if call == name]


@pytest.fixture
def fake_dr(monkeypatch):
    dr = FakeNvdiffrast()
    package = types.ModuleType("nvdiffrast")
    package.torch = dr
    monkeypatch.setitem(sys.modules, "nvdiffrast", package)
    monkeypatch.setitem(sys.modules, "nvdiffrast.torch", dr)
    return dr


def plane():
    positions = torch.tensor([[-0.5, 0, -0.5], [0.5, 0, -0.5], [0.5, 0, 0.5], [-0.5, 0, 0.5]])
    triangles = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    corner_uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    return positions, triangles, corner_uv[triangles.long()]


def mip_stack_builds(h: int, w: int, max_level: int) -> bool:
    """nvdiffrast's calculateMipInfo: it halves ``max_level`` times and refuses an odd side above 1."""
    for _ in range(max_level):
        if (h > 1 and h % 2) or (w > 1 and w % 2):
            return False
        h, w = max(1, h // 2), max(1, w // 2)
    return True


def test_the_wrapper_hands_nvdiffrast_contiguous_float32_and_int32_and_int_resolutions(fake_dr):
    rasterizer = NvdiffrastRasterizer("cpu")
    pos = torch.rand(2, 4, 8, dtype=torch.float64)[..., ::2]  # float64, not contiguous
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int64).t().contiguous().t()  # int64, transposed
    rasterizer.rasterize(pos, tri, (np.int64(8), 8.0))
    (kw,) = fake_dr.args("rasterize")
    assert kw["pos"].dtype == torch.float32 and kw["pos"].is_contiguous() and kw["pos"].shape == (2, 4, 4)
    assert kw["tri"].dtype == torch.int32 and kw["tri"].is_contiguous() and kw["tri"].shape == (2, 3)
    assert kw["resolution"] == [8, 8] and all(type(r) is int for r in kw["resolution"])


@pytest.mark.parametrize("size", [768, 1536, 1024, 96])
def test_the_wrapper_asks_for_a_mip_stack_nvdiffrast_can_build_and_clamps_at_borders(fake_dr, size):
    positions, triangles, uvs = plane()
    texture = torch.rand(size, size, 3, generator=torch.Generator().manual_seed(0))
    out = render_views(NvdiffrastRasterizer("cpu"), positions, triangles, uvs, texture, orbit_cameras([0], [0]), 16)
    (kw,) = fake_dr.args("texture")
    assert kw["max_mip_level"] == mip_levels(size, size) and mip_stack_builds(size, size, kw["max_mip_level"])
    assert kw["boundary_mode"] == "clamp" and kw["filter_mode"] == "linear-mipmap-linear"
    assert kw["tex"].shape == (1, size, size, 3) and kw["tex"].dtype == torch.float32
    assert kw["uv"].shape == (1, 16, 16, 2) and kw["uv_da"].shape == (1, 16, 16, 4)
    assert kw["uv_da"].dtype == torch.float32 and kw["uv_da"].is_contiguous()
    reference = render_views(REFERENCE, positions, triangles, uvs, texture, orbit_cameras([0], [0]), 16)
    assert torch.equal(out.image, reference.image)  # the wrapper hands the results back untouched


def test_without_pixel_derivatives_the_wrapper_samples_linear_and_sends_none(fake_dr):
    uv = torch.rand(1, 4, 4, 2)
    NvdiffrastRasterizer("cpu").texture(torch.rand(1, 8, 8, 3), uv, filter_mode="linear-mipmap-linear", uv_da=None)
    (kw,) = fake_dr.args("texture")
    assert kw["filter_mode"] == "linear" and kw["uv_da"] is None


def test_antialias_topology_hash_is_built_once_per_triangle_tensor(fake_dr):
    positions, triangles, uvs = plane()
    texture = torch.rand(8, 8, 3)
    rasterizer = NvdiffrastRasterizer("cpu")  # one per job, as the engine makes it
    for azimuth in (0, 30, 60):  # three steps of one job
        render_views(rasterizer, positions, triangles, uvs, texture, orbit_cameras([azimuth], [10]), 16)
    hashes = [kw["topology_hash"] for kw in fake_dr.args("antialias")]
    assert fake_dr.hashes_built == 1 and len(hashes) == 3 and len(set(map(id, hashes))) == 1
    render_views(rasterizer, positions, triangles.flip(1).contiguous(), uvs, texture, orbit_cameras([0], [0]), 16)
    triangles[0, 0] = 0  # an in-place write (same values) still counts as a change
    render_views(rasterizer, positions, triangles, uvs, texture, orbit_cameras([0], [0]), 16)
    assert fake_dr.hashes_built == 3


@pytest.mark.skipif(not (torch.cuda.is_available() and nvdiffrast_available()), reason="needs CUDA and nvdiffrast")
def test_real_nvdiffrast_matches_the_reference_rasterizer_on_the_gpu():
    positions, triangles, uvs = (t.cuda() for t in plane())
    texture = torch.rand(768, 768, 3, generator=torch.Generator().manual_seed(0)).cuda()
    cams = orbit_cameras([0, 40], [0, 20]).to("cuda")
    out = render_views(NvdiffrastRasterizer("cuda"), positions, triangles, uvs, texture, cams, 64)
    ref = render_views(TorchRasterizer(), positions, triangles, uvs, texture, cams, 64)
    assert (out.mask - ref.mask).abs().mean() < 0.01
    inside = (out.mask * ref.mask) > 0.999
    assert (out.image - ref.image).abs().amax(1, keepdim=True)[inside].mean() < 0.01


@pytest.fixture
def torch_before_2_5(monkeypatch):
    """torch 2.1-2.4 had torch.cuda.OutOfMemoryError but no torch.OutOfMemoryError."""
    monkeypatch.delattr(torch, "OutOfMemoryError", raising=False)


def job_whose_run_raises(monkeypatch, exc):
    def run(self, report):
        raise exc

    monkeypatch.setattr(TextureJob, "_run", run)
    return TextureJob(builtin_mesh("cube"), TextureConfig(prompt="stripes", steps=1))


def test_an_ordinary_error_stays_itself_on_an_older_torch(torch_before_2_5, monkeypatch):
    with pytest.raises(ConfigError, match="bad setting"):
        job_whose_run_raises(monkeypatch, ConfigError("bad setting")).run()


def test_cuda_out_of_memory_names_the_setting_to_lower_on_an_older_torch(torch_before_2_5, monkeypatch):
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(OutOfMemory, match="lower batch first"):
        job_whose_run_raises(monkeypatch, oom).run()
    assert is_cuda_oom(oom) and not is_cuda_oom(ValueError("x"))
