"""Single-file Stable Diffusion checkpoints (A1111 / ComfyUI layout) load through ``load_prior``, offline.

The checkpoint is the tiny random model written in the original CompVis/LDM key layout
(``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``) by
``tests/ldm_layout.py``; the diffusers folder it came from provides the configs and the tokenizer.
"""

import json
import shutil

import pytest
import torch

from ldm_layout import (CLIP_PREFIX, SDXL_OPEN_CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX, folder_to_single_file,
                        open_clip_to_ldm, unet_to_ldm, vae_to_ldm)
from nfsd.errors import ModelError
from nfsd.priors import families
from nfsd.priors.families import FAMILIES, OPENCLIP_BIGG, config_folder
from nfsd.priors.prior import load_prior
from nfsd.priors.tiny import ARCHS, build_random_model


@pytest.fixture(scope="module")
def single_file(tiny_model, tmp_path_factory):
    """The tiny model as one LDM-layout ``.safetensors`` (and the state dict written)."""
    path = tmp_path_factory.mktemp("single_file") / "tiny-sd.safetensors"
    return path, folder_to_single_file(tiny_model, path)


@pytest.mark.parametrize("arch, model_type", [("sd15", "v1"), ("sd21", "v2"), ("sdxl", "xl_base")])
def test_ldm_layout_of_real_shapes_is_what_diffusers_reads(arch, model_type):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint, infer_diffusers_model_type,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    unet_cfg, vae_cfg, _, _ = ARCHS[arch]
    with torch.device("meta"):  # real SD shapes, no memory: only names and shapes matter here
        unet, vae = UNet2DConditionModel(**unet_cfg), AutoencoderKL(**vae_cfg)
        open_clip = CLIPTextModelWithProjection(CLIPTextConfig(**OPENCLIP_BIGG)) if arch == "sdxl" else None
    checkpoint = {UNET_PREFIX + k: v for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()}
    checkpoint.update({VAE_PREFIX + k: v for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()})
    if open_clip is not None:  # nfsd's SDXL configs give the keys diffusers recognises SDXL base by
        checkpoint.update({SDXL_OPEN_CLIP_PREFIX + k: v for k, v in open_clip_to_ldm(open_clip.state_dict()).items()})
        assert checkpoint[UNET_PREFIX + "label_emb.0.0.weight"].shape == (1280, 2816)
        assert infer_diffusers_model_type(checkpoint) == model_type
        return

    # The names the original SD checkpoints use for the samplers, and the key diffusers detects SD 1.x by.
    for key in ("input_blocks.3.0.op.weight", "input_blocks.9.0.op.weight", "output_blocks.2.1.conv.weight",
                "output_blocks.8.2.conv.weight", "output_blocks.11.0.skip_connection.weight",
                "middle_block.1.transformer_blocks.0.attn2.to_k.weight"):
        assert UNET_PREFIX + key in checkpoint
    assert checkpoint[VAE_PREFIX + "decoder.up.3.upsample.conv.weight"].shape == (512, 512, 3, 3)
    assert checkpoint[VAE_PREFIX + "encoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    assert infer_diffusers_model_type(checkpoint) == model_type
    for model, back in ((unet, convert_ldm_unet_checkpoint(checkpoint, unet.config)),
                        (vae, convert_ldm_vae_checkpoint(checkpoint, vae.config))):
        expected = model.state_dict()
        assert set(back) == set(expected)
        assert all(back[k].shape == v.shape for k, v in expected.items())


def test_tiny_ldm_checkpoint_converts_back_to_the_same_weights(tiny_model, single_file):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
    )
    from transformers import CLIPTextModel

    _, checkpoint = single_file
    unet = UNet2DConditionModel.from_pretrained(tiny_model, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(tiny_model, subfolder="vae")
    text = CLIPTextModel.from_pretrained(tiny_model / "text_encoder")
    clip_back = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(checkpoint).items()}
    for model, back in ((unet, convert_ldm_unet_checkpoint(checkpoint, unet.config)),
                        (vae, convert_ldm_vae_checkpoint(checkpoint, vae.config)), (text, clip_back)):
        expected = model.state_dict()
        assert set(expected) <= set(back)
        assert all(torch.equal(back[k], v) for k, v in expected.items())
    # Layers-per-block 1 and two blocks: the downsampler follows the single layer of block 0.
    assert UNET_PREFIX + "input_blocks.2.0.op.weight" in checkpoint
    assert CLIP_PREFIX + "text_model.embeddings.position_ids" in checkpoint


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_with_config_folder_matches_the_folder_model(tiny_model, single_file, tmp_path, suffix):
    path, checkpoint = single_file
    if suffix == ".ckpt":  # A1111's older format: a pickled dict with the weights under "state_dict"
        path = tmp_path / "tiny-sd.ckpt"
        torch.save({"state_dict": checkpoint, "global_step": 1}, path)
    reference = load_prior(str(tiny_model))
    prior = load_prior(str(path), config=str(tiny_model))
    assert prior is not reference and prior.model_id == str(path)
    assert (prior.prediction_type, prior.image_size, prior.latent_scale) == (
        reference.prediction_type, reference.image_size, reference.latent_scale)
    assert torch.equal(prior.alphas_cumprod, reference.alphas_cumprod)

    prompts = ["red and white stripes, front view", ""]
    emb, emb_ref = prior.embed(prompts), reference.embed(prompts)
    assert torch.allclose(emb.hidden, emb_ref.hidden, atol=1e-6)
    torch.manual_seed(0)
    images = torch.rand(2, 3, 16, 16)
    z = prior.encode(images, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(z, reference.encode(images, generator=torch.Generator().manual_seed(1)), atol=1e-6)
    z_t, t = torch.randn_like(z), torch.tensor([50, 900])
    assert torch.allclose(prior.predict_eps(z_t, t, emb), reference.predict_eps(z_t, t, emb_ref), atol=1e-6)
    assert torch.allclose(prior.decode(z), reference.decode(z), atol=1e-6)
    # Random weights give outputs that differ between inputs: the comparisons above are not vacuous.
    assert not torch.allclose(emb.hidden[0], emb.hidden[1]) and z.abs().max() > 0


def test_single_file_of_nonstandard_shapes_without_config_says_to_pass_the_config_folder(single_file, tmp_path,
                                                                                        monkeypatch):
    from huggingface_hub import constants

    # An empty cache: the configs come from nfsd itself, nothing is looked up or fetched.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    path, _ = single_file
    with pytest.raises(ModelError, match=r"\(sd1\).*not those of a standard sd1 model.*--model-config") as info:
        load_prior(str(path))
    assert str(path) in str(info.value)
    assert not (tmp_path / "hf-cache").exists()


def test_offline_config_folders_are_what_diffusers_pipelines_read(tmp_path):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

    for name, pipeline in (("sd1", StableDiffusionPipeline), ("sd2", StableDiffusionPipeline),
                           ("sdxl", StableDiffusionXLPipeline)):
        folder = config_folder(FAMILIES[name], tmp_path / name)
        index = pipeline.load_config(str(folder))
        assert index["_class_name"] == pipeline.__name__
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(folder / "unet")))
        expected = {"sd1": 859_520_964, "sd2": 865_910_724, "sdxl": 2_567_463_684}[name]  # published sizes
        assert sum(p.numel() for p in unet.parameters()) == expected
    assert json.loads((tmp_path / "sd2" / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == \
        "v_prediction"


@pytest.fixture(scope="module")
def sdxl_single_file(tiny_sdxl, tmp_path_factory):
    path = tmp_path_factory.mktemp("sdxl_file") / "tiny-sdxl.safetensors"
    return path, folder_to_single_file(tiny_sdxl, path)


def test_sdxl_single_file_matches_the_folder_model(tiny_sdxl, sdxl_single_file):
    path, checkpoint = sdxl_single_file
    assert "conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight" in checkpoint
    reference = load_prior(str(tiny_sdxl))
    prior = load_prior(str(path), config=str(tiny_sdxl))
    assert prior.family.name == reference.family.name == "sdxl" and prior.zero_empty_prompt
    prompts = ["a weathered bronze statue with green patina, " * 3, "blurry"]
    emb, emb_ref = prior.embed(prompts), reference.embed(prompts)
    assert emb.shape == emb_ref.shape == (2, 2 * 77, 80)  # 32 + 48 features, 135 characters: two windows
    assert torch.allclose(emb.hidden, emb_ref.hidden, atol=1e-6)
    assert torch.allclose(emb.pooled, emb_ref.pooled, atol=1e-6) and not torch.allclose(emb.pooled[0], emb.pooled[1])
    torch.manual_seed(0)
    z, t = torch.randn(2, 4, 8, 8), torch.tensor([50, 900])
    assert torch.allclose(prior.predict_eps(z, t, emb), reference.predict_eps(z, t, emb_ref), atol=1e-5)


def test_config_folder_of_another_architecture_is_refused(tiny_model, single_file, tmp_path):
    config = tmp_path / "other"
    shutil.copytree(tiny_model, config)
    unet_config = json.loads((config / "unet" / "config.json").read_text())
    unet_config["cross_attention_dim"] = 48  # the checkpoint's cross-attention reads 32-d text embeddings
    (config / "unet" / "config.json").write_text(json.dumps(unet_config))
    path, _ = single_file
    with pytest.raises(ModelError, match=r"could not load the single-file checkpoint .*attn2\.to_k\.weight"):
        load_prior(str(path), config=str(config))


def test_sdxl_single_file_loads_offline_with_nothing_but_the_file(tmp_path, monkeypatch):
    """The path a real SDXL file takes: nfsd's own configs (here the tiny shapes stand in for SDXL's)
    and CLIP's shipped vocabulary; no config folder, an empty hub cache, the same model as the folder."""
    from huggingface_hub import constants

    folder = build_random_model(tmp_path / "folder", "tiny-sdxl", tokenizer="clip")
    path = tmp_path / "tiny-sdxl.safetensors"
    folder_to_single_file(folder, path)

    def cfg(sub):
        return json.loads((folder / sub / "config.json").read_text())

    monkeypatch.setitem(families.ARCHITECTURES, "sdxl", (cfg("unet"), cfg("vae"), [
        ("text_encoder", "CLIPTextModel", cfg("text_encoder")),
        ("text_encoder_2", "CLIPTextModelWithProjection", cfg("text_encoder_2"))]))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    prior = load_prior(str(path))
    reference = load_prior(str(folder))
    assert prior.family.name == "sdxl" and prior.tokenizer("a red car").input_ids == [49406, 320, 736, 1615, 49407]
    assert prior.text[1].tokenizer.pad_token_id == 0  # OpenCLIP pads with "!"
    prompts = ["a weathered bronze statue, " * 16, ""]  # 80 CLIP tokens: two windows
    emb, emb_ref = prior.embed(prompts), reference.embed(prompts)
    assert emb.chunks == [2, 1] and torch.allclose(emb.hidden, emb_ref.hidden, atol=1e-6)
    assert torch.allclose(emb.pooled, emb_ref.pooled, atol=1e-6)
    torch.manual_seed(0)
    z, t = torch.randn(2, 4, 8, 8), torch.tensor([50, 900])
    assert torch.allclose(prior.predict_eps(z, t, emb), reference.predict_eps(z, t, emb_ref), atol=1e-5)
    assert not (tmp_path / "hf-cache").exists()
