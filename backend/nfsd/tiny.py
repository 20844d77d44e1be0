"""Random-weight models with Stable Diffusion's layout: tiny ones for tests, full-size ones for benchmarks.

Nothing here downloads anything. ``build_tiny_model`` writes a complete diffusers folder (unet/,
vae/, text_encoder/, tokenizer/, scheduler/, model_index.json) that ``nfsd.prior.load_prior`` loads
through the same code path as a real Stable Diffusion folder. ``build_random_model(arch="sd15")``
builds the real shapes (same FLOPs) for speed benchmarks.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")

# Words the tiny tokenizer knows besides the prompt words a caller passes: view words, the NFSD
# negative prompt, and a few common ones. Anything else maps to <unk>.
BASE_WORDS = (
    "front side back overhead view a an the of with and in on "
    "unrealistic blurry low quality out focus ugly contrast dull dark resolution gloomy"
).split()


def build_word_tokenizer(words=(), model_max_length: int = 77):
    """A word-level fast tokenizer (lower-cased, splits on whitespace and punctuation).

    Args:
        words: extra vocabulary besides ``BASE_WORDS``.
        model_max_length: sequences are padded/truncated to this many tokens, <bos> and <eos>
            included, like CLIP's 77.

    Returns:
        ``transformers.PreTrainedTokenizerFast``; ``save_pretrained`` + ``AutoTokenizer`` round-trip.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in list(BASE_WORDS) + [w for text in words for w in re.findall(r"[a-z0-9]+", text.lower())]:
        vocab.setdefault(word, len(vocab))
    for ch in ",.;:!?-'\"()":
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_max_length=model_max_length,
    )


def _text_encoder(vocab_size: int, hidden: int, layers: int, heads: int, max_positions: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    return CLIPTextModel(config)


# UNet / VAE configs with the shapes of the real models (diffusers config names).
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD21_UNET = dict(SD15_UNET, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
)
TINY_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
    cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16,
)
ARCHS = {
    # arch: (unet config, vae config, text encoder (hidden, layers, heads), scheduler prediction type)
    "tiny": (TINY_UNET, TINY_VAE, (32, 2, 4), "epsilon"),
    "sd15": (SD15_UNET, SD_VAE, (768, 12, 12), "epsilon"),
    "sd21": (SD21_UNET, SD_VAE, (1024, 23, 16), "v_prediction"),
}


def build_random_components(arch: str = "tiny", prediction_type: str | None = None, seed: int = 0,
                            prompt_words=(), model_max_length: int = 77) -> dict:
    """Random-weight ``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler`` of an architecture.

    Args:
        arch: ``"tiny"`` (a few MB, for tests), ``"sd15"`` or ``"sd21"`` (real shapes, ~1 B params).
        prediction_type: ``"epsilon"`` or ``"v_prediction"``; default: the arch's own.
        seed: weights are ``torch.manual_seed(seed)``-deterministic.
        prompt_words: extra words for the tokenizer's vocabulary.
        model_max_length: token limit of the tokenizer (prompts longer than this are refused).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    unet_cfg, vae_cfg, (hidden, layers, heads), default_pred = ARCHS[arch]
    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer(prompt_words, model_max_length)
    return {
        "tokenizer": tokenizer,
        "text_encoder": _text_encoder(len(tokenizer), hidden, layers, heads, model_max_length),
        "unet": UNet2DConditionModel(**unet_cfg),
        "vae": AutoencoderKL(**vae_cfg),
        "scheduler": DDPMScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            prediction_type=prediction_type or default_pred,
        ),
    }


def build_random_model(path, arch: str = "tiny", prediction_type: str | None = None, seed: int = 0,
                       prompt_words=(), model_max_length: int = 77):
    """Write a random-weight Stable-Diffusion-layout diffusers folder to ``path`` (see
    ``build_random_components`` for the arguments). Returns the folder's ``Path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    parts = build_random_components(arch, prediction_type, seed, prompt_words, model_max_length)
    for name, part in parts.items():
        part.save_pretrained(path / name)
    (path / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"], '
        '"vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"], '
        '"tokenizer": ["transformers", "PreTrainedTokenizerFast"], "scheduler": ["diffusers", "DDPMScheduler"]}\n'
    )
    return path


def build_random_prior(arch: str = "tiny", device="cpu", dtype=None, seed: int = 0):
    """A ``nfsd.prior.Prior`` with random weights, built in memory (no disk): for speed benchmarks."""
    from .prior import _assemble, default_dtype

    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    parts = build_random_components(arch, seed=seed)
    for name in ("unet", "vae", "text_encoder"):
        parts[name].to(dtype)
    return _assemble(f"random-{arch}", parts["unet"], parts["vae"], parts["text_encoder"], parts["tokenizer"],
                     parts["scheduler"], device, dtype)


def build_tiny_model(path, prediction_type: str = "epsilon", seed: int = 0, prompt_words=()):
    """A tiny random Stable-Diffusion-layout model (~2 MB) for tests: see ``build_random_model``."""
    return build_random_model(path, "tiny", prediction_type, seed, prompt_words)


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

    Implements the ``nfsd.prior.Prior`` interface the engine uses.
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
        self.vae = None

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def tune(self, **kwargs) -> None:
        pass

    def check_prompt(self, text: str, what: str = "prompt", reserve: int = 0) -> None:
        pass

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
        mesh: ``nfsd.mesh.Mesh`` with UVs, the one the engine optimizes.
        target_offsets: ``[V, 3]`` object-space offsets that make the wanted shape.
        image_size: renders and "latents" are ``image_size`` square (use it as the run's render_size).
        albedo: the flat texture colour of both renders (the run's initial texture should match).
    """

    def __init__(self, mesh, target_offsets, image_size: int = 32, albedo=(0.6, 0.6, 0.6), device="cpu"):
        import numpy as np

        from . import mesh as mesh_lib
        from .renderer import get_rasterizer

        super().__init__(image_size, device)
        self.model_id = "shape"
        transform = mesh_lib.unit_sphere_transform(mesh.world_positions())

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
        from .renderer import render_views

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
