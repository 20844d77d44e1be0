"""The CUDA path's own code, run on the CPU: NvdiffrastRasterizer over a fake ``nvdiffrast.torch``
that keeps nvdiffrast's rules (mip stack limits, topology hashes) and draws with the reference
rasterizer; and out-of-memory handling on a torch without ``torch.OutOfMemoryError``."""

import sys
import types

import pytest
import torch

from nfsd.render.cameras import orbit_cameras
from nfsd.distill.config import TextureConfig
from nfsd.distill.engine import TextureJob
from nfsd.errors import ConfigError, OutOfMemory
from nfsd.jobs.worker import is_cuda_oom
from nfsd.geometry.builtin_meshes import builtin_mesh
from nfsd.render.nvdiffrast_rasterizer import NvdiffrastRasterizer
from nfsd.render.torch_rasterizer import TorchRasterizer
from nfsd.render.rasterizer import mip_levels
from nfsd.render.renderer import render_views

REFERENCE = TorchRasterizer()


class FakeNvdiffrast(types.ModuleType):
    """``nvdiffrast.torch`` with its argument rules, drawing with TorchRasterizer; counts calls."""

    def __init__(self):
        super().__init__("nvdiffrast.torch")
        self.hashes_built = 0
        self.antialias_hashes = []
        self.max_mip_levels = []

    def RasterizeCudaContext(self, device=None):  # noqa: N802 (nvdiffrast's name)
        return object()

    def rasterize(self, ctx, pos, tri, resolution):
        return REFERENCE.rasterize(pos, tri, resolution), None

    def interpolate(self, attr, rast, tri):
        return REFERENCE.interpolate(attr, rast, tri), None

    def texture(self, tex, uv, uv_da=None, filter_mode="auto", boundary_mode="wrap", max_mip_level=None):
        if "mipmap" in filter_mode:
            # nvdiffrast's calculateMipInfo: halve until the limit, raising on an odd side above 1.
            h, w, level = tex.shape[1], tex.shape[2], 0
            while (h > 1 or w > 1) and (max_mip_level is None or level < max_mip_level):
                if (h > 1 and h % 2) or (w > 1 and w % 2):
                    raise RuntimeError("Mip-map size error - cannot downsample an odd extent greater than 1")
                h, w, level = max(1, h // 2), max(1, w // 2), level + 1
        self.max_mip_levels.append(max_mip_level)
        return REFERENCE.texture(tex, uv, filter_mode, uv_da)

    def antialias(self, color, rast, pos, tri, topology_hash=None, pos_gradient_boost=1.0):
        self.antialias_hashes.append(topology_hash)
        return REFERENCE.antialias(color, rast, pos, tri)

    def antialias_construct_topology_hash(self, tri):
        self.hashes_built += 1
        return object()


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


def test_the_fake_refuses_a_full_mip_stack_of_768_like_nvdiffrast(fake_dr):
    tex, uv, uv_da = torch.rand(1, 768, 768, 3), torch.rand(1, 2, 2, 2), torch.ones(1, 2, 2, 4)
    with pytest.raises(RuntimeError, match="odd extent"):
        fake_dr.texture(tex, uv, uv_da, filter_mode="linear-mipmap-linear")


@pytest.mark.parametrize("size", [768, 1536, 1024])
def test_nvdiffrast_renders_any_texture_size_with_the_mip_limit_it_can_build(fake_dr, size):
    positions, triangles, uvs = plane()
    texture = torch.rand(size, size, 3, generator=torch.Generator().manual_seed(0))
    out = render_views(NvdiffrastRasterizer("cpu"), positions, triangles, uvs, texture, orbit_cameras([0], [0]), 16)
    assert fake_dr.max_mip_levels == [mip_levels(size, size)]
    reference = render_views(REFERENCE, positions, triangles, uvs, texture, orbit_cameras([0], [0]), 16)
    assert torch.equal(out.image, reference.image)


def test_antialias_topology_hash_is_built_once_per_triangle_tensor(fake_dr):
    positions, triangles, uvs = plane()
    texture = torch.rand(8, 8, 3)
    rasterizer = NvdiffrastRasterizer("cpu")  # one per job, as the engine makes it
    for azimuth in (0, 30, 60):  # three steps of one job
        render_views(rasterizer, positions, triangles, uvs, texture, orbit_cameras([azimuth], [10]), 16)
    assert fake_dr.hashes_built == 1
    assert len(fake_dr.antialias_hashes) == 3 and len(set(map(id, fake_dr.antialias_hashes))) == 1
    render_views(rasterizer, positions, triangles.flip(1).contiguous(), uvs, texture, orbit_cameras([0], [0]), 16)
    triangles[0, 0] = 0  # an in-place write (same values) still counts as a change
    render_views(rasterizer, positions, triangles, uvs, texture, orbit_cameras([0], [0]), 16)
    assert fake_dr.hashes_built == 3


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
