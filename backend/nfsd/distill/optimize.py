"""One texturing run in three parts over a :class:`Run` state: ``prepare`` (model, geometry in render
space, parameters, prompt embeddings, every random view), ``take_step`` (one optimization step) and
``finish`` (dilated texture, object-space offsets, timings, the report). ``TextureJob._run`` loops.

Spaces and shapes: ``base`` [V, 3] float32 vertex positions in render space (world axes, the mesh in
the unit bounding sphere: ``mesh.framing_transform``), ``triangles`` [F, 3] int32, ``uvs`` [F, 3, 2]
float32 per corner with (0, 0) bottom-left; textures [S, S, 3] float in [0, 1] with row 0 = bottom.
The order of every random draw is part of the contract: a seed gives the same texture, bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import guidance
from ..errors import ConfigError
from ..geometry import mesh as mesh_lib
from ..priors.fast_encoder import gradient_encoder
from ..priors.lora import apply_loras
from ..priors.prior import load_prior
from ..render.cameras import CameraConfig, sample_cameras
from ..render.renderer import get_rasterizer, random_lighting, render_views
from ..render.shading import material_channels, random_pbr_lighting
from .cancel_points import CancelPoints
from .config import Progress, TextureResult
from ..settings import TextureConfig
from .image_files import from_uint8, to_uint8
from .init_maps import keep_outside, start_channels
from . import material as material_lib
from .offsets import NormalOffsets
from .texels import dilate, uv_coverage
from .texture import face_region, make_texture

VIEW_WORDS = ("front", "side", "back", "overhead")


def view_prompt(prompt: str, word: str) -> str:
    """The prompt for one view: ``"<prompt>, <word> view"``."""
    return f"{prompt}, {word} view"


@dataclass
class Run:
    """What the steps of one run share. ``current()`` is the texture the renders show ([S, S, 3]; with
    a face mask the initial texture outside ``region``); ``original`` its step-0 render (edits only)."""

    config: TextureConfig
    prior: object
    device: torch.device
    encode: Callable
    render_size: int
    edit: bool
    mesh: object
    transform: object
    base: torch.Tensor
    triangles: torch.Tensor
    uvs: torch.Tensor
    rasterizer: object
    size: int
    region: torch.Tensor | None
    covered: torch.Tensor | None  # [S, S] bool texels some face covers (pbr regularizers); None for albedo
    current: Callable[[], torch.Tensor]
    offsets: NormalOffsets | None
    optimizer: torch.optim.Optimizer
    original: torch.Tensor | None
    embeddings: dict
    rule: Callable
    scale: float
    see_views: Callable | None
    plan: dict
    noise_gen: torch.Generator
    t_start: float
    timings: dict = field(default_factory=dict)
    losses: list = field(default_factory=list)        # per-step loss tensors since the last sync
    loss_values: list = field(default_factory=list)   # floats, synced
    t_opt: float = 0.0


def prepare(job, report: Callable[[Progress], None]) -> Run:
    """Load the prior (cached on ``job``), frame the mesh, make the parameters, embed the prompts and
    draw every view of the run. ``job``: a ``TextureJob`` (config, mesh, prior, init_texture, face_mask)."""
    c = job.config
    t_start = time.perf_counter()
    device = resolve_device(c.device)
    timings: dict[str, float] = {}
    if device.type == "cuda":  # this job's own peak (a server's worker runs many jobs)
        torch.cuda.reset_peak_memory_stats(device)

    if job.prior is None:
        def on_load(name, i, n):
            report(Progress("loading", i, n, None, time.perf_counter() - t_start, None, i / max(n, 1)))

        dtype = None if c.half_precision else torch.float32
        job.prior = load_prior(c.model, device, dtype, progress=on_load, config=c.model_config)
    prior = job.prior
    device = prior.device
    apply_loras(prior, c.loras)  # also takes off the LoRAs an earlier job left on the cached model
    grad_encode = gradient_encoder(prior, c.encoder, c.tiny_encoder)
    prior.tune(channels_last=c.channels_last, compile=c.compile)

    def encode(images, generator=None):  # the full VAE samples: an edit passes both renders one draw
        return prior.encode(images, generator) if c.encoder == "full" else grad_encode(images)
    timings["load_model_s"] = time.perf_counter() - t_start

    # Geometry in render space (world axes, unit bounding sphere).
    mesh = job.mesh
    transform = mesh_lib.framing_transform(mesh)  # loose vertices ignored
    base = torch.from_numpy(transform.apply(mesh.world_positions()).astype(np.float32)).to(device)
    triangles = torch.from_numpy(mesh.triangles.astype(np.int32)).to(device)
    uvs = torch.from_numpy(mesh.uvs.astype(np.float32)).to(device)
    rasterizer = get_rasterizer(c.renderer, device)

    # Parameters. With a face mask the texture keeps the initial texture's own size (texel for texel).
    size = np.asarray(job.init_texture).shape[0] if job.face_mask is not None else c.texture_size
    init = from_uint8(job.init_texture, size).to(device) if job.init_texture is not None else None
    pbr = c.material == "pbr"
    if pbr:  # one texture of base colour, roughness, metallic (, normal): the initial texture is the base colour
        init = material_lib.initial_material(init, size, c.normal_map, start_channels(job.init_maps, size)).to(device)
    torch.manual_seed(c.seed)
    texture = make_texture(c.parametrization, size, init, surface=(base, triangles, uvs),
                           channels=material_channels(c.normal_map) if pbr else 3).to(device)
    params = [{"params": texture.parameters(), "lr": c.lr}]
    region = None
    if job.face_mask is not None:
        region = face_region(uvs, torch.from_numpy(job.face_mask).to(device), size)

        def current():  # outside the region the initial texture, exactly; gradients reach the region only
            return torch.where(region[..., None], texture(), init)
    else:
        current = texture
    offsets = None
    if c.offsets and c.offset_strength > 0:
        movable = None if job.face_mask is None else \
            torch.from_numpy(np.unique(mesh.triangles[job.face_mask])).to(device)
        offsets = NormalOffsets(base, triangles, c.offset_strength, movable=movable).to(device)
        params.append({"params": offsets.parameters(), "lr": c.offset_lr})
    optimizer = torch.optim.Adam(params, betas=(0.9, 0.99), eps=1e-15)
    edit = c.mode in guidance.EDIT_MODES
    # The original texture, as the parametrization renders it: at step 0 both DDS branches see
    # the very same image, so where the prompts agree the gradient is exactly zero.
    original = current().detach() if edit else None

    # Prompt embeddings, once per run: one per view word, the negative prompt, the empty prompt
    # (and, to edit, the source prompt per view word). Any length: long prompts take several
    # text windows, and torch.cat pads to a common length.
    emb_views = prior.embed([view_prompt(c.prompt, w) for w in VIEW_WORDS])
    emb_neg, emb_empty = prior.embed([c.negative_prompt, ""]).unbind(0)
    emb_source = prior.embed([view_prompt(c.source_prompt, w) for w in VIEW_WORDS]) if edit else None
    rule, scale = guidance.get_rule(c.mode), c.scale()
    if c.mode == "csd" and c.negative_weight:
        rule = functools.partial(rule, negative_weight=c.negative_weight)

    # Every random view of the run is drawn up front on the CPU (reproducible on any device) and
    # moved to the device once: no host-device copy, hence no sync, inside the loop.
    plan = sample_plan(c, prior.num_train_timesteps, device)
    noise_gen = torch.Generator(device).manual_seed(c.seed)
    timings["setup_s"] = time.perf_counter() - t_start - timings["load_model_s"]
    return Run(config=c, prior=prior, device=device, encode=encode,
               render_size=c.render_size or prior.default_render_size, edit=edit, mesh=mesh, transform=transform,
               base=base, triangles=triangles, uvs=uvs, rasterizer=rasterizer, size=size, region=region,
               covered=uv_coverage(uvs, size) if pbr else None,
               current=current, offsets=offsets, optimizer=optimizer, original=original,
               embeddings={"views": emb_views, "neg": emb_neg, "empty": emb_empty, "source": emb_source},
               rule=rule, scale=scale, see_views=getattr(prior, "see_views", None),  # camera-aware test priors
               plan=plan, noise_gen=noise_gen, t_start=t_start, timings=timings)


def take_step(run: Run, step: int, lock, points: CancelPoints | None = None) -> torch.Tensor:
    """Optimization step ``step`` (1-based): render -> encode -> noise -> one batched prediction ->
    distillation rule -> backward -> Adam. Returns the step's loss (not synced). ``points`` may raise
    ``StepCancelled`` anywhere before the update (``nfsd.distill.cancel_points``); ``lock`` guards the
    parameters against ``snapshot`` from other threads."""
    points = points or CancelPoints(lambda: False, fine=False)
    with points.watching():
        loss = _loss_and_gradients(run, step, lock, points.check)
    points.check()
    with lock:
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    return loss


def _loss_and_gradients(run: Run, step: int, lock, check: Callable[[], None]) -> torch.Tensor:
    c, prior, device, e = run.config, run.prior, run.device, run.embeddings
    views = slice((step - 1) * c.batch, step * c.batch)
    cams, light = take(run.plan["cameras"], views), take(run.plan["lighting"], views)
    t_dev, word = run.plan["t"][views], run.plan["word"][views]
    if run.see_views is not None:
        run.see_views(cams, light)

    with lock:
        tex = run.current()
    positions = run.base + run.offsets() if run.offsets is not None else run.base
    out = render_views(run.rasterizer, positions, run.triangles, run.uvs, tex, cams, run.render_size, light)
    check()
    # An edit encodes both renders with the same VAE sample noise too: independent draws would
    # differ at every texel and DDS would turn that difference into texel noise.
    enc_seed = (c.seed * 1_000_003 + step) % 2**63 if run.edit else None
    z = run.encode(out.image, generator(device, enc_seed))
    noise = torch.randn(z.shape, generator=run.noise_gen, device=device, dtype=z.dtype)
    check()
    with torch.no_grad():
        latents = {"z": prior.add_noise(z.detach(), noise, t_dev)}
        if run.edit:  # the original texture on the original shape, same cameras, t and noise
            ref = render_views(run.rasterizer, run.base, run.triangles, run.uvs, run.original, cams,
                               run.render_size, light)
            latents["ref"] = prior.add_noise(run.encode(ref.image, generator(device, enc_seed)), noise, t_dev)
        embs = {"y": e["views"][word], "neg": e["neg"].expand(c.batch, -1, -1),
                "0": e["empty"].expand(c.batch, -1, -1), "src": e["source"][word] if run.edit else None}
        g = run.rule(guidance.predict(prior, c.mode, latents, embs, t_dev, noise, c.negative_weight), run.scale)
    check()
    loss = guidance.distillation_loss(z, g)
    total = loss
    if run.offsets is not None:
        total = total + c.laplacian_weight * run.offsets.laplacian_loss() + \
            c.normal_weight * run.offsets.normal_consistency_loss(run.base, run.triangles)
    if run.covered is not None:
        total = total + material_lib.regularization(tex, run.covered, c.material_smoothness,
                                                     c.metallic_binary * step / c.steps,  # ramped in: decide late
                                                     c.batch * run.render_size ** 2, c.normal_smoothness)
    total.backward()
    return loss.detach()


def sync_losses(run: Run) -> float | None:
    """Move the step losses since the last call to the host (the one sync); the latest, or None."""
    if run.losses:
        run.loss_values.extend(torch.stack(run.losses).float().cpu().tolist())
        run.losses.clear()
    return run.loss_values[-1] if run.loss_values else None


def finish(run: Run, step: int, last_loss: float | None, init_texture, face_mask,
           report: Callable[[Progress], None], init_maps: dict | None = None) -> TextureResult:
    """The result after ``step`` steps: dilated uint8 texture (the input's own bytes outside a face
    mask's region, and ``init_maps``' bytes in a pbr run's maps), object-space offsets, timings and the
    report's info."""
    c, prior, timings, mesh, region = run.config, run.prior, run.timings, run.mesh, run.region
    t_fin = time.perf_counter()
    with torch.no_grad():
        final = to_uint8(dilate(run.current(), uv_coverage(run.uvs, run.size)))
        if region is not None:  # composited in uint8: the texels outside are the input's own bytes
            keep = ~region.cpu().numpy()
            final[keep, :3] = np.asarray(init_texture)[:, :, :3][keep]  # (a pbr run's other maps: their start)
        else:
            keep = None
        offsets_obj = None
        if run.offsets is not None:
            offsets_obj = mesh_lib.render_offsets_to_object(mesh, run.transform, run.offsets().cpu().numpy()).astype(np.float32)
    timings["finish_s"] = time.perf_counter() - t_fin
    timings["total_s"] = time.perf_counter() - run.t_start
    if run.device.type == "cuda":
        timings["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(run.device) / 1e9
    report(Progress("done", step, c.steps, last_loss, timings["total_s"], 0.0, 1.0))
    info = {"device": str(run.device), "dtype": str(prior.dtype).replace("torch.", ""), "renderer": run.rasterizer.name,
            "model": prior.model_id, "guidance_scale": run.scale, "render_size": run.render_size,
            "text": {"prompt": prior.prompt_report(c.prompt),
                     "negative_prompt": prior.prompt_report(c.negative_prompt)},
            "transform_center": run.transform.center.tolist(), "transform_scale": float(run.transform.scale),
            "mesh_warnings": list(mesh.warnings)}
    if run.edit:
        info["text"]["source_prompt"] = prior.prompt_report(c.source_prompt)
    if region is not None:
        info.update(masked_faces=int(face_mask.sum()), region_texels=int(region.sum()))
    final, maps = material_lib.split_maps(final) if c.material == "pbr" else (final, {})
    if keep is not None and maps:  # initial maps outside the region: their own bytes, exactly
        maps = keep_outside(maps, init_maps, keep)
    if maps:
        info["material"] = {"kind": "pbr", "maps": sorted(maps)}
    return TextureResult(
        texture=final, maps=maps, uvs=mesh.uvs.astype(np.float32), uvs_generated=bool(mesh.uvs_generated),
        offsets=offsets_obj, mesh=mesh, config=c, losses=run.loss_values, steps_done=step,
        cancelled=step < c.steps, timings=timings, info=info,  # a cancel after the last step keeps the result
    )


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU. Asking for CUDA without one raises ``ConfigError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda was requested but no CUDA GPU is visible to PyTorch; use --device cpu")
    return torch.device(name)


def sample_plan(c: TextureConfig, num_t: int, device) -> dict:
    """All random views of a run, ``steps * batch`` of them, on ``device``.

    ``t`` is drawn per view from ``[t_min, t_max(step)]`` (fractions of the ``num_t``-step
    schedule) with ``t_max`` annealed linearly from ``c.t_max`` to ``c.t_max_end`` over the run.
    """
    gen = torch.Generator().manual_seed(c.seed)
    n = c.steps * c.batch
    cams = sample_cameras(n, gen, CameraConfig())
    light = random_lighting(n, gen, eye=cams.eye)
    if c.material == "pbr":  # drawn apart, so the cameras and noise levels stay those of an albedo run
        light = random_pbr_lighting(n, torch.Generator().manual_seed(c.seed + 0x9E3779B9), eye=cams.eye)
    frac = torch.arange(c.steps, dtype=torch.float64).repeat_interleave(c.batch) / max(c.steps - 1, 1)
    t_max = c.t_max + (c.t_max_end - c.t_max) * frac
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    t = ((c.t_min + u * (t_max - c.t_min)) * num_t).long().clamp(0, num_t - 1)
    word = torch.tensor([VIEW_WORDS.index(w) for w in cams.view_words])
    return {"cameras": cams.to(device), "lighting": light.to(device), "t": t.to(device), "word": word.to(device)}


def generator(device, seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device).manual_seed(seed)


def take(batch, index: slice):
    """Rows ``index`` of a dataclass of per-view tensors (and lists), e.g. ``Cameras``, ``Lighting``."""
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[index] for f in dataclasses.fields(batch)})
