"""Hostile input: dozens of distinct bad requests, each answered with a 4xx JSON that says what was
wrong, and a server that is healthy afterwards (it answers /health and runs a good job)."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib

import httpx
import numpy as np
import pytest
import torch
from server_kit import FAST, PROMPT, LiveServer, config, cube, npz, png, submit, wait_for

from nfsd.priors.tiny import build_tiny_model

TOKEN = "h0stile-t0ken"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    torch.set_num_threads(1)
    model = build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", prompt_words=(PROMPT,))
    with LiveServer(config(str(model), tmp_path_factory.mktemp("data"), token=TOKEN, max_faces=200,
                           max_vertices=1000, max_upload_bytes=512 * 1024)) as live:
        yield live


def mesh(**changes) -> bytes:
    m = cube()
    m.update(changes)
    return npz(**{k: v for k, v in m.items() if v is not None})


def raw_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def bomb() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, positions=np.zeros((2_000_000, 3), np.float32), triangles=np.zeros((1, 3), np.int32))
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "xyz") -> tuple[bytes, dict]:
    body = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def post_parts(c, parts, **kw):
    body, headers = multipart(parts, **kw)
    return c.post("/jobs", content=body, headers=headers)


def settings(**changes) -> dict:
    return dict(FAST, **changes)


def chunked(c):
    def body():
        yield b"--x\r\n"
    return c.post("/jobs", content=body(), headers={"Content-Type": "multipart/form-data; boundary=x"})


GOOD_MESH = ("mesh", "m.npz", npz(**cube()))
GOOD_SETTINGS = ("settings", None, json.dumps(FAST).encode())
ID = "0123456789abcdef" * 2

BAD = {
    # who may ask
    "foreign Host (DNS rebinding)": (lambda c: c.get("/jobs", headers={"Host": "evil.example"}), 421),
    "cross-site Origin": (lambda c: submit(c.__class__(base_url=c.base_url, headers={**c.headers, "Origin": "http://evil.example"}), cube(), FAST), 403),
    "Sec-Fetch-Site cross-site": (lambda c: c.delete(f"/jobs/{ID}", headers={"Sec-Fetch-Site": "cross-site"}), 403),
    "no token": (lambda c: httpx.get(f"{c.base_url}/jobs"), 401),
    "wrong token": (lambda c: c.get("/jobs", headers={"Authorization": "Bearer nope"}), 401),
    "Basic auth instead of Bearer": (lambda c: c.get("/jobs", headers={"Authorization": f"Basic {TOKEN}"}), 401),
    # the body
    "JSON instead of multipart": (lambda c: c.post("/jobs", json=FAST), 415),
    "no content type": (lambda c: c.post("/jobs", content=b"abc"), 415),
    "multipart without boundary": (lambda c: c.post("/jobs", content=b"abc", headers={"Content-Type": "multipart/form-data"}), 400),
    "chunked body": (chunked, 411),
    "body over the upload limit": (lambda c: submit(c, b"\0" * 600_000, FAST), 413),
    "body without closing boundary": (lambda c: c.post("/jobs", content=b'--xyz\r\nContent-Disposition: form-data; name="settings"\r\n\r\n{}', headers={"Content-Type": "multipart/form-data; boundary=xyz"}), 400),
    "garbage body": (lambda c: c.post("/jobs", content=b"\x00\xff" * 500, headers={"Content-Type": "multipart/form-data; boundary=xyz"}), 400),
    "unknown form field": (lambda c: post_parts(c, [GOOD_MESH, GOOD_SETTINGS, ("evil", None, b"1")]), 422),
    "settings sent twice": (lambda c: post_parts(c, [GOOD_MESH, GOOD_SETTINGS, GOOD_SETTINGS]), 422),
    "mesh sent as text": (lambda c: post_parts(c, [("mesh", None, b"PK"), GOOD_SETTINGS]), 422),
    "no mesh": (lambda c: post_parts(c, [GOOD_SETTINGS]), 422),
    "no settings": (lambda c: post_parts(c, [GOOD_MESH]), 422),
    # settings
    "settings not JSON": (lambda c: post_parts(c, [GOOD_MESH, ("settings", None, b"{prompt")]), 422),
    "settings a JSON array": (lambda c: post_parts(c, [GOOD_MESH, ("settings", None, b"[1, 2]")]), 422),
    "settings 200k open brackets": (lambda c: post_parts(c, [GOOD_MESH, ("settings", None, b"[" * 200_000)]), 413),
    "settings nested 1000 deep": (lambda c: post_parts(c, [GOOD_MESH, ("settings", None, b"[" * 1000 + b"]" * 1000)]), 422),
    "settings over 64 KiB": (lambda c: submit(c, cube(), settings(negative_prompt="n" * 70_000)), 413),
    "unknown setting": (lambda c: submit(c, cube(), settings(stpes=10)), 422),
    "empty prompt": (lambda c: submit(c, cube(), settings(prompt=" ")), 422),
    "prompt of 5000 characters": (lambda c: submit(c, cube(), settings(prompt="a" * 5000)), 422),
    "unknown encoder": (lambda c: submit(c, cube(), settings(encoder="huge")), 422),
    "17 LoRAs": (lambda c: submit(c, cube(), settings(loras=["x"] * 17)), 422),
    "steps 0": (lambda c: submit(c, cube(), settings(steps=0)), 422),
    "steps a word": (lambda c: submit(c, cube(), settings(steps="many")), 422),
    "texture_size not a multiple": (lambda c: submit(c, cube(), settings(texture_size=100)), 422),
    "render_size too big": (lambda c: submit(c, cube(), settings(render_size=4096)), 422),
    "unknown mode": (lambda c: submit(c, cube(), settings(mode="dreamfusion")), 422),
    "negative seed": (lambda c: submit(c, cube(), settings(seed=-1)), 422),
    "guidance scale 1e9": (lambda c: submit(c, cube(), settings(guidance_scale=1e9)), 422),
    "offsets not a bool": (lambda c: submit(c, cube(), settings(offsets="maybe")), 422),
    "model path that does not exist": (lambda c: submit(c, cube(), settings(model="/no/such/model")), 422),
    "model path too long": (lambda c: submit(c, cube(), settings(model="/" + "m" * 1000)), 422),
    # the mesh
    "mesh not a zip": (lambda c: submit(c, b"solid cube\nendsolid", FAST), 422),
    "mesh a single .npy": (lambda c: submit(c, b"\x93NUMPY" + b"\0" * 100, FAST), 422),
    "mesh with Python objects": (lambda c: submit(c, raw_zip({"positions.npy": b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (3,), }" + b" " * 53 + b"\n"}), FAST), 422),
    "mesh bomb (2M zero vertices)": (lambda c: submit(c, bomb(), FAST), 422),
    "mesh over the face limit": (lambda c: submit(c, mesh(triangles=np.tile(cube()["triangles"], (20, 1)), uvs=None), FAST), 422),
    "zip of 1000 members": (lambda c: submit(c, raw_zip({f"a{i}.npy": b"" for i in range(1000)}), FAST), 422),
    "unknown array": (lambda c: submit(c, mesh(colors=np.zeros((8, 3), np.float32)), FAST), 422),
    "missing triangles": (lambda c: submit(c, mesh(triangles=None, uvs=None), FAST), 422),
    "NaN positions": (lambda c: submit(c, mesh(positions=np.full((8, 3), np.nan, np.float32)), FAST), 422),
    "index out of range": (lambda c: submit(c, mesh(triangles=cube()["triangles"] + 8), FAST), 422),
    "negative index": (lambda c: submit(c, mesh(triangles=cube()["triangles"] - 1), FAST), 422),
    "world matrix not affine": (lambda c: submit(c, mesh(world_matrix=np.ones((4, 4), np.float32)), FAST), 422),
    "uvs of the wrong shape": (lambda c: submit(c, mesh(uvs=np.zeros((3, 2), np.float32)), FAST), 422),
    # the init texture
    "init texture a JPEG": (lambda c: submit(c, cube(), FAST, init=b"\xff\xd8\xff\xe0" + b"\0" * 100), 422),
    "init texture claims 20000x20000": (lambda c: submit(c, cube(), FAST, init=png_claiming(20000, 20000)), 422),
    "init texture truncated": (lambda c: submit(c, cube(), FAST, init=png(64, 64)[:60]), 422),
    # job ids and routes
    "malformed job id": (lambda c: c.get("/jobs/XYZ"), 422),
    "job id with dots": (lambda c: c.get("/jobs/..%2F..%2Fetc%2Fpasswd"), 404),
    "job id of 10000 characters": (lambda c: c.get("/jobs/" + "a" * 10000), 422),
    "unknown job": (lambda c: c.get(f"/jobs/{ID}"), 404),
    "result of an unknown job": (lambda c: c.get(f"/jobs/{ID}/result"), 404),
    "delete an unknown job": (lambda c: c.delete(f"/jobs/{ID}"), 404),
    "resubmit an unknown job": (lambda c: c.post(f"/jobs/{ID}/resubmit"), 404),
    "unknown route": (lambda c: c.get("/admin"), 404),
    "wrong method": (lambda c: c.put("/jobs"), 405),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_request_gets_a_4xx_json_saying_what_was_wrong(server, case):
    make, status = BAD[case]
    r = make(server.client)
    assert r.status_code == status, r.text[:300]
    detail = r.json()["detail"]
    assert isinstance(detail, str) and 0 < len(detail) < 800, detail[:300]


def test_the_server_is_healthy_after_all_of_them(server):
    assert len(BAD) >= 40
    assert server.client.get("/health").json()["status"] == "ok"
    r = submit(server.client, cube(), dict(FAST, steps=2))
    assert r.status_code == 202, r.text
    assert wait_for(server.client, r.json()["id"])["state"] == "done"
    assert all(j["id"] == r.json()["id"] for j in server.client.get("/jobs").json()["jobs"])  # nothing else queued
