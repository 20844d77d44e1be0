# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's HTTP client against the fake backend: URLs, errors as sentences, auth, offline."""

import io
import socket

import numpy as np
import pytest

from fake_backend import FakeBackend


@pytest.mark.parametrize("typed", ["127.0.0.1:7870", "http://127.0.0.1:7870/", " http://127.0.0.1:7870/// ",
                                   "127.0.0.1"])
def test_urls_typed_in_any_usual_form_normalize_alike(addon, typed):
    assert addon.client.normalize_url(typed) == "http://127.0.0.1:7870"


def test_a_path_prefix_is_kept_and_bad_urls_say_why(addon):
    client = addon.client
    assert client.normalize_url("https://gpu.studio.lan/nfsd/") == "https://gpu.studio.lan/nfsd"
    with pytest.raises(client.BackendError, match="empty"):
        client.normalize_url("  ")
    with pytest.raises(client.BackendError, match="http://"):
        client.normalize_url("ftp://host:21")


def test_loopback_detection(addon):
    assert addon.client.is_loopback("localhost:1") and addon.client.is_loopback("http://[::1]:7870")
    assert addon.client.is_loopback("127.0.0.2") and not addon.client.is_loopback("192.168.1.20:7870")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_backend_is_one_error_saying_how_to_start_it(addon):
    client = addon.client.Client(f"127.0.0.1:{_free_port()}", timeout=1.0)
    with pytest.raises(addon.client.BackendError) as caught:
        client.health()
    assert caught.value.kind == "unreachable"
    assert "Cannot reach the NFSD backend" in str(caught.value) and "nfsd serve" in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_a_remote_backend_is_refused_while_online_access_is_off(addon):
    # 203.0.113.0/24 is reserved for documentation: nothing would answer, but no packet is sent.
    client = addon.client.Client("203.0.113.5:7870", online_access=False)
    with pytest.raises(addon.client.BackendError, match="online access is off") as caught:
        client.health()
    assert caught.value.kind == "offline"


def test_a_wrong_token_says_where_to_set_it_and_the_right_one_works(addon):
    with FakeBackend(token="s3cret") as backend:
        with pytest.raises(addon.client.BackendError, match="token") as caught:
            addon.client.Client(backend.url, "wrong").status("0" * 32)
        assert caught.value.status == 401
        assert "Set the token" in str(caught.value)
        with pytest.raises(addon.client.BackendError, match="no job"):
            addon.client.Client(backend.url, "s3cret").status("0" * 32)


def test_submit_status_preview_and_the_backends_own_error_detail(addon, fake_backend):
    client = addon.client.Client(fake_backend.url)
    with pytest.raises(addon.client.BackendError, match="prompt is empty") as caught:
        client.submit(b"", {"prompt": " "})
    assert caught.value.status == 422
    buffer = io.BytesIO()
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)  # the server refuses a degenerate mesh
    np.savez(buffer, positions=positions, triangles=np.array([[0, 1, 2]], np.int32))
    job_id = client.submit(buffer.getvalue(), {"prompt": "moss", "steps": 3})
    assert len(job_id) == 32
    assert client.preview_png(job_id) is None  # 404 before the first snapshot
    assert client.status(job_id)["state"] == "running"
    assert client.status(job_id)["step"] == 1
    assert client.preview_png(job_id).startswith(b"\x89PNG")
    assert client.cancel(job_id)["state"] == "cancelled"
    assert client.unload_model() == {"unloaded": True} and fake_backend.unloaded == 1
