"""Exact toy priors: noise predictions known in closed form, so the distillation loop has a known answer.

``AnalyticPrior`` wants one flat colour per prompt; ``ShapePrior`` wants the mesh with a bump (a
camera-dependent target, for the vertex offsets); ``MaterialPrior`` wants renders of a known pbr material
under each view's own lights (for the ``material`` setting). Both implement the ``nfsd.priors.prior.Prior`` interface
the engine uses, in pixel space, float32; tests and ``nfsd bench offsets`` use them where a trained
model would hide whether the loop itself is right.
"""

from __future__ import annotations

import re

import torch


COLOUR_WORDS = {
    "red": (0.9, 0.1, 0.1), "green": (0.1, 0.7, 0.2), "blue": (0.1, 0.2, 0.9), "yellow": (0.95, 0.85, 0.1),
    "white": (0.95, 0.95, 0.95), "black": (0.05, 0.05, 0.05), "orange": (1.0, 0.5, 0.05), "purple": (0.5, 0.15, 0.65),
}


class AnalyticPrior:
    """A prior whose every prompt means ONE image: a flat colour. Its noise prediction is exact.

    For data concentrated on a single image ``x*`` the optimal denoiser is known in closed form:
    ``eps(z_t, t) = (z_t - sqrt(a_t) x*) / sqrt(1 - a_t)``. So with this prior the distillation
    rules have a known fixed point (the render equals ``x*``), which makes the whole loop (render,
    encode, rule, optimizer) testable and lets benchmarks measure convergence without a trained
    model. Pixel space, float32. The prompt's first colour word picks ``x*`` (``COLOUR_WORDS``);
    the empty prompt means mid grey, the negative prompt (any prompt with no colour word) dark grey.

    Implements the ``nfsd.priors.prior.Prior`` interface the engine uses.
    """

    def __init__(self, image_size: int = 32, device="cpu"):
        from diffusers import DDPMScheduler

        sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
        self.model_id = "analytic"
        self.device = torch.device(device)
        self.dtype = torch.float32
        self.alphas_cumprod = sched.alphas_cumprod.to(self.device)
        self.prediction_type = "epsilon"
        self.latent_scale = 1.0
        self.image_size = image_size
        self.max_prompt_tokens = 77
        self.default_render_size = 512
        self.vae = None

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def tune(self, **kwargs) -> None:
        pass

    def prompt_report(self, text: str) -> dict:
        return {"tokens": len(text.split()), "chunks": 1}

    def colour(self, prompt: str) -> tuple[float, float, float]:
        if not prompt.strip():
            return (0.5, 0.5, 0.5)
        for word in re.findall(r"[a-z]+", prompt.lower()):
            if word in COLOUR_WORDS:
                return COLOUR_WORDS[word]
        return (0.2, 0.2, 0.2)

    def embed(self, prompts: list[str]) -> torch.Tensor:
        """``[N, 1, 3]``: the target colour of each prompt in [-1, 1]."""
        return torch.tensor([[self.colour(p)] for p in prompts], device=self.device) * 2 - 1

    def encode(self, images: torch.Tensor, generator=None) -> torch.Tensor:
        if images.shape[-1] != self.image_size:
            images = torch.nn.functional.interpolate(images, (self.image_size, self.image_size), mode="bilinear",
                                                     align_corners=False, antialias=True)
        return images.float() * 2 - 1

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents + 1) / 2).clamp(0, 1)

    def add_noise(self, z, noise, t):
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return a.sqrt() * z + (1 - a).sqrt() * noise

    def predict_eps(self, z_t, t, embeddings):
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        target = embeddings[:, 0, :].view(-1, 3, 1, 1)
        return (z_t - a.sqrt() * target) / (1 - a).sqrt()


