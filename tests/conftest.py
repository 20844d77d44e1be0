"""Shared fixtures. Nothing here touches the network: the hub is switched off for every test."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))

import pytest  # noqa: E402

PROMPT_WORDS = ["red and white stripes", "blue dots on yellow", "solid green"]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    tiny models are dominated by thread start-up costs, and a shared CI box makes that far worse."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A ~1 MB random Stable-Diffusion-layout diffusers folder (epsilon prediction)."""
    from nfsd.priors.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"), prompt_words=PROMPT_WORDS)


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    """A ~1 MB random SDXL-layout diffusers folder: two CLIP encoders (the second with projection),
    a ``text_time`` UNet, character-level tokenizers (one token per character, 77-token windows)."""
    from nfsd.priors.tiny import build_tiny_sdxl_model

    return build_tiny_sdxl_model(tmp_path_factory.mktemp("tiny_sdxl"))
