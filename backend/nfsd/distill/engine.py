"""The optimization loop: one engine behind the CLI, the server and the benchmarks.

Per step (shared/DESIGN.md): random cameras -> render the textured (and displaced) mesh -> encode
with the prior's VAE or a tiny encoder (gradients flow) -> add noise at a random t per view -> ONE
batched UNet call on [prompt+view, negative, ""] (SDS, CSD: no negative; DDS: the original
texture's render under the source prompt too) -> distillation rule -> loss -> Adam step on the
texture (and offsets).

    job = TextureJob(mesh, TextureConfig(prompt="red and white stripes"))
    result = job.run(on_progress=print)     # job.cancel() / job.snapshot() from any thread
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from typing import Callable

import numpy as np
import torch

from . import guidance
from ..geometry import mesh as mesh_lib
from ..geometry.unwrap import ensure_uvs
from ..render.cameras import CameraConfig, sample_cameras
from .config import Progress, TextureConfig, TextureResult
from ..errors import ConfigError, OutOfMemory
from ..priors.fast_encoder import gradient_encoder
from .image_files import from_uint8, to_uint8
from ..priors.lora import apply_loras
from .offsets import NormalOffsets
from ..priors.prior import Prior, load_prior
from ..render.renderer import get_rasterizer, random_lighting, render_views
from .texels import dilate, uv_coverage
from .texture import as_face_mask, face_region, make_texture

VIEW_WORDS = ("front", "side", "back", "overhead")


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU. Asking for CUDA without one raises ``ConfigError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda was requested but no CUDA GPU is visible to PyTorch; use --device cpu")
    return torch.device(name)


def device_info() -> dict:
    """``{"device", "gpu_name", "gpu_free_bytes"}`` for health reports."""
    if torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info()
        return {"device": "cuda", "gpu_name": torch.cuda.get_device_name(), "gpu_free_bytes": int(free)}
    return {"device": "cpu", "gpu_name": None, "gpu_free_bytes": None}


def view_prompt(prompt: str, word: str) -> str:
    """The prompt for one view: ``"<prompt>, <word> view"``."""
    return f"{prompt}, {word} view"


class TextureJob:
    """One texturing run. ``run`` in one thread; ``cancel`` and ``snapshot`` from any other.

    Args:
        mesh: the mesh (``nfsd.geometry.mesh.Mesh``); unwrapped with xatlas when it has no UVs.
        config: the settings (validated here).
        prior: an already loaded prior; default ``load_prior(config.model)`` (cached).
        init_texture: uint8 ``[H, W, 3]`` (row 0 bottom) to continue from, resized to ``texture_size``;
            required by the edit modes (``dds``) and by ``face_mask``.
        face_mask: ``[F]`` bool, re-texture only these faces (default ``mesh.face_mask``): every texel
            outside ``texture.face_region`` of them comes back bit-identical to ``init_texture``
            (which then sets the texture size), and only their vertices move. The renders show the
            whole object, so the prior sees the region in context.
    """

    def __init__(self, mesh, config: TextureConfig, prior: Prior | None = None, init_texture: np.ndarray | None = None,
                 face_mask: np.ndarray | None = None):
        config.validate()
        self.config = config
        self.mesh = ensure_uvs(mesh)
        self.prior = prior
        self.init_texture = init_texture
        if face_mask is None:
            face_mask = getattr(mesh, "face_mask", None)
        self.face_mask = None if face_mask is None else as_face_mask(face_mask, self.mesh.num_faces)
        if config.mode in guidance.EDIT_MODES and init_texture is None:
            raise ConfigError(f"mode {config.mode} edits a texture: give the current one (init texture / continue a run)")
        if self.face_mask is not None:
            if init_texture is None:
                raise ConfigError("a face mask re-textures part of a texture: give the current texture (init texture); "
                                  "the texels outside the selected faces are kept from it")
            h, w = np.asarray(init_texture).shape[:2]
            if h != w:
                raise ConfigError(f"with a face mask the texture is kept texel for texel, so it must be square; got {w}x{h}")
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._texture: Callable[[], torch.Tensor] | None = None

    def cancel(self) -> None:
        """Ask ``run`` to stop after the current step; it returns what exists so far."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def snapshot(self) -> np.ndarray | None:
        """The current texture, uint8 ``[H, W, 3]`` row 0 bottom (not dilated); None before the first step."""
        with self._lock:
            if self._texture is None:
                return None
            with torch.no_grad():
                return to_uint8(self._texture())

    # -----------------------------------------------------------------------------------------

    def run(self, on_progress: Callable[[Progress], None] | None = None) -> TextureResult:
        """Optimize; returns the result (``cancelled=True`` if ``cancel`` was called).

        Raises:
            OutOfMemory: CUDA ran out of memory; the message names the setting to lower.
            ModelError, ConfigError, MeshError: bad model, settings or mesh.
        """
        try:
            return self._run(on_progress or (lambda p: None))
        except torch.cuda.OutOfMemoryError as exc:  # torch.OutOfMemoryError is 2.5+ only
            self._texture = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            c = self.config
            raise OutOfMemory(
                f"GPU out of memory (batch={c.batch}, render_size={c.render_size or 'the model default'}, texture_size={c.texture_size}): "
                "lower batch first, then render_size, then texture_size"
            ) from exc

    def _run(self, report: Callable[[Progress], None]) -> TextureResult:
        c = self.config
        t_start = time.perf_counter()
        device = resolve_device(c.device)
        timings: dict[str, float] = {}
        if device.type == "cuda":  # this job's own peak (a server's worker runs many jobs)
            torch.cuda.reset_peak_memory_stats(device)

        if self.prior is None:
            def on_load(name, i, n):
                report(Progress("loading", i, n, None, time.perf_counter() - t_start, None, i / max(n, 1)))

            dtype = None if c.half_precision else torch.float32
            self.prior = load_prior(c.model, device, dtype, progress=on_load, config=c.model_config)
        prior = self.prior
        device = prior.device
        apply_loras(prior, c.loras)  # also takes off the LoRAs an earlier job left on the cached model
        grad_encode = gradient_encoder(prior, c.encoder, c.tiny_encoder)
        prior.tune(channels_last=c.channels_last, compile=c.compile)
        render_size = c.render_size or prior.default_render_size
        edit = c.mode in guidance.EDIT_MODES

        def encode(images, generator=None):  # the full VAE samples: an edit passes both renders one draw
            return prior.encode(images, generator) if c.encoder == "full" else grad_encode(images)
        timings["load_model_s"] = time.perf_counter() - t_start

        # Geometry in render space (world axes, unit bounding sphere).
        mesh = self.mesh
        transform = mesh_lib.framing_transform(mesh)  # loose vertices ignored
        base = torch.from_numpy(transform.apply(mesh.world_positions()).astype(np.float32)).to(device)
        triangles = torch.from_numpy(mesh.triangles.astype(np.int32)).to(device)
        uvs = torch.from_numpy(mesh.uvs.astype(np.float32)).to(device)
        rasterizer = get_rasterizer(c.renderer, device)

        # Parameters. With a face mask the texture keeps the initial texture's own size (texel for texel).
        size = np.asarray(self.init_texture).shape[0] if self.face_mask is not None else c.texture_size
        init = from_uint8(self.init_texture, size).to(device) if self.init_texture is not None else None
        torch.manual_seed(c.seed)
        texture = make_texture(c.parametrization, size, init, surface=(base, triangles, uvs)).to(device)
        params = [{"params": texture.parameters(), "lr": c.lr}]
        region = None
        if self.face_mask is not None:
            region = face_region(uvs, torch.from_numpy(self.face_mask).to(device), size)

            def current():  # outside the region the initial texture, exactly; gradients reach the region only
                return torch.where(region[..., None], texture(), init)
        else:
            current = texture
        offsets = None
        if c.offsets and c.offset_strength > 0:
            movable = None if self.face_mask is None else \
                torch.from_numpy(np.unique(mesh.triangles[self.face_mask])).to(device)
            offsets = NormalOffsets(base, triangles, c.offset_strength, movable=movable).to(device)
            params.append({"params": offsets.parameters(), "lr": c.offset_lr})
        optimizer = torch.optim.Adam(params, betas=(0.9, 0.99), eps=1e-15)
        with self._lock:
            self._texture = current
        # The original texture, as the parametrization renders it: at step 0 both DDS branches see
        # the very same image, so where the prompts agree the gradient is exactly zero.
        original = current().detach() if c.mode in guidance.EDIT_MODES else None

        # Prompt embeddings, once per run: one per view word, the negative prompt, the empty prompt
        # (and, to edit, the source prompt per view word). Any length: long prompts take several
        # text windows, and torch.cat pads to a common length.
        emb_views = prior.embed([view_prompt(c.prompt, w) for w in VIEW_WORDS])
        emb_neg, emb_empty = prior.embed([c.negative_prompt, ""]).unbind(0)
        emb_source = prior.embed([view_prompt(c.source_prompt, w) for w in VIEW_WORDS]) if edit else None
        rule, scale = guidance.get_rule(c.mode), c.scale()
        if c.mode == "csd" and c.negative_weight:
            rule = functools.partial(rule, negative_weight=c.negative_weight)
        # Priors that depend on the camera (analytic_prior.ShapePrior, a test prior) are told each step's views.
        see_views = getattr(prior, "see_views", None)

        # Every random view of the run is drawn up front on the CPU (reproducible on any device) and
        # moved to the device once: no host-device copy, hence no sync, inside the loop.
        plan = _sample_plan(c, prior.num_train_timesteps, device)
        noise_gen = torch.Generator(device).manual_seed(c.seed)
        losses: list[torch.Tensor] = []
        loss_values: list[float] = []
        timings["setup_s"] = time.perf_counter() - t_start - timings["load_model_s"]
        t_opt = time.perf_counter()
        step = 0
        last_loss = None
        for step in range(1, c.steps + 1):
            if self._cancel.is_set():
                step -= 1
                break
            views = slice((step - 1) * c.batch, step * c.batch)
            cams, light = _take(plan["cameras"], views), _take(plan["lighting"], views)
            t_dev, word = plan["t"][views], plan["word"][views]
            if see_views is not None:
                see_views(cams, light)

            with self._lock:
                tex = current()
            positions = base + offsets() if offsets is not None else base
            out = render_views(rasterizer, positions, triangles, uvs, tex, cams, render_size, light)
            # An edit encodes both renders with the same VAE sample noise too: independent draws would
            # differ at every texel and DDS would turn that difference into texel noise.
            enc_seed = (c.seed * 1_000_003 + step) % 2**63 if edit else None
            z = encode(out.image, _generator(device, enc_seed))
            noise = torch.randn(z.shape, generator=noise_gen, device=device, dtype=z.dtype)
            with torch.no_grad():
                latents = {"z": prior.add_noise(z.detach(), noise, t_dev)}
                if edit:  # the original texture on the original shape, same cameras, t and noise
                    ref = render_views(rasterizer, base, triangles, uvs, original, cams, render_size, light)
                    latents["ref"] = prior.add_noise(encode(ref.image, _generator(device, enc_seed)), noise, t_dev)
                embs = {"y": emb_views[word], "neg": emb_neg.expand(c.batch, -1, -1),
                        "0": emb_empty.expand(c.batch, -1, -1), "src": emb_source[word] if edit else None}
                g = rule(guidance.predict(prior, c.mode, latents, embs, t_dev, noise, c.negative_weight), scale)
            loss = guidance.distillation_loss(z, g)
            total = loss
            if offsets is not None:
                total = total + c.laplacian_weight * offsets.laplacian_loss() + \
                    c.normal_weight * offsets.normal_consistency_loss(base, triangles)
            total.backward()
            with self._lock:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())

            if step % c.progress_every == 0 or step == c.steps:
                loss_values.extend(torch.stack(losses).float().cpu().tolist())  # the one sync
                losses.clear()
                last_loss = loss_values[-1]
                elapsed_opt = time.perf_counter() - t_opt
                eta = elapsed_opt / step * (c.steps - step)
                report(Progress("optimizing", step, c.steps, last_loss, time.perf_counter() - t_start, eta, step / c.steps))
        if losses:
            loss_values.extend(torch.stack(losses).float().cpu().tolist())
        timings["optimize_s"] = time.perf_counter() - t_opt
        timings["steps_per_s"] = step / timings["optimize_s"] if timings["optimize_s"] > 0 else 0.0

        # Results: dilated texture, object-space offsets.
        t_fin = time.perf_counter()
        with torch.no_grad():
            final = to_uint8(dilate(current(), uv_coverage(uvs, size)))
            if region is not None:  # composited in uint8: the texels outside are the input's own bytes
                keep = ~region.cpu().numpy()
                final[keep] = np.asarray(self.init_texture)[:, :, :3][keep]
            offsets_obj = None
            if offsets is not None:
                offsets_obj = mesh_lib.render_offsets_to_object(mesh, transform, offsets().cpu().numpy()).astype(np.float32)
        timings["finish_s"] = time.perf_counter() - t_fin
        timings["total_s"] = time.perf_counter() - t_start
        if device.type == "cuda":
            timings["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        report(Progress("done", step, c.steps, last_loss, timings["total_s"], 0.0, 1.0))
        info = {"device": str(device), "dtype": str(prior.dtype).replace("torch.", ""), "renderer": rasterizer.name,
                "model": prior.model_id, "guidance_scale": scale, "render_size": render_size,
                "text": {"prompt": prior.prompt_report(c.prompt),
                         "negative_prompt": prior.prompt_report(c.negative_prompt)},
                "transform_center": transform.center.tolist(), "transform_scale": float(transform.scale),
                "mesh_warnings": list(mesh.warnings)}
        if edit:
            info["text"]["source_prompt"] = prior.prompt_report(c.source_prompt)
        if region is not None:
            info.update(masked_faces=int(self.face_mask.sum()), region_texels=int(region.sum()))
        return TextureResult(
            texture=final, uvs=mesh.uvs.astype(np.float32), uvs_generated=bool(mesh.uvs_generated),
            offsets=offsets_obj, mesh=mesh, config=c, losses=loss_values, steps_done=step,
            cancelled=step < c.steps, timings=timings, info=info,  # a cancel after the last step keeps the result
        )


def _sample_plan(c: TextureConfig, num_t: int, device) -> dict:
    """All random views of a run, ``steps * batch`` of them, on ``device``.

    ``t`` is drawn per view from ``[t_min, t_max(step)]`` (fractions of the ``num_t``-step
    schedule) with ``t_max`` annealed linearly from ``c.t_max`` to ``c.t_max_end`` over the run.
    """
    gen = torch.Generator().manual_seed(c.seed)
    n = c.steps * c.batch
    cams = sample_cameras(n, gen, CameraConfig())
    light = random_lighting(n, gen, eye=cams.eye)
    frac = torch.arange(c.steps, dtype=torch.float64).repeat_interleave(c.batch) / max(c.steps - 1, 1)
    t_max = c.t_max + (c.t_max_end - c.t_max) * frac
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    t = ((c.t_min + u * (t_max - c.t_min)) * num_t).long().clamp(0, num_t - 1)
    word = torch.tensor([VIEW_WORDS.index(w) for w in cams.view_words])
    return {"cameras": cams.to(device), "lighting": light.to(device), "t": t.to(device), "word": word.to(device)}


def _generator(device, seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device).manual_seed(seed)


def _take(batch, index: slice):
    """Rows ``index`` of a dataclass of per-view tensors (and lists), e.g. ``Cameras``, ``Lighting``."""
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[index] for f in dataclasses.fields(batch)})


def texture_mesh(mesh, config: TextureConfig, prior: Prior | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 init_texture: np.ndarray | None = None, face_mask: np.ndarray | None = None) -> TextureResult:
    """Texture ``mesh`` from ``config.prompt``: ``TextureJob(...).run(on_progress)``."""
    return TextureJob(mesh, config, prior, init_texture, face_mask).run(on_progress)


__all__ = ["TextureJob", "texture_mesh", "resolve_device", "device_info", "view_prompt", "VIEW_WORDS"]