class ShapePrior(AnalyticPrior):
    """An exact toy prior that wants a different SHAPE: every prompt means "the mesh with a bump".

    Like ``AnalyticPrior`` its predictions are exact denoisers, but of images that depend on the
    camera: the engine tells it each step's views (``see_views``), and it renders ``target`` (the
    mesh moved by ``target_offsets``, with a flat ``albedo``) and ``base`` (the mesh as it is) from
    them. A prompt with the word "bump" means the target render; any other (the empty and the
    negative prompt) means the data as a whole, the target and the base render with equal weight (exact posterior mean), so the
    classifier direction ``e_y - e_0`` points from the base shape towards the target one and
    vanishes once the render is the target. Pixel space, float32; used to test and tune the offsets.

    Args:
        mesh: ``nfsd.geometry.mesh.Mesh`` with UVs, the one the engine optimizes.
        target_offsets: ``[V, 3]`` object-space offsets that make the wanted shape.
        image_size: renders and "latents" are ``image_size`` square (use it as the run's render_size).
        albedo: the flat texture colour of both renders (the run's initial texture should match).
    """

    def __init__(self, mesh, target_offsets, image_size: int = 32, albedo=(0.6, 0.6, 0.6), device="cpu"):
        import numpy as np

        from ..geometry import mesh as mesh_lib
        from ..render.renderer import get_rasterizer

        super().__init__(image_size, device)
        self.model_id = "shape"
        transform = mesh_lib.framing_transform(mesh)  # as the engine frames it

        def render_space(offsets):
            world = (mesh.world_matrix[:3, :3] @ (mesh.positions + offsets).T).T + mesh.world_matrix[:3, 3]
            return torch.from_numpy(transform.apply(world).astype(np.float32)).to(self.device)

        self._positions = [render_space(np.asarray(target_offsets, np.float32)), render_space(0.0)]
        self._triangles = torch.from_numpy(mesh.triangles.astype(np.int32)).to(self.device)
        self._uvs = torch.from_numpy(mesh.uvs.astype(np.float32)).to(self.device)
        self._texture = torch.tensor(albedo, dtype=torch.float32, device=self.device).expand(4, 4, 3).contiguous()
        self._rasterizer = get_rasterizer("torch", self.device)
        self._images: torch.Tensor | None = None  # [2, B, 3, S, S] in [-1, 1]: target, base

    def see_views(self, cameras, lighting) -> None:
        """Render the target and the base shape from this step's cameras and lighting."""
        from ..render.renderer import render_views

        with torch.no_grad():
            self._images = torch.stack([
                render_views(self._rasterizer, p, self._triangles, self._uvs, self._texture, cameras,
                             self.image_size, lighting).image * 2 - 1
                for p in self._positions])

    def embed(self, prompts: list[str]) -> torch.Tensor:
        """``[N, 1, 1]``: 1 for a prompt with the word "bump" (the target), else 0 (the data)."""
        return torch.tensor([[[1.0 if re.search(r"\bbump", p.lower()) else 0.0]] for p in prompts],
                            device=self.device)

    def predict_eps(self, z_t, t, embeddings):
        if self._images is None:
            raise RuntimeError("ShapePrior.predict_eps before see_views: the engine tells it the cameras")
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        views = self._images.shape[1]
        target, base = (x.repeat(z_t.shape[0] // views, 1, 1, 1) for x in self._images)
        # Posterior of "target" among {target, base} given z_t (equal priors), per row.
        d_target = ((z_t - a.sqrt() * target) ** 2).flatten(1).sum(1)
        d_base = ((z_t - a.sqrt() * base) ** 2).flatten(1).sum(1)
        p_target = torch.sigmoid((d_base - d_target) / (2 * (1 - a.view(-1)))).view(-1, 1, 1, 1)
        conditional = embeddings.view(-1, 1, 1, 1) > 0.5
        mean = torch.where(conditional, target, p_target * target + (1 - p_target) * base)
        return (z_t - a.sqrt() * mean) / (1 - a).sqrt()


class MaterialPrior(AnalyticPrior):
    """An exact toy prior whose every prompt means "this mesh in this material, under this view's lights".

    The engine tells it each step's cameras and lights (``see_views``); it renders ``material`` (a pbr
    material texture ``[S, S, 5|7]``, ``nfsd.render.shading``) on the mesh from them, and its prediction
    is the exact denoiser of that one image: a run's render converges to it where the texture can explain
    it. Under an albedo run's ``Lighting`` it renders the material under that light (``as_pbr_lighting``),
    so an albedo texture can match only by painting the highlights in. Every prompt means the same
    image, so use ``mode="sds"`` (the conditional and unconditional predictions coincide: NFSD and CSD
    would see no classifier direction). Pixel space, float32; tests and ``nfsd bench materials`` use it.

    Args:
        mesh: ``nfsd.geometry.mesh.Mesh`` with UVs, the one the engine optimizes.
        material: ``[S, S, C]`` float in [0, 1] (row 0 bottom) on the mesh's UVs: the wanted material.
        image_size: renders and "latents" are ``image_size`` square (use it as the run's render_size).
    """

    def __init__(self, mesh, material, image_size: int = 32, device="cpu"):
        import numpy as np

        from ..geometry import mesh as mesh_lib
        from ..render.renderer import get_rasterizer

        super().__init__(image_size, device)
        self.model_id = "material"
        transform = mesh_lib.framing_transform(mesh)  # as the engine frames it
        self._positions = torch.from_numpy(transform.apply(mesh.world_positions()).astype(np.float32)).to(self.device)
        self._triangles = torch.from_numpy(mesh.triangles.astype(np.int32)).to(self.device)
        self._uvs = torch.from_numpy(mesh.uvs.astype(np.float32)).to(self.device)
        self._material = torch.as_tensor(np.asarray(material, np.float32), device=self.device)
        self._rasterizer = get_rasterizer("torch", self.device)
        self._images: torch.Tensor | None = None  # [B, 3, S, S] in [-1, 1]

    def see_views(self, cameras, lighting) -> None:
        """Render the material from this step's cameras under its lights."""
        from ..render.renderer import render_views
        from ..render.shading import as_pbr_lighting

        with torch.no_grad():
            self._images = render_views(self._rasterizer, self._positions, self._triangles, self._uvs,
                                        self._material, cameras, self.image_size,
                                        as_pbr_lighting(lighting)).image * 2 - 1

    def embed(self, prompts: list[str]) -> torch.Tensor:
        """``[N, 1, 1]`` zeros: every prompt means the material's render."""
        return torch.zeros(len(prompts), 1, 1, device=self.device)

    def predict_eps(self, z_t, t, embeddings):
        if self._images is None:
            raise RuntimeError("MaterialPrior.predict_eps before see_views: the engine tells it the cameras")
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        target = self._images.repeat(z_t.shape[0] // self._images.shape[0], 1, 1, 1)
        return (z_t - a.sqrt() * target) / (1 - a).sqrt()
