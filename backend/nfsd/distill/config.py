"""What a texturing run depends on and what it returns: ``TextureConfig``, ``Progress``, ``TextureResult``.

The engine (``nfsd.distill.engine``) re-exports all three; the CLI options and the server's ``settings``
keys mirror ``TextureConfig``'s first block.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from . import guidance
from ..geometry import mesh as mesh_lib
from ..errors import ConfigError
from .guidance import NFSD_NEGATIVE_PROMPT
from ..limits import SETTING_RANGES
from ..priors.lora import normalize_loras
from .texture import PARAMETRIZATIONS


# What `nfsd texture` uses with the built-in prior for the options left out: TextureConfig's
# defaults are sized for Stable Diffusion on a GPU (a 512 px render is 64x the pixels the built-in
# prior's 64 px views need). These render at twice its size (antialiased); 600 steps are where the
# demo's bands become stripes; the surface field cuts the seam mismatch on real meshes ~10x at no
# loss of prompt accuracy (BENCHMARKS.md, "Real meshes"); the texture learning rate twice
# TextureConfig's gives crisper stripe edges on the demo (3 seeds) and more recognisable results on
# the real meshes (8 paired runs: 3 better, none worse) at ~20% more seam mismatch (BENCHMARKS.md,
# "Seams", end). Batch 2: batch 4 gave the demo cleaner sides but painted dark lines into red and
# one wide band round the box (BENCHMARKS.md, "Cameras"). About 2 minutes on one CPU core.
BUILTIN_PRIOR_DEFAULTS = {"steps": 600, "texture_size": 256, "render_size": 128, "batch": 2, "parametrization": "surface",
                          "lr": 0.04}


@dataclass
class TextureConfig:
    """Everything a texturing run depends on. Defaults work; ``validate`` explains bad values.

    The first block mirrors the CLI options and the server's ``settings`` keys.
    """

    prompt: str = ""
    negative_prompt: str = NFSD_NEGATIVE_PROMPT
    mode: str = "nfsd"                    # nfsd | sds | csd | dds (edit the initial texture)
    source_prompt: str = ""               # dds: what the initial texture shows (the prompt it was made with)
    steps: int = 400
    texture_size: int = 1024
    render_size: int | None = None        # None: the model's own (512 SD 1.x/2.x, 1024 SDXL)
    batch: int = 1
    guidance_scale: float | None = None   # None: the mode's default (nfsd 7.5, sds 100, csd 7.5, dds 7.5)
    offsets: bool = False
    offset_strength: float = 0.1          # max |offset|, fraction of the bounding-sphere radius (BENCHMARKS.md)
    seed: int = 0
    model: str = "builtin"
    device: str = "auto"                  # auto | cpu | cuda
    # Advanced.
    renderer: str = "auto"                # auto | torch | nvdiffrast
    parametrization: str = "pyramid"      # pyramid | pixels | surface (nfsd.distill.surface_field: seamless, BENCHMARKS.md)
    lr: float = 0.02                      # texture learning rate (Adam, on logits)
    offset_lr: float = 0.05               # offsets learning rate (Adam, on the tanh argument)
    t_min: float = 0.02                   # fraction of the schedule
    t_max: float = 0.98                   # at step 0 ...
    t_max_end: float = 0.5                # ... annealed linearly down to this at the last step
    laplacian_weight: float = 1e2         # 1e3 / 1e2 held a wanted bump to 28 % (BENCHMARKS.md)
    normal_weight: float = 1e1
    half_precision: bool = True           # float16 networks on CUDA (texture stays float32)
    channels_last: bool = True            # CUDA: channels_last convolutions
    compile: bool = False                 # CUDA: torch.compile the UNet and VAE encoder (slow first steps)
    progress_every: int = 5               # read the loss (a host-device sync) every N steps
    model_config: str | None = None       # diffusers config folder for single-file checkpoints
    negative_weight: float = 0.0          # csd: weight of the negative prompt's classifier score (0: batch 2)
    loras: list = field(default_factory=list)  # [{"path": file, "weight": 1.0}, ...] (nfsd.priors.lora)
    encoder: str = "full"                 # full | tiny: the autoencoder on the gradient path (nfsd.priors.fast_encoder)
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
        if self.mode in guidance.EDIT_MODES and (not isinstance(self.source_prompt, str) or not self.source_prompt.strip()):
            raise ConfigError(f"mode {self.mode} edits a texture and needs source_prompt: what the current texture "
                              "shows (the prompt it was made with), e.g. 'red and white stripes'")
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


__all__ = ["TextureConfig", "Progress", "TextureResult"]
