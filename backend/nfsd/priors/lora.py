"""LoRAs on a loaded prior: kohya/A1111-format and diffusers-format ``.safetensors`` files.

A LoRA setting is a list of ``{"path": FILE, "weight": W}`` (``{"name": ...}`` entries are resolved to a
path by the server, in ``--models-dir DIR/loras``; see ``nfsd.priors.catalog``). ``apply_loras(prior, loras)``
makes the prior's UNet and text encoder(s) carry exactly those LoRAs, whatever an earlier job left on
the cached model:

    apply_loras(prior, [{"path": "loras/wood.safetensors", "weight": 0.8}])   # load + weigh
    apply_loras(prior, [])                                                    # back to the bare model

The LoRAs are peft adapters (diffusers' LoRA loader: it converts kohya's ``lora_unet_*`` /
``lora_te*_*`` keys and alphas; diffusers' own ``unet.* / text_encoder.*`` keys load as they are).
They are not fused into the weights: taking them off swaps the original layers back, so the model is
the original one bit for bit (fusing and unfusing in float16 would not be).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from ..errors import ConfigError, ModelError

WEIGHT_RANGE = (-10.0, 10.0)
ADDON_KEY = "loras"  # prior.addons[ADDON_KEY]: tuple of (path, weight) currently on the model


def parse_lora_arg(text: str) -> dict:
    """``"PATH[:WEIGHT]"`` (the CLI's ``--lora``) -> ``{"path": PATH, "weight": WEIGHT}`` (weight 1.0 by default).

    Only a trailing ``:number`` is a weight, so ``C:\\loras\\x.safetensors`` keeps its drive letter.
    """
    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            return {"path": path, "weight": float(tail)}
        except ValueError:
            pass
    return {"path": text, "weight": 1.0}


def normalize_loras(value) -> list[dict]:
    """Check a ``loras`` setting and return it as ``[{"path" or "name": str, "weight": float}, ...]``.

    Accepts a list of dicts (``path`` or ``name``, optional ``weight``) or of ``"PATH[:WEIGHT]"`` strings.
    Raises ``ConfigError`` naming the bad entry.
    """
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"loras must be a list of {{'path' or 'name', 'weight'}}, got {type(value).__name__}")
    out = []
    for i, entry in enumerate(value):
        if isinstance(entry, str):
            entry = parse_lora_arg(entry)
        if not isinstance(entry, dict):
            raise ConfigError(f"loras[{i}] must be {{'path' or 'name', 'weight'}}, got {type(entry).__name__}")
        unknown = sorted(set(entry) - {"path", "name", "weight"})
        if unknown:
            raise ConfigError(f"loras[{i}] has unknown key(s) {', '.join(unknown)}; allowed: path or name, weight")
        keys = [k for k in ("path", "name") if entry.get(k) is not None]
        if len(keys) != 1 or not isinstance(entry[keys[0]], str) or not entry[keys[0]].strip():
            raise ConfigError(f"loras[{i}] needs exactly one of 'path' (a .safetensors file) or 'name' (in the "
                              "server's models folder)")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or not WEIGHT_RANGE[0] <= weight <= WEIGHT_RANGE[1]:
            raise ConfigError(f"loras[{i}].weight must be a number in {WEIGHT_RANGE[0]:g}..{WEIGHT_RANGE[1]:g}, "
                              f"got {weight!r}")
        out.append({keys[0]: entry[keys[0]], "weight": float(weight)})
    return out


def _host(prior):
    """What diffusers' SDXL LoRA loader expects of a pipeline: the models it loads into (SD 1.x/2.x
    priors have no ``text_encoder_2``; the loader skips it), no device map, no offloading hooks."""
    from diffusers.loaders import StableDiffusionXLLoraLoaderMixin

    class LoraHost(StableDiffusionXLLoraLoaderMixin):
        hf_device_map = None

        def __init__(self):
            self.unet = getattr(prior.unet, "_orig_mod", prior.unet)  # under torch.compile: the real module
            self.text_encoder = prior.text_encoder
            self.text_encoder_2 = getattr(prior, "text_encoder_2", None)

        @property
        def components(self) -> dict:
            return {"unet": self.unet, "text_encoder": self.text_encoder, "text_encoder_2": self.text_encoder_2}

    return LoraHost()


def _has_adapters(module) -> bool:
    return module is not None and bool(getattr(module, "peft_config", None))


def remove_loras(prior) -> None:
    """Take every LoRA off ``prior``: the original layers are swapped back (no arithmetic on weights)."""
    host = _host(prior)
    if any(_has_adapters(m) for m in host.components.values()):
        host.unload_lora_weights()
    prior.addons.pop(ADDON_KEY, None)


def apply_loras(prior, loras: list[dict]) -> None:
    """Make ``prior`` carry exactly ``loras`` (``[{"path", "weight"}]``, see ``normalize_loras``).

    No-op when they are already on; otherwise every LoRA is taken off and the list loaded again (a
    LoRA file loads in well under a second). A failed load leaves the model bare, never half-loaded.

    Raises:
        ConfigError: an entry still has a ``name`` (only the server resolves names), or the prior
            cannot take LoRAs (the analytic test prior).
        ModelError: a file is missing, not a LoRA, or matches no layer of this model (wrong family).
    """
    wanted = tuple((str(Path(e["path"]).expanduser()), float(e["weight"])) for e in normalize_loras(loras)
                   if "path" in e)
    names = [e["name"] for e in normalize_loras(loras) if "name" in e]
    if names:
        raise ConfigError(f"LoRA name {names[0]!r} is resolved only by a server with --models-dir; pass a file path")
    addons = getattr(prior, "addons", None)
    if addons is None or not hasattr(prior, "unet"):
        if wanted:
            raise ConfigError(f"model {getattr(prior, 'model_id', '?')!r} cannot take LoRAs")
        return
    if addons.get(ADDON_KEY, ()) == wanted:
        return
    remove_loras(prior)
    if not wanted:
        return
    host = _host(prior)
    adapters = []
    try:
        for i, (path, _weight) in enumerate(wanted):
            _load_one(host, prior, path, f"lora{i}")
            adapters.append(f"lora{i}")
        host.set_adapters(adapters, adapter_weights=[w for _p, w in wanted])
    except BaseException:
        remove_loras(prior)
        raise
    addons[ADDON_KEY] = wanted


def _load_one(host, prior, path: str, adapter: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"LoRA {path} not found (expected a .safetensors file)")
    if file.suffix.lower() != ".safetensors":
        raise ModelError(f"LoRA {path} is not a .safetensors file (pickled .ckpt/.pt LoRAs are not loaded)")
    try:
        with warnings.catch_warnings():  # peft warns that a second adapter makes "multiple adapters": intended
            warnings.filterwarnings("ignore", message=".*multiple adapters.*")
            host.load_lora_weights(str(file), adapter_name=adapter)
    except Exception as exc:  # diffusers/peft raise ValueError, KeyError, RuntimeError... the reason is in the text
        raise ModelError(f"could not load LoRA {file.name} onto model {prior.model_id!r}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__} "
                         "(a LoRA works only on the model family it was trained for)") from exc
    on = [name for name, m in host.components.items() if _has_adapters(m) and adapter in m.peft_config]
    if not on:
        raise ModelError(f"LoRA {file.name} matches no layer of model {prior.model_id!r}: "
                         "it was trained for another model family")


__all__ = ["parse_lora_arg", "normalize_loras", "apply_loras", "remove_loras"]
