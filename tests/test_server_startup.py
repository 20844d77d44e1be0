"""A fresh server takes a burst of first submissions: modules that were imported lazily would race
in the thread pool (``cannot import name 'AutoTokenizer'``), so the server imports them at start."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
from server_kit import BACKEND, FAST, PROMPT, cube, free_port, submit, wait_until_serving

from nfsd.priors.tiny import build_tiny_model


def test_twenty_concurrent_first_submits_on_a_fresh_server_all_succeed(tmp_path):
    model = build_tiny_model(tmp_path / "tiny", prompt_words=(PROMPT,))
    port = free_port()
    code = (f"from nfsd.server import serve; serve(port={port}, data_dir={str(tmp_path / 'data')!r}, "
            f"model={str(model)!r}, device='cpu', log_level='warning', torch_threads=1)")
    env = dict(os.environ, PYTHONPATH=str(BACKEND), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            wait_until_serving(c, proc, 120)
            with ThreadPoolExecutor(20) as pool:
                answers = list(pool.map(lambda i: submit(c, cube(), dict(FAST, steps=1, seed=i)), range(20)))
            assert [r.status_code for r in answers] == [202] * 20, [r.text for r in answers if r.status_code != 202]
    finally:
        proc.terminate()
        proc.wait(30)
