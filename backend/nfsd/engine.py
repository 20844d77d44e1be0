"""The optimization loop: one engine behind the CLI, the server and the benchmarks.

Per step (shared/DESIGN.md): random cameras -> render the textured (and displaced) mesh -> encode
with the prior's VAE or a tiny encoder (gradients flow) -> add noise at a random t per view -> ONE
batched UNet call on [prompt+view, negative, ""] (SDS, CSD: no negative) -> distillation rule -> loss
-> Adam step on the texture (and offsets).

    job = TextureJob(mesh, TextureConfig(prompt="red and white stripes"))
    result = job.run(on_progress=print)     # job.cancel() / job.snapshot() from any thread
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import guidance, mesh as mesh_lib
from .cameras import CameraConfig, sample_cameras
from .errors import ConfigError, NfsdError, OutOfMemory
from .fast_encoder import gradient_encoder
from .guidance import NFSD_NEGATIVE_PROMPT, Predictions
from .limits import SETTING_RANGES
from .lora import apply_loras, normalize_loras
from .offsets import NormalOffsets
from .prior import Prior, load_prior
from .renderer import get_rasterizer, random_lighting, render_views
from .texture import PARAMETRIZATIONS, dilate, from_uint8, make_texture, to_uint8, uv_coverage

VIEW_WORDS = ("front", "side", "back", "overhead")


@dataclass
class TextureConfig:
    """Everything a texturing run depends on. Defaults work; ``validate`` explains bad values.

    The first block mirrors the CLI options and the server's ``settings`` keys.
    """

    prompt: str = ""
    negative_prompt: str = NFSD_NEGATIVE_PROMPT
    mode: str = "nfsd"                    # nfsd | sds | csd
    steps: int = 400
    texture_size: int = 1024
    render_size: int | None = None        # None: the model's own (512 SD 1.x/2.x, 1024 SDXL)
    batch: int = 1
    guidance_scale: float | None = None   # None: the mode's default (nfsd 7.5, sds 100, csd 7.5)
    offsets: bool = False
    offset_strength: float = 0.03         # max |offset|, fraction of the bounding-sphere radius
    seed: int = 0
    model: str = "builtin"
    device: str = "auto"                  # auto | cpu | cuda
    # Advanced.
    renderer: str = "auto"                # auto | torch | nvdiffrast
    parametrization: str = "pyramid"      # pyramid | pixels
    lr: float = 0.02                      # texture learning rate (Adam, on logits)
    offset_lr: float = 0.01               # offsets learning rate (Adam, on the tanh argument)
    t_min: float = 0.02                   # fraction of the schedule
    t_max: float = 0.98                   # at step 0 ...
    t_max_end: float = 0.5                # ... annealed linearly down to this at the last step
    laplacian_weight: float = 1e3
    normal_weight: float = 1e2
    half_precision: bool = True           # float16 networks on CUDA (texture stays float32)
    channels_last: bool = True            # CUDA: channels_last convolutions
    compile: bool = False                 # CUDA: torch.compile the UNet and VAE encoder (slow first steps)
    progress_every: int = 5               # read the loss (a host-device sync) every N steps
    model_config: str | None = None       # diffusers config folder for single-file checkpoints
    negative_weight: float = 0.0          # csd: weight of the negative prompt's classifier score (0: batch 2)
    loras: list = field(default_factory=list)  # [{"path": file, "weight": 1.0}, ...] (nfsd.lora)
    encoder: str = "full"                 # full | tiny: the autoencoder on the gradient path (nfsd.fast_encoder)
    tiny_encoder: str | None = None       # AutoencoderTiny folder; default: the model folder's vae_tiny/

    LIMITS = {  # field: (min, max) inclusive; the user-facing ones are shared with the server (nfsd.limits)
        **SETTING_RANGES,
        "lr": (0.0, 10.0), "offset_lr": (0.0, 10.0), "t_min": (0.0, 1.0), "t_max": (0.0, 1.0),
        "t_max_end": (0.0, 1.0), "progress_every": (1, 100_000), "negative_weight": (0.0, 100.0),
    }

    def scale(self) -> float:
        return guidance.DEFAULT_SCALES[self.mode] if self.guidance_scale is None else float(self.guidance_scale)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first bad field and what it accepts."""
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ConfigError("prompt is empty: describe the texture, e.g. 'red and white stripes'")
        guidance.get_rule(self.mode)
        for name, (lo, hi) in self.LIMITS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if not lo <= value <= hi:
                raise ConfigError(f"{name}={value} is out of range: allowed {lo}..{hi}")
        if not self.t_min < self.t_max_end <= self.t_max:
            raise ConfigError(f"need t_min < t_max_end <= t_max, got {self.t_min}, {self.t_max_end}, {self.t_max}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.renderer not in ("auto", "torch", "nvdiffrast"):
            raise ConfigError(f"renderer must be auto, torch or nvdiffrast, got {self.renderer!r}")
        if self.encoder not in ("full", "tiny"):
            raise ConfigError(f"encoder must be full or tiny, got {self.encoder!r}")
        self.loras = normalize_loras(self.loras)
        if self.parametrization not in PARAMETRIZATIONS:
            raise ConfigError(f"parametrization must be one of {', '.join(PARAMETRIZATIONS)}, got {self.parametrization!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TextureConfig":
        """Build from a plain dict (JSON); unknown keys and wrong types raise ``ConfigError``."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(fields)}")
        return cls(**data)


@dataclass
class Progress:
    """What a progress callback receives."""

    phase: str            # "loading" | "optimizing" | "done"
    step: int
    total: int
    loss: float | None
    elapsed: float        # seconds since run() started
    eta: float | None     # seconds to the end of the optimization
    fraction: float       # 0..1 within the phase


@dataclass
class TextureResult:
    """The outcome of a run (also of a cancelled one: what existed when it stopped)."""

    texture: np.ndarray             # uint8 [Ht, Wt, 3], row 0 bottom, UV islands dilated
    uvs: np.ndarray                 # [F, 3, 2] float32 per-corner UVs the texture is laid out on
    uvs_generated: bool
    offsets: np.ndarray | None      # [V, 3] float32 object space, Blender's vertex order
    mesh: "mesh_lib.Mesh"
    config: TextureConfig
    losses: list[float] = field(default_factory=list)
    steps_done: int = 0
    cancelled: bool = False
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


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
        mesh: the mesh (``nfsd.mesh.Mesh``); unwrapped with xatlas when it has no UVs.
        config: the settings (validated here).
        prior: an already loaded prior; default ``load_prior(config.model)`` (cached).
        init_texture: uint8 ``[H, W, 3]`` (row 0 bottom) to continue from, resized to ``texture_size``.
    """

    def __init__(self, mesh, config: TextureConfig, prior: Prior | None = None, init_texture: np.ndarray | None = None):
        config.validate()
        self.config = config
        self.mesh = mesh_lib.ensure_uvs(mesh)
        self.prior = prior
        self.init_texture = init_texture
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._texture: torch.nn.Module | None = None

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
        encode = gradient_encoder(prior, c.encoder, c.tiny_encoder)
        prior.tune(channels_last=c.channels_last, compile=c.compile)
        render_size = c.render_size or prior.default_render_size
        timings["load_model_s"] = time.perf_counter() - t_start

        # Geometry in render space (world axes, unit bounding sphere).
        mesh = self.mesh
        transform = mesh_lib.framing_transform(mesh)  # loose vertices ignored
        base = torch.from_numpy(transform.apply(mesh.world_positions()).astype(np.float32)).to(device)
        triangles = torch.from_numpy(mesh.triangles.astype(np.int32)).to(device)
        uvs = torch.from_numpy(mesh.uvs.astype(np.float32)).to(device)
        rasterizer = get_rasterizer(c.renderer, device)

        # Parameters.
        init = from_uint8(self.init_texture, c.texture_size).to(device) if self.init_texture is not None else None
        torch.manual_seed(c.seed)
        texture = make_texture(c.parametrization, c.texture_size, init).to(device)
        params = [{"params": texture.parameters(), "lr": c.lr}]
        offsets = None
        if c.offsets and c.offset_strength > 0:
            offsets = NormalOffsets(base, triangles, c.offset_strength).to(device)
            params.append({"params": offsets.parameters(), "lr": c.offset_lr})
        optimizer = torch.optim.Adam(params, betas=(0.9, 0.99), eps=1e-15)
        with self._lock:
            self._texture = texture

        # Prompt embeddings, once per run: one per view word, the negative prompt, the empty prompt.
        # Any length: long prompts take several text windows, and torch.cat pads to a common length.
        emb_views = prior.embed([view_prompt(c.prompt, w) for w in VIEW_WORDS])
        emb_neg, emb_empty = prior.embed([c.negative_prompt, ""]).unbind(0)
        rule, scale = guidance.get_rule(c.mode), c.scale()
        if c.mode == "csd" and c.negative_weight:
            rule = functools.partial(rule, negative_weight=c.negative_weight)
        # SDS and CSD do not read the negative branch: the UNet call is then batch 2 per view, not 3.
        use_neg = guidance.needs_negative(c.mode, c.negative_weight)

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

            with self._lock:
                tex = texture()
            positions = base + offsets() if offsets is not None else base
            out = render_views(rasterizer, positions, triangles, uvs, tex, cams, render_size, light)
            z = encode(out.image)
            noise = torch.randn(z.shape, generator=noise_gen, device=device, dtype=z.dtype)
            with torch.no_grad():
                z_t = prior.add_noise(z.detach(), noise, t_dev)
                embs = [emb_views[word]] + [emb_neg.expand(c.batch, -1, -1)] * use_neg + \
                    [emb_empty.expand(c.batch, -1, -1)]
                k = len(embs)
                e = prior.predict_eps(torch.cat([z_t] * k), torch.cat([t_dev] * k), torch.cat(embs)).chunk(k)
                e_y, e_neg, e_0 = e[0], e[1] if use_neg else None, e[-1]
                g = rule(Predictions(e_y, e_neg, e_0, noise, t_dev, prior.alphas_cumprod), scale)
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
            final = texture()
            mask = uv_coverage(uvs, c.texture_size)
            final = dilate(final, mask)
            offsets_obj = None
            if offsets is not None:
                offsets_obj = mesh_lib.render_offsets_to_object(mesh, transform, offsets().cpu().numpy()).astype(np.float32)
        timings["finish_s"] = time.perf_counter() - t_fin
        timings["total_s"] = time.perf_counter() - t_start
        if device.type == "cuda":
            timings["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        report(Progress("done", step, c.steps, last_loss, timings["total_s"], 0.0, 1.0))
        return TextureResult(
            texture=to_uint8(final), uvs=mesh.uvs.astype(np.float32), uvs_generated=bool(mesh.uvs_generated),
            offsets=offsets_obj, mesh=mesh, config=c, losses=loss_values, steps_done=step,
            cancelled=step < c.steps, timings=timings,  # a cancel after the last step keeps the result
            info={"device": str(device), "dtype": str(prior.dtype).replace("torch.", ""), "renderer": rasterizer.name,
                  "model": prior.model_id, "guidance_scale": scale, "render_size": render_size,
                  "text": {"prompt": prior.prompt_report(c.prompt),
                           "negative_prompt": prior.prompt_report(c.negative_prompt)}, "transform_center": transform.center.tolist(),
                  "transform_scale": float(transform.scale), "mesh_warnings": list(mesh.warnings)},
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


def _take(batch, index: slice):
    """Rows ``index`` of a dataclass of per-view tensors (and lists), e.g. ``Cameras``, ``Lighting``."""
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[index] for f in dataclasses.fields(batch)})


def texture_mesh(mesh, config: TextureConfig, prior: Prior | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 init_texture: np.ndarray | None = None) -> TextureResult:
    """Texture ``mesh`` from ``config.prompt``: ``TextureJob(...).run(on_progress)``."""
    return TextureJob(mesh, config, prior, init_texture).run(on_progress)


__all__ = [
    "TextureConfig", "TextureJob", "TextureResult", "Progress", "texture_mesh", "resolve_device", "device_info",
    "NFSD_NEGATIVE_PROMPT", "VIEW_WORDS", "NfsdError",
]
