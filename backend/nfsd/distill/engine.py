"""The optimization loop: one engine behind the CLI, the server and the benchmarks.

Per step (docs/ARCHITECTURE.md, "Distillation rules"): random cameras -> render the textured (and displaced) mesh -> encode
with the prior's VAE or a tiny encoder (gradients flow) -> add noise at a random t per view -> ONE
batched UNet call on [prompt+view, negative, ""] (SDS, CSD: no negative; DDS: the original
texture's render under the source prompt too) -> distillation rule -> loss -> Adam step on the
texture (and offsets). The parts live in ``nfsd.distill.optimize`` (prepare / take_step / finish).

    job = TextureJob(mesh, TextureConfig(prompt="red and white stripes"))
    result = job.run(on_progress=print)     # job.cancel() / job.snapshot() from any thread
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np
import torch

from . import guidance
from .cancel_points import CancelPoints, StepCancelled
from ..errors import Cancelled, ConfigError, OutOfMemory
from ..geometry.unwrap import ensure_uvs
from ..priors.prior import Prior
from .config import Progress, TextureResult
from .image_files import to_uint8
from .init_maps import checked_init_maps
from .optimize import finish, prepare, sync_losses, take_step
from ..settings import TextureConfig
from .texture import as_face_mask


def device_info() -> dict:
    """``{"device", "gpu_name", "gpu_free_bytes"}`` for health reports."""
    if torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info()
        return {"device": "cuda", "gpu_name": torch.cuda.get_device_name(), "gpu_free_bytes": int(free)}
    return {"device": "cpu", "gpu_name": None, "gpu_free_bytes": None}


class TextureJob:
    """One texturing run. ``run`` in one thread; ``cancel`` and ``snapshot`` from any other.

    Args:
        mesh: the mesh (``nfsd.geometry.mesh.Mesh``); unwrapped with xatlas when it has no UVs.
        config: the settings (validated here).
        prior: an already loaded prior; default ``load_prior(config.model)`` (cached).
        init_texture: uint8 ``[H, W, 3]`` (row 0 bottom) to continue from, resized to ``texture_size``;
            required by the edit modes (``dds``) and by ``face_mask``.
        init_maps: a pbr run's initial ``roughness`` / ``metallic`` / ``normal`` maps (uint8, row 0 bottom, the
            size of ``init_texture``; ``nfsd.distill.init_maps``): the maps start from them, not from
            constants, and outside a face mask's region they come back bit-identical.
        face_mask: ``[F]`` bool, re-texture only these faces (default ``mesh.face_mask``): every texel
            outside ``texture.face_region`` of them comes back bit-identical to ``init_texture``
            (which then sets the texture size), and only their vertices move. The renders show the
            whole object, so the prior sees the region in context.
    """

    def __init__(self, mesh, config: TextureConfig, prior: Prior | None = None, init_texture: np.ndarray | None = None,
                 face_mask: np.ndarray | None = None, init_maps: dict | None = None):
        config.validate()
        self.config = config
        self.mesh = ensure_uvs(mesh)
        self.prior = prior
        self.init_texture = init_texture
        self.init_maps = checked_init_maps(init_maps, init_texture, config.material, config.normal_map)
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
        self._drop_result = False
        self._lock = threading.Lock()
        self._texture: Callable[[], torch.Tensor] | None = None

    def cancel(self) -> None:
        """Ask ``run`` to stop: the step in progress is dropped at its next cancel point (within about one
        view's work, ``nfsd.distill.cancel_points``); it returns the result of the last whole step."""
        self._cancel.set()

    def abort(self) -> None:
        """``cancel``, and ``run`` raises ``nfsd.errors.Cancelled`` instead of finishing a result nobody
        wants: dilating and covering a 4096 texture takes minutes on a CPU (a server's cancel). A run
        whose steps were all done keeps its result."""
        self._drop_result = True
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def snapshot(self) -> np.ndarray | None:
        """The current texture (a pbr run's base colour), uint8 ``[H, W, 3]`` row 0 bottom (not dilated); None
        before the first step."""
        with self._lock:
            if self._texture is None:
                return None
            with torch.no_grad():
                return to_uint8(self._texture()[..., :3])  # a pbr run's base colour

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
        run = prepare(self, report)
        with self._lock:
            self._texture = run.current
        run.t_opt = time.perf_counter()
        step, last_loss = 0, None
        points = CancelPoints(self._cancel.is_set, fine=run.device.type == "cpu")
        for step in range(1, c.steps + 1):
            try:
                points.check()
                run.losses.append(take_step(run, step, self._lock, points))
            except StepCancelled:  # the step in progress is dropped whole: parameters as after step - 1
                step -= 1
                break
            if step % c.progress_every == 0 or step == c.steps:
                last_loss = sync_losses(run)
                elapsed_opt = time.perf_counter() - run.t_opt
                eta = elapsed_opt / step * (c.steps - step)
                report(Progress("optimizing", step, c.steps, last_loss, time.perf_counter() - run.t_start, eta,
                                step / c.steps))
        sync_losses(run)
        if step < c.steps and self._drop_result:
            raise Cancelled(f"cancelled after {step} of {c.steps} steps")
        run.timings["optimize_s"] = time.perf_counter() - run.t_opt
        run.timings["steps_per_s"] = step / run.timings["optimize_s"] if run.timings["optimize_s"] > 0 else 0.0
        return finish(run, step, last_loss, self.init_texture, self.face_mask, report, self.init_maps)


def texture_mesh(mesh, config: TextureConfig, prior: Prior | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 init_texture: np.ndarray | None = None, face_mask: np.ndarray | None = None,
                 init_maps: dict | None = None) -> TextureResult:
    """Texture ``mesh`` from ``config.prompt``: ``TextureJob(...).run(on_progress)``."""
    return TextureJob(mesh, config, prior, init_texture, face_mask, init_maps).run(on_progress)


__all__ = ["TextureJob", "texture_mesh", "device_info"]
