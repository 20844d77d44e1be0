"""Every setting of a texturing job, declared once, and the one resolver every face goes through.

A setting is a field of :class:`TextureConfig` declared with :func:`setting`: its name, type,
default, range or choices, multiple-of, help, per-family defaults and the faces that expose it
(``cli``: an ``nfsd texture`` option; ``api``: a key of ``POST /jobs``'s settings; ``panel``: a
control of the Blender add-on, which sends it through the API). From that one declaration come:

- the CLI's options (:func:`nfsd.cli_args.add_setting_options`),
- the API's pydantic model (:func:`nfsd.server.schemas.job_settings_model`),
- the checks of :meth:`TextureConfig.validate`,
- docs/API.md's settings table (``nfsd.server.api_doc``; ``python -m nfsd.server.api_doc --write docs/API.md``).

A request is partial: what it leaves out takes the model family's default (e.g. the built-in
prior's 600 steps at 128 px, see ``TextureConfig.steps``), else the declaration's default.
:func:`resolve` is that rule; the CLI, the server and the benchmarks call it, and the report of a
run records the resolved config, so the same choices give the same settings whichever face they
came through.

    >>> cfg = resolve({"prompt": "red and white stripes"})        # the built-in prior
    >>> cfg.steps, cfg.texture_size, cfg.render_size, cfg.parametrization
    (600, 256, 128, 'surface')
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .distill.guidance import DEFAULT_SCALES, EDIT_MODES, NFSD_NEGATIVE_PROMPT
from .distill.texture import PARAMETRIZATIONS
from .errors import ConfigError
from .limits import MAX_PROMPT_CHARS
from .priors.lora import normalize_loras

CLI, API, PANEL = "cli", "api", "panel"
BUILTIN = "builtin"  # the family (and model name) of the shipped prior


@dataclass(frozen=True)
class Setting:
    """One setting as declared (read it from ``SETTINGS``; declare it with :func:`setting`)."""

    name: str
    kind: str                       # int | float | str | bool | list
    default: Any
    help: str
    range: tuple | None = None      # (min, max) inclusive
    choices: tuple | None = None
    multiple_of: int | None = None
    family: Mapping = field(default_factory=dict)   # family -> default for models of that family
    faces: frozenset = frozenset()
    none_means: str = ""            # what a None value means (resolved later), e.g. "the model's own"
    max_chars: int | None = None    # text settings

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def default_for(self, family: str | None):
        return self.family.get(family, self.default) if family else self.default

    def check(self, value) -> None:
        """Raise ``ConfigError`` naming this setting when ``value`` is not one it accepts (None is
        accepted where ``none_means`` says what it stands for)."""
        name = self.name
        if value is None:
            if self.none_means or self.default is None:
                return
            raise ConfigError(f"{name} must be set")
        if self.kind in ("int", "float"):
            ok_type = isinstance(value, int) if self.kind == "int" else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok_type or not math.isfinite(value):
                raise ConfigError(f"{name} must be {'an integer' if self.kind == 'int' else 'a number'}, got {value!r}")
        elif self.kind == "bool" and not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        elif self.kind == "str":
            check_text(name, value, self.max_chars)
        if self.range is not None:
            lo, hi = self.range
            if not lo <= value <= hi:
                raise ConfigError(f"{name}={value} is out of range: allowed {lo}..{hi}")
        if self.multiple_of and value % self.multiple_of:
            m = self.multiple_of
            raise ConfigError(f"{name} must be a multiple of {m} (e.g. {8 * m}, {16 * m}), got {value}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{name} must be one of {', '.join(map(str, self.choices))}, got {value!r}")


def check_text(name: str, value, max_chars: int | None = None) -> str:
    """A text field as every face must refuse it: not a string, a NUL byte, a lone surrogate (cannot
    be stored or sent as UTF-8), or longer than ``max_chars``."""
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be text, got {type(value).__name__}")
    if "\x00" in value:
        raise ConfigError(f"{name} contains a NUL character; remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{name} contains characters that are not valid Unicode (a lone surrogate); "
                          "retype or paste it again") from None
    if max_chars is not None and len(value) > max_chars:
        raise ConfigError(f"{name} has {len(value)} characters; at most {max_chars} are accepted")
    return value


def check_known_words(*prompts: str) -> None:
    """The built-in prior knows a closed vocabulary (``nfsd.builtin.vocabulary``): refuse prompts with
    other words before any work, naming them and the prompts it knows (open models: not called)."""
    from .builtin.vocabulary import grammar, unknown_words

    unknown = list(dict.fromkeys(w for p in prompts if p for w in unknown_words(p)))
    if unknown:
        named = ", ".join(repr(w) for w in unknown)
        raise ConfigError(
            f"the built-in prior knows only solid colours and five patterns in eight colours: {named} "
            f"{'is' if len(unknown) == 1 else 'are'} not among its words; prompts it knows: {grammar()}; use a "
            "Stable Diffusion model (--model, README 'Real models') or pass --allow-unknown-words "
            "(API: allow_unknown_words, panel: Run anyway) to run anyway")


def setting(default, help: str, *, kind: str | None = None, range=None, choices=None, multiple_of=None,
            family: Mapping | None = None, faces=(CLI, API), none_means: str = "", max_chars: int | None = None):
    """Declare a ``TextureConfig`` field as a setting (a ``dataclasses.field`` carrying its ``Setting``)."""
    kind = kind or {bool: "bool", int: "int", float: "float", str: "str", list: "list"}[type(default)]
    meta = dict(kind=kind, default=default, help=help, range=range, choices=tuple(choices) if choices else None,
                multiple_of=multiple_of, family=dict(family or {}), faces=frozenset(faces), none_means=none_means,
                max_chars=max_chars)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"setting": meta})
    return field(default=default, metadata={"setting": meta})


ALL = (CLI, API, PANEL)


@dataclass
class TextureConfig:
    """Everything a texturing run depends on. Defaults work (sized for Stable Diffusion on a GPU);
    ``resolve`` adds the model family's defaults; ``validate`` explains bad values."""

    prompt: str = setting("", "what the texture shows, e.g. 'red and white stripes'; any length (encoded in "
                              "windows)", faces=ALL, max_chars=MAX_PROMPT_CHARS)
    negative_prompt: str = setting(NFSD_NEGATIVE_PROMPT, "what the texture should not look like", faces=ALL,
                                   max_chars=MAX_PROMPT_CHARS)
    mode: str = setting("nfsd", "distillation rule: nfsd (noise-free, the default), sds (score distillation), csd "
                                "(classifier score only), dds (edit the initial texture towards the prompt, keeping "
                                "its layout)", choices=tuple(DEFAULT_SCALES), faces=ALL)
    source_prompt: str = setting("", "dds: what the initial texture shows (the prompt it was made with)",
                                 max_chars=MAX_PROMPT_CHARS)
    # What `nfsd texture` / a panel job run with the built-in prior: TextureConfig's defaults are sized for
    # Stable Diffusion on a GPU (a 512 px render is 64x the pixels the built-in prior's 64 px views need).
    # It renders at twice its size (antialiased); 600 steps are where the demo's bands become stripes; the
    # surface field cuts the seam mismatch on real meshes ~10x at no loss of prompt accuracy (BENCHMARKS.md,
    # "Real meshes"); twice the texture learning rate gives crisper stripe edges (BENCHMARKS.md, "Seams", end).
    # Batch 2: batch 4 painted dark lines into red (BENCHMARKS.md, "Cameras").
    steps: int = setting(400, "optimization steps; time grows linearly with them", range=(1, 10_000),
                         family={BUILTIN: 600}, faces=ALL)
    texture_size: int = setting(1024, "texture width and height in pixels", range=(16, 4096), multiple_of=16,
                                family={BUILTIN: 256}, faces=ALL)
    render_size: int | None = setting(None, "side of the views rendered for the prior; 512 runs SDXL ~4x faster",
                                      kind="int", range=(16, 1024), multiple_of=8, family={BUILTIN: 128}, faces=ALL,
                                      none_means="the model's own: 512 SD 1.x, 768 SD 2.x-v, 1024 SDXL")
    batch: int = setting(1, "views rendered per step", range=(1, 16), family={BUILTIN: 2}, faces=ALL)
    guidance_scale: float | None = setting(None, "classifier-free guidance scale", kind="float", range=(0.0, 200.0),
                                           faces=ALL, none_means="the mode's own: 7.5 nfsd/csd/dds, 100 sds")
    material: str = setting("albedo", "albedo: one sRGB colour map; pbr: base colour, roughness and metallic maps "
                                      "optimized under randomized lights, so lighting stays out of the base colour "
                                      "(glTF metallic-roughness, Blender's Principled BSDF)", choices=("albedo", "pbr"),
                            faces=ALL)
    normal_map: bool = setting(False, "pbr: also optimize a tangent-space normal map", faces=ALL)
    offsets: bool = setting(False, "also optimize small vertex offsets along the normals", faces=ALL)
    offset_strength: float = setting(0.1, "largest offset, as a fraction of the mesh's bounding-sphere radius",
                                     range=(0.0, 0.2), faces=ALL)
    seed: int = setting(0, "random seed (same seed, same result on the CPU)", range=(0, 2**32 - 1), faces=ALL)
    model: str = setting(BUILTIN, "'builtin' (shipped, CPU-sized), a diffusers folder, a .safetensors checkpoint or "
                                  "a hub id already in the Hugging Face cache; over the API: a model the server offers",
                         faces=ALL, max_chars=1024)
    allow_unknown_words: bool = setting(False, "run even when the prompt has words a closed-vocabulary model (the "
                                               "built-in prior) does not know; it then draws noise or a guess for "
                                               "them", faces=ALL)
    device: str = setting("auto", "auto, cpu or cuda (cuda:N); over the API the server's --device", faces=(CLI,))
    renderer: str = setting("auto", "rasterizer: nvdiffrast on CUDA when installed (auto), or pure PyTorch",
                            choices=("auto", "torch", "nvdiffrast"), faces=(CLI,))
    parametrization: str = setting("pyramid", "texture parameters: a multi-resolution pyramid in UV space, plain "
                                              "pixels, or surface: coarse colour on the surface in 3D, seamless across "
                                              "UV seams (BENCHMARKS.md, Seams)", choices=PARAMETRIZATIONS,
                                   family={BUILTIN: "surface"})
    lr: float = setting(0.02, "texture learning rate (Adam, on logits)", range=(0.0, 10.0), family={BUILTIN: 0.04})
    offset_lr: float = setting(0.05, "offsets learning rate (Adam, on the tanh argument)", range=(0.0, 10.0))
    negative_weight: float = setting(0.0, "csd only: weight of the negative prompt (0: not used, a cheaper step)",
                                     range=(0.0, 100.0))
    loras: list = setting([], "LoRAs: [{'path' or 'name', 'weight'}] (CLI: --lora PATH[:WEIGHT], repeatable; API: "
                              "names from GET /models, kind lora)")
    encoder: str = setting("full", "autoencoder on the gradient path: tiny = TAESD/TAESDXL, faster (API: the model "
                                   "folder's vae_tiny/)", choices=("full", "tiny"))
    uvs: str = setting("keep", "the mesh's UV map: keep it (UDIM tiles too: one texture per tile), or unwrap: ignore "
                               "it and lay out new UVs (xatlas), as for a mesh without UVs", choices=("keep", "unwrap"))
    model_config: str | None = setting(None, "diffusers folder with the configs and tokenizer of a single-file "
                                             "checkpoint; needed only when its shapes are not standard SD 1.x/2.x/SDXL",
                                       kind="str", faces=(CLI,), none_means="the standard configs")
    tiny_encoder: str | None = setting(None, "AutoencoderTiny folder for --encoder tiny", kind="str", faces=(CLI,),
                                       none_means="the model folder's vae_tiny/")
    # Internal: tuned by benchmarks, not offered to users.
    t_min: float = setting(0.02, "lowest noise level, fraction of the schedule", range=(0.0, 1.0), faces=())
    t_max: float = setting(0.98, "highest noise level at step 0", range=(0.0, 1.0), faces=())
    t_max_end: float = setting(0.5, "highest noise level at the last step (annealed linearly)", range=(0.0, 1.0),
                               faces=())
    laplacian_weight: float = setting(1e2, "offsets: Laplacian smoothness weight", range=(0.0, 1e9), faces=())
    normal_weight: float = setting(1e1, "offsets: normal consistency weight", range=(0.0, 1e9), faces=())
    # pbr regularizers (nfsd.distill.material.regularization), tuned on `nfsd bench materials`' toy target at 100
    # steps: metallic_binary (ramped in linearly over the run) 0.05 took the metallic errors to 0.005 / 0.047
    # (dielectric / metal half); a smoothness of 0.01 already doubled the dielectric's roughness error (0.04 -> 0.09).
    material_smoothness: float = setting(0.002, "pbr: total-variation weight on the roughness and metallic maps",
                                         range=(0.0, 1e6), faces=())
    metallic_binary: float = setting(0.05, "pbr: weight of m (1 - m) at the last step (ramped in from 0), pushing "
                                           "metallic to 0 or 1", range=(0.0, 1e6), faces=())
    # With a normal map (and its own metallic start, nfsd.distill.material.START_METALLIC_NORMAL_MAP): 0.01 took the
    # toy's metal-half roughness error from 0.20 to 0.11 (150 steps) and its normals' texel noise down; 0.02
    # moved the flat half's normals off 0.5 (0.518).
    normal_smoothness: float = setting(0.01, "pbr with a normal map: total-variation weight on the normal map's x, y",
                                       range=(0.0, 1e6), faces=())
    half_precision: bool = setting(True, "float16 networks on CUDA (the texture stays float32)", faces=())
    channels_last: bool = setting(True, "CUDA: channels_last convolutions", faces=())
    compile: bool = setting(False, "CUDA: torch.compile the UNet and VAE encoder (slow first steps)", faces=())
    progress_every: int = setting(5, "read the loss (a host-device sync) every N steps", range=(1, 100_000), faces=())

    def scale(self) -> float:
        return DEFAULT_SCALES[self.mode] if self.guidance_scale is None else float(self.guidance_scale)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first bad field and what it accepts."""
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ConfigError("prompt is empty: describe the texture, e.g. 'red and white stripes'")
        if self.mode in EDIT_MODES and (not isinstance(self.source_prompt, str) or not self.source_prompt.strip()):
            raise ConfigError(f"mode {self.mode} edits a texture and needs source_prompt: what the current texture "
                              "shows (the prompt it was made with), e.g. 'red and white stripes'")
        for s in SETTINGS:
            if s.name != "loras":
                s.check(getattr(self, s.name))
        if not self.t_min < self.t_max_end <= self.t_max:
            raise ConfigError(f"need t_min < t_max_end <= t_max, got {self.t_min}, {self.t_max_end}, {self.t_max}")
        if self.normal_map and self.material != "pbr":
            raise ConfigError("normal_map is a map of the pbr material: send material 'pbr' with it, or leave "
                              "normal_map out")
        if self.device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", str(self.device)):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        self.loras = normalize_loras(self.loras)
        if self.model == BUILTIN and not self.allow_unknown_words:
            check_known_words(self.prompt, self.source_prompt if self.mode in EDIT_MODES else "")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "TextureConfig":
        """Build from a plain dict (JSON); unknown keys raise ``ConfigError`` (no other check: ``validate``)."""
        unknown = sorted(set(data) - set(NAMES))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(NAMES)}")
        return cls(**data)


SETTINGS: tuple[Setting, ...] = tuple(Setting(name=f.name, **f.metadata["setting"])
                                      for f in dataclasses.fields(TextureConfig))
NAMES = tuple(s.name for s in SETTINGS)
BY_NAME = {s.name: s for s in SETTINGS}


def exposed(face: str) -> tuple[Setting, ...]:
    """The settings a face offers, in declaration order."""
    return tuple(s for s in SETTINGS if face in s.faces)


def family_defaults(family: str | None) -> dict:
    """The settings whose default differs for ``family`` (e.g. ``family_defaults("builtin")``)."""
    return {s.name: s.family[family] for s in SETTINGS if family in s.family}


def family_of(model: str, known: str | None = None) -> str | None:
    """The family whose defaults a job of ``model`` takes: ``builtin`` for the built-in prior, else
    ``known`` (what the catalog read from the model's config; None when unknown)."""
    return BUILTIN if model == BUILTIN else known


def resolve(request: Mapping, *, default_model: str = BUILTIN, family: str | None = None,
            overrides: Mapping | None = None) -> TextureConfig:
    """The full, validated config of a partial request: every face (CLI, API, panel) goes through here.

    Args:
        request: setting name -> value; missing or None values are filled in. Unknown names raise.
        default_model: the model when the request names none (the server's ``--model``).
        family: the model's family as the catalog knows it (``sd1``, ``sdxl``, ...); the built-in
            prior's is known without it.
        overrides: what the face decides rather than the user (the server's ``device``).

    What the request leaves out takes the family's default (``family_defaults``), else the
    declaration's. ``render_size`` and ``guidance_scale`` may stay None: the model's own render size
    and the mode's own scale, settled by the engine (``TextureJob``) and recorded in the report.

    Raises:
        ConfigError: an unknown setting or a bad value, naming it.
    """
    unknown = sorted(set(request) - set(NAMES))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(NAMES)}")
    values = {k: v for k, v in request.items() if v is not None}
    values["model"] = values.get("model") or default_model
    for name, value in family_defaults(family_of(values["model"], family)).items():
        values.setdefault(name, value)
    values.update(overrides or {})
    config = TextureConfig(**values)
    config.validate()
    return config


def request_of(config: TextureConfig, face: str = API) -> dict:
    """The values of ``config`` a face can send (e.g. to submit a CLI-resolved config over HTTP)."""
    return {s.name: getattr(config, s.name) for s in exposed(face)}
