"""A server's result .npz (docs/API.md, "Result .npz") turned into a row's files, without the engine.

Files: ``result.npz`` as downloaded; ``texture.png`` (the base colour; a UDIM mesh: ``texture.<tile>.png``);
``roughness.png``, ``metallic.png`` and ``normal.png`` when the result holds those maps (``material`` pbr);
``offsets.npy`` with offsets; ``textured.glb`` and ``views.png`` (the mesh as sent, on the result's UVs;
not for UDIM tiles, which glTF cannot hold); ``report.json``: the result's ``meta`` and where it ran.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..distill.image_files import atomic_write_bytes, grid, save_png
from ..geometry.mesh import Mesh
from ..geometry.glb_export import save_textured_glb

MAPS = ("roughness", "metallic", "normal")


def write_result_files(data: bytes, mesh: Mesh, folder: Path, origin: dict) -> list[str]:
    """Write the files of one result (``data``: the .npz bytes; ``mesh``: the mesh that was sent) into
    ``folder``, each atomically; ``origin`` (server, job id) goes into report.json. Returns the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "result.npz", data)
    written = ["result.npz"]
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    texture = arrays["texture"][..., :3]  # RGBA, row 0 bottom: the base colour
    tiles = arrays.get("tiles")
    offsets = arrays.get("offsets")
    for name, image in [("texture", texture)] + [(m, arrays[m]) for m in MAPS if m in arrays]:
        if tiles is None:
            written.append(_png(folder, f"{name}.png", image))
        else:
            written += [_png(folder, f"{name}.{int(t)}.png", image[i]) for i, t in enumerate(tiles)]
    if offsets is not None:
        buf = io.BytesIO()
        np.save(buf, offsets.astype(np.float32))
        atomic_write_bytes(folder / "offsets.npy", buf.getvalue())
        written.append("offsets.npy")
    if tiles is None:
        written += _mesh_files(replace(mesh, uvs=arrays["uvs"]), texture, offsets, folder)
    report = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
    report["batch"] = origin
    atomic_write_bytes(folder / "report.json", json.dumps(report, indent=2, default=str).encode())
    return written + ["report.json"]


def _png(folder: Path, name: str, image: np.ndarray) -> str:
    save_png(np.asarray(image, np.uint8), folder / name)
    return name


def _mesh_files(mesh: Mesh, texture: np.ndarray, offsets, folder: Path) -> list[str]:
    """textured.glb and views.png, as ``nfsd.distill.outputs.write_outputs`` makes them."""
    from ..distill.outputs import render_result_views

    with tempfile.TemporaryDirectory(dir=folder, prefix=".glb-") as tmp:
        save_textured_glb(mesh, texture, Path(tmp) / "textured.glb", offsets=offsets)
        atomic_write_bytes(folder / "textured.glb", (Path(tmp) / "textured.glb").read_bytes())
    views = render_result_views(SimpleNamespace(mesh=mesh, uvs=mesh.uvs, texture=texture, offsets=offsets))
    save_png(np.ascontiguousarray(grid(list(views), len(views))[::-1]), folder / "views.png")
    return ["textured.glb", "views.png"]
