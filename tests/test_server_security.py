"""Web pages in the artist's browser must not drive the local backend: DNS rebinding (Host), cross-site
requests (Origin, Sec-Fetch-Site), and what an unauthenticated /health tells."""

from __future__ import annotations

import httpx
import pytest
from server_kit import LiveServer, cube, npz

from nfsd.errors import ConfigError
from nfsd.server import ServerConfig

UNKNOWN = "f" * 32


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LiveServer(ServerConfig(data_dir=tmp_path_factory.mktemp("data"), allow_hosts=("studio-pc.local",),
                                 device="cpu")) as live:
        yield live


def _post_job(client, **headers):
    return client.post("/jobs", files={"mesh": ("m.npz", npz(**cube()), "application/octet-stream")},
                       data={"settings": '{"prompt": "x"}'}, headers=headers)


def test_a_host_that_is_not_this_server_gets_421(server):
    for host in ("evil.example", "evil.example:7870", "127.0.0.1.evil.example", "bad host", "[zz::1]"):
        r = server.client.get("/jobs", headers={"Host": host})
        assert r.status_code == 421, (host, r.text)
        assert "--allow-host" in r.json()["detail"]
    assert server.client.delete(f"/jobs/{UNKNOWN}", headers={"Host": "evil.example"}).status_code == 421
    assert server.client.get("/health", headers={"Host": "evil.example"}).status_code == 421
    port = server.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]", "127.0.0.2", "studio-pc.local", "STUDIO-PC.local:80"):
        assert server.client.get("/jobs", headers={"Host": host}).status_code == 200, host


def test_a_server_on_every_interface_answers_to_addresses_but_not_to_other_names(tmp_path):
    with LiveServer(ServerConfig(host="0.0.0.0", token="t", data_dir=tmp_path, device="cpu")) as live:
        assert live.client.get("/jobs", headers={"Host": "192.168.1.20:7870"}).status_code == 200
        assert live.client.get("/jobs", headers={"Host": "rebind.evil.example"}).status_code == 421


def test_cross_site_requests_that_change_state_get_403_and_queue_nothing(server):
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": server.url.replace("127.0.0.1", "localhost")},  # another origin, same site
                    {"Origin": server.url + "0"}):  # another port
        r = _post_job(server.client, **headers)
        assert r.status_code == 403, (headers, r.text)
        assert "web pages may not drive this server" in r.json()["detail"]
        assert server.client.post("/model/unload", headers=headers).status_code == 403
    assert server.client.get("/jobs").json()["jobs"] == []
    # The server's own pages (/docs) and clients that send neither header pass the guard.
    assert server.client.post(f"/jobs/{UNKNOWN}/cancel", headers={"Origin": server.url}).status_code == 404
    assert server.client.post(f"/jobs/{UNKNOWN}/cancel", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 404
    assert server.client.post(f"/jobs/{UNKNOWN}/cancel").status_code == 404


def test_no_cors_headers_so_pages_cannot_read_answers(server):
    r = server.client.get("/jobs", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and not any(k.lower().startswith("access-control-") for k in r.headers)
    pre = server.client.options("/jobs", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert not any(k.lower().startswith("access-control-") for k in pre.headers)


def test_health_without_the_token_says_only_up_version_and_that_a_token_is_needed(tmp_path):
    with LiveServer(ServerConfig(token="s3cret", data_dir=tmp_path, device="cpu")) as live:
        bare = httpx.Client(base_url=live.url).get("/health")
        assert bare.status_code == 200
        assert bare.json() == {"status": "ok", "version": bare.json()["version"], "auth_required": True}
        full = live.client.get("/health").json()
        assert {"running_job", "queue_length", "default_model", "device", "model_loaded"} <= set(full)
        wrong = httpx.Client(base_url=live.url, headers={"Authorization": "Bearer nope"}).get("/health")
        assert set(wrong.json()) == {"status", "version", "auth_required"}


def test_health_on_loopback_without_a_token_tells_everything_the_add_on_reads(server):
    # nfsd_blender/backend_status.py's describe_health reads these (not imported here: it pulls in bpy)
    h = server.client.get("/health").json()
    assert {"model_loaded", "model_loading", "default_model", "gpu_name", "gpu_free_bytes", "device",
            "queue_length", "version"} <= set(h)
    assert h["auth_required"] is False and h["queue_length"] == 0 and h["default_model"] == "builtin"


@pytest.mark.parametrize("name", ["", "a/b", "host:80", "user@host"])
def test_allow_host_takes_a_bare_name(name):
    with pytest.raises(ConfigError, match="--allow-host"):
        ServerConfig(allow_hosts=(name,)).check()
