"""Which model is it: families from folders and single-file keys, one clear line for the unsupported."""

import json

import pytest
import torch

from nfsd.priors.families import UnsupportedModel, checkpoint_family, folder_family
from nfsd.priors.prior import load_prior

CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"


def test_families_of_the_tiny_folders(tiny_model, tiny_sdxl):
    assert folder_family(tiny_model).name == "sd1"
    assert folder_family(tiny_sdxl).name == "sdxl"


@pytest.mark.parametrize("key, family", [
    ("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", "sdxl"),
    ("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", "sd2"),
    ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", "sd1"),
])
def test_single_file_family_from_its_keys(key, family):
    assert checkpoint_family({CONV_IN: (320, 4, 3, 3), key: (1, 1)}, "x").name == family


@pytest.mark.parametrize("index, unet_in, said", [
    ("FluxPipeline", None, "a Flux model"),
    ("StableDiffusion3Pipeline", None, "a Stable Diffusion 3 model"),
    ("KandinskyV22Pipeline", 4, "a Kandinsky model"),
    ("StableDiffusionInpaintPipeline", 9, "an inpainting model"),
    ("StableDiffusionPipeline", 9, "an inpainting model"),
])
def test_unsupported_folders_say_what_they_are_in_one_line(tmp_path, index, unet_in, said):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": index}))
    if unet_in:
        (tmp_path / "unet").mkdir()
        (tmp_path / "unet" / "config.json").write_text(json.dumps({"in_channels": unet_in}))
    else:
        (tmp_path / "transformer").mkdir()
    with pytest.raises(UnsupportedModel) as info:
        load_prior(str(tmp_path))
    message = str(info.value)
    assert said in message and "supported: Stable Diffusion 1.x, 2.x and SDXL" in message and "\n" not in message


@pytest.mark.parametrize("keys, said", [
    ({"double_blocks.0.img_attn.qkv.weight": (9, 3)}, "a Flux model"),
    ({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": (9, 3)}, "a Stable Diffusion 3 model"),
    ({CONV_IN: (4, 9, 3, 3), "cond_stage_model.transformer.x": (1,)}, "an inpainting model"),
    ({CONV_IN: (4, 4, 3, 3), "conditioner.embedders.0.model.x": (1,)}, "an SDXL refiner"),
    ({"lora_unet_down_blocks_0.lora_down.weight": (4, 8)}, "a LoRA"),
    ({"encoder.down.0.block.0.conv1.weight": (4, 3, 3, 3)}, "a VAE alone"),
])
def test_unsupported_single_files_say_what_they_are_in_one_line(tmp_path, keys, said):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(shape) for k, shape in keys.items()}, str(path))
    with pytest.raises(UnsupportedModel) as info:
        load_prior(str(path))
    message = str(info.value)
    assert said in message and str(path) in message and "\n" not in message
