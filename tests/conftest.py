"""Shared fixtures. Nothing here touches the network: the hub is switched off for every test."""

import os
import sys
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))

import pytest  # noqa: E402

import procs  # noqa: E402

# Every process the suite starts inherits this (subprocess and multiprocessing copy the environment), so
# one that outlives the run is found even after it was re-parented away from pytest.
SESSION_MARK = ("NFSD_TEST_SESSION", uuid.uuid4().hex)
os.environ[SESSION_MARK[0]] = SESSION_MARK[1]


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when a process the suite started outlives it: a child of pytest still running, or
    any process carrying this session's mark. Pytest's own helper (multiprocessing's resource tracker,
    which exits with pytest) is not counted. The leftovers are killed after they are reported."""
    me = os.getpid()
    started = (procs.descendants(me) | procs.with_environment(*SESSION_MARK)) - {me}
    started = {p for p in started if not (procs.stat(p) and procs.stat(p)[1] == me and
                                          "resource_tracker" in procs.cmdline(p))}
    left = procs.wait_gone(started, 5.0)
    if left:
        report = procs.describe(left)
        for pid in left:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        session.config.get_terminal_writer().line(f"\nprocesses started by the tests outlived them: {report}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

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
