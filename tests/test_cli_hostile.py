"""The CLI on hostile files: it never echoes a file's bytes, says what a path is, and reads 16-bit
PNGs right."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from nfsd.cli import main
from nfsd.distill.image_files import decode_png, load_png


def run(capsys, *args) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_a_garbage_obj_is_never_echoed(tmp_path, capsys):
    garbage = tmp_path / "garbage.obj"
    garbage.write_bytes(b"v 1 2 " + b"\x1b[2J\x1b]0;pwned\x07" * 20_000 + b"\xff\xfe" * 50_000 + b"\nf 1 2 3\n")
    code, err = run(capsys, "texture", str(garbage), "red", "--out", str(tmp_path / "out"))
    assert code == 2
    assert "\x1b" not in err and "\x07" not in err and "pwned" not in err
    assert len(err) < 400 and "could not read it as OBJ" in err


def test_a_path_with_escapes_is_quoted_safely(tmp_path, capsys):
    code, err = run(capsys, "texture", str(tmp_path / "\x1b[31mred.obj"), "red", "--out", str(tmp_path / "out"))
    assert code == 2 and "\x1b" not in err and "file not found" in err


def test_a_directory_as_the_mesh_says_it_is_a_directory(tmp_path, capsys):
    folder = tmp_path / "meshes.obj"
    folder.mkdir()
    code, err = run(capsys, "texture", str(folder), "red", "--out", str(tmp_path / "out"))
    assert code == 2 and "is a directory" in err and "not found" not in err


def test_an_init_texture_that_is_no_image_says_so(tmp_path, capsys, tiny_model):
    mesh = tmp_path / "tri.obj"
    mesh.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n")
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    code, err = run(capsys, "texture", str(mesh), "red", "--out", str(tmp_path / "out"), "--init-texture", str(text),
                    "--model", str(tiny_model))
    assert code == 2 and "not a PNG or other image file" in err
    assert "0x" not in err and "BytesIO" not in err


def test_a_16_bit_grey_png_keeps_its_grey():
    grey = np.full((4, 4), int(0.61 * 65535), np.uint16)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")
    rgb = decode_png(buf.getvalue())
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert abs(int(rgb[0, 0, 0]) - round(0.61 * 255)) <= 1


def test_an_8_bit_png_is_unchanged(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    assert (load_png(tmp_path / "x.png") == arr[::-1]).all()
