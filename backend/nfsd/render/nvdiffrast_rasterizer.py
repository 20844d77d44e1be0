"""``NvdiffrastRasterizer``: the four primitives of ``nfsd.render.rasterizer`` on ``nvdiffrast.torch`` (CUDA).

nvdiffrast is NVIDIA's (non-commercial licence); either distribution works: the NVlabs 0.4 one or
``diffrp-nvdiffrast`` 0.3.3, which JIT-compiles its CUDA plugin with nvcc on first use.
"""

from __future__ import annotations

import torch

from ..errors import RendererError
from .rasterizer import batched_attr, check_geometry, check_texture, mip_levels

INSTALL_HINT = (
    "install it with `pip install diffrp-nvdiffrast` (needs the CUDA toolkit's nvcc on PATH; it "
    "compiles on first use) or use the pure-PyTorch renderer (renderer='torch')"
)


def nvdiffrast_available() -> bool:
    """True when ``nvdiffrast.torch`` imports (it may still need CUDA and nvcc to run)."""
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception:
        return False
    return True


class NvdiffrastRasterizer:
    """Thin wrapper over ``nvdiffrast.torch``. Tensors must live on the CUDA device the context was
    made for.

    Make one per job: it keeps the antialias topology hash of the last triangle tensor it saw
    (nvdiffrast would otherwise rebuild it from the constant triangles on every step), and reuses
    it while the same tensor object comes back unmodified.
    """

    name = "nvdiffrast"

    def __init__(self, device="cuda"):
        try:
            import nvdiffrast.torch as dr
        except Exception as exc:  # ImportError, or a failing JIT build
            raise RendererError(f"nvdiffrast is not available ({exc}); {INSTALL_HINT}") from exc
        self._dr = dr
        try:  # the first context builds (diffrp-nvdiffrast: JIT-compiles) the CUDA plugin
            self._ctx = dr.RasterizeCudaContext(device=torch.device(device))
        except Exception as exc:
            raise RendererError(f"nvdiffrast could not start on {device} ({exc}); {INSTALL_HINT}") from exc
        self._topology: tuple[torch.Tensor, int, object] | None = None  # (tri, tri._version, hash)

    def rasterize(self, pos_clip, tri, resolution):
        check_geometry(pos_clip, tri)
        rast, _ = self._dr.rasterize(
            self._ctx, pos_clip.float().contiguous(), tri.int().contiguous(), resolution=[int(r) for r in resolution]
        )
        return rast

    def interpolate(self, attr, rast, tri):
        attr = batched_attr(attr, rast)
        out, _ = self._dr.interpolate(attr.float().contiguous(), rast, tri.int().contiguous())
        return out

    def texture(self, tex, uv, filter_mode="linear", uv_da=None):
        tex, uv = check_texture(tex, uv, filter_mode)
        if uv_da is None:
            filter_mode = "linear"
        # Without max_mip_level nvdiffrast builds the stack down to 1 x 1 and raises on the first
        # odd side (768, 1536, 3072 textures); the reference rasterizer stops at the same level.
        return self._dr.texture(
            tex.float().contiguous(),
            uv.float().contiguous(),
            uv_da=None if filter_mode == "linear" else uv_da.float().contiguous(),
            filter_mode=filter_mode,
            boundary_mode="clamp",
            max_mip_level=mip_levels(tex.shape[1], tex.shape[2]),
        )

    def antialias(self, color, rast, pos_clip, tri):
        tri = tri.int().contiguous()
        return self._dr.antialias(color.contiguous(), rast, pos_clip.float().contiguous(), tri,
                                  topology_hash=self._topology_hash(tri))

    def _topology_hash(self, tri: torch.Tensor):
        # Identity, not contents: comparing contents would cost a device sync every step. The
        # engine passes the same int32 tensor each step, so the hash is built once per job.
        cached = self._topology
        if cached is None or cached[0] is not tri or cached[1] != tri._version:
            self._topology = cached = (tri, tri._version, self._dr.antialias_construct_topology_hash(tri))
        return cached[2]
