"""Bombs and floods cost the server nothing: mesh limits read from the .npz headers, PNG sizes from
the IHDR chunk, settings size and depth, short error quotes, uploads spooled in the data dir, a full
disk, a queue limit and a stall timeout for request bodies."""

from __future__ import annotations

import errno
import io
import json
import socket
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
import torch
from server_kit import FAST, PROMPT, LiveServer, config, cube, npz, octahedron, submit, wait_for

from nfsd.errors import ConfigError, MeshError
from nfsd.server import ServerConfig
from nfsd.priors.tiny import build_tiny_model
from nfsd.geometry.wire import read_wire_npz


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", prompt_words=(PROMPT,)))


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    torch.set_num_threads(1)
    with LiveServer(config(tiny_model, tmp_path_factory.mktemp("data"), max_faces=200, max_vertices=1000,
                           max_queue=2, body_timeout=1.0)) as live:
        yield live


def compressed_npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming ``width`` x ``height``, then IEND: no pixel data at all."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------
# mesh limits from the member headers

def test_a_mesh_bomb_is_refused_from_its_headers_without_inflating_it():
    bomb = compressed_npz(positions=np.zeros((2_000_000, 3), np.float32), triangles=np.zeros((1, 3), np.int32))
    assert len(bomb) < 100_000  # 24 MB of vertices in a few kB
    tracemalloc.start()
    try:
        with pytest.raises(MeshError, match="2,000,000 vertices, more than the limit of 1,500,000"):
            read_wire_npz(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000  # the 24 MB array was never allocated


def test_members_that_inflate_too_much_or_lie_about_their_size_are_refused():
    zeros = compressed_npz(positions=np.zeros((200_000, 3), np.float32), triangles=np.zeros((1, 3), np.int32))
    with pytest.raises(MeshError, match="would inflate"):
        read_wire_npz(zeros)
    lying = io.BytesIO()
    with zipfile.ZipFile(lying, "w") as z:
        for name, array in cube().items():
            member = io.BytesIO()
            shape = (9, 3) if name == "positions" else array.shape  # 8 vertices follow
            np.lib.format.write_array_header_1_0(member, {"descr": array.dtype.str, "fortran_order": False, "shape": shape})
            z.writestr(f"{name}.npy", member.getvalue() + array.tobytes())
    with pytest.raises(MeshError, match=r"'positions' claims shape \[9, 3\]"):
        read_wire_npz(lying.getvalue())


def test_too_many_vertices_or_faces_get_422_naming_the_option(server):
    many_vertices = dict(cube(), positions=np.random.default_rng(0).random((1001, 3), dtype=np.float32))
    r = submit(server.client, many_vertices, FAST)
    assert r.status_code == 422 and "limit of 1,000" in r.json()["detail"] and "--max-vertices" in r.json()["detail"]
    m = octahedron()
    r = submit(server.client, dict(m, triangles=np.tile(m["triangles"], (26, 1))), FAST)
    assert r.status_code == 422 and "--max-faces" in r.json()["detail"]


def test_mesh_checks_never_run_in_the_server_process(server, monkeypatch):
    import nfsd.geometry.mesh

    def in_server_process(*a, **kw):
        raise AssertionError("a mesh was checked in the server process")

    monkeypatch.setattr(nfsd.geometry.mesh, "check_mesh", in_server_process)
    r = submit(server.client, cube(), dict(FAST, steps=1))
    assert r.status_code == 202, r.text
    wait_for(server.client, r.json()["id"])


# ---------------------------------------------------------------------------------------------
# init texture, settings, quotes

def test_png_size_is_read_from_its_header_before_decoding(server):
    r = submit(server.client, cube(), FAST, init=png_header_only(20000, 20000))
    assert r.status_code == 422 and "20000x20000" in r.json()["detail"], r.text


def test_deeply_nested_or_huge_settings_get_4xx_not_500(server):
    files = {"mesh": ("m.npz", npz(**cube()), "application/octet-stream")}
    r = server.client.post("/jobs", files=files, data={"settings": "[" * 200_000})
    assert r.status_code == 413, r.text
    r = server.client.post("/jobs", files=files, data={"settings": "[" * 20_000})
    assert r.status_code == 422 and "nests 20000 levels" in r.json()["detail"]
    r = server.client.post("/jobs", files=files, data={"settings": '{"prompt": "[[[[", "steps": 5}'})
    assert r.status_code != 422 or "nests" not in r.json()["detail"]  # brackets inside strings do not count


def test_error_messages_quote_only_a_short_prefix_of_the_input(server):
    for bad in (dict(FAST, prompt="a" * 5000), dict(FAST, mode="x" * 5000), dict(FAST, model="/" + "m" * 900),
                {("k" * 5000): 1, "prompt": PROMPT}):
        r = submit(server.client, cube(), bad)
        assert r.status_code == 422, r.text
        assert len(r.json()["detail"]) < 600, r.json()["detail"][:200]


# ---------------------------------------------------------------------------------------------
# spooling, full disk, queue, stalled bodies

def test_uploads_are_spooled_in_the_data_dir_and_removed_after(server, monkeypatch):
    import nfsd.server.uploads as uploads

    written = []
    real = uploads.write_chunks
    monkeypatch.setattr(uploads, "write_chunks", lambda path, chunks: (written.append(path), real(path, chunks)))
    r = submit(server.client, cube(), dict(FAST, steps=1))
    assert r.status_code == 202
    spool = server.config.data_dir / "uploads"
    assert written and all(spool in p.parents for p in written)
    assert list(spool.iterdir()) == []
    wait_for(server.client, r.json()["id"])


def test_a_full_disk_gives_507_and_queues_nothing(server, monkeypatch):
    import nfsd.server.uploads as uploads

    def full(path, chunks):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = len(server.client.get("/jobs").json()["jobs"])
    monkeypatch.setattr(uploads, "write_chunks", full)
    r = submit(server.client, cube(), FAST)
    assert r.status_code == 507 and "disk is full" in r.json()["detail"] and "--data-dir" in r.json()["detail"]
    monkeypatch.undo()
    monkeypatch.setattr(server.app.state.manager.store, "create", lambda *a: full(None, None))
    r = submit(server.client, cube(), FAST)
    assert r.status_code == 507, r.text
    assert len(server.client.get("/jobs").json()["jobs"]) == before


def test_a_full_queue_gives_429(server):
    first = submit(server.client, cube(), dict(FAST, steps=10_000)).json()["id"]
    wait_for(server.client, first, states=("running",))
    queued = [submit(server.client, cube(), FAST) for _ in range(2)]
    assert [r.status_code for r in queued] == [202, 202]
    over = submit(server.client, cube(), FAST)
    assert over.status_code == 429 and "queue is full" in over.json()["detail"]
    for job_id in [first] + [r.json()["id"] for r in queued]:
        server.client.post(f"/jobs/{job_id}/cancel")
    wait_for(server.client, first)


@pytest.mark.parametrize("name, value", [("max_jobs", 0), ("max_queue", 0), ("max_faces", 0), ("body_timeout", 0)])
def test_limits_below_one_are_refused_at_start(name, value):
    with pytest.raises(ConfigError, match=name.replace("_", "-")):
        ServerConfig(**{name: value}).check()


def test_a_body_that_stalls_is_dropped_with_408(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                  b"Content-Length: 100000\r\n\r\n--x\r\nContent-Disposition: form-data; name=\"settings\"\r\n\r\n{")
        answer = b""
        while chunk := s.recv(65536):  # until the server closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"].startswith("the request body stopped arriving")
    assert list((server.config.data_dir / "uploads").iterdir()) == []


def test_the_upload_benchmark_sends_a_valid_mesh():
    from nfsd.bench.server_load import grid_mesh_npz

    data, n_vertices, n_faces = grid_mesh_npz(6)
    mesh = read_wire_npz(data)
    assert (mesh.num_vertices, mesh.num_faces) == (n_vertices, n_faces) == (36, 50)
    assert mesh.uvs.shape == (50, 3, 2) and not mesh.warnings
