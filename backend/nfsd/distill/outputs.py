"""Write a run's results to a folder: texture.png (UDIM: texture.1001.png...), textured.glb, views.png, report.json,
offsets.npy; a pbr run also base_color.png, roughness.png, metallic.png, orm.png (and normal.png)."""

from __future__ import annotations

import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..geometry import mesh as mesh_lib
from ..geometry.glb_export import orm_image, save_textured_glb
from ..geometry.udim import split_atlas
from ..render.cameras import orbit_cameras
from ..errors import NfsdError
from .image_files import atomic_write_bytes, from_uint8, grid, save_png
from ..render.renderer import flat_lighting, get_rasterizer, render_views
from ..render.shading import studio_lighting
from .material import material_texture

# The fixed views of views.png: front, right, back, left at 15 deg, one from above and one from below
# (an artist orbits under the mesh too, and a texel seen only at grazing angles shows it there first).
VIEW_AZIMUTHS = (0.0, 90.0, 180.0, 270.0, 45.0, 45.0)
VIEW_ELEVATIONS = (15.0, 15.0, 15.0, 15.0, 60.0, -60.0)
# Their background: a neutral grey, so that white parts of a texture keep their outline (on white,
# a white stripe read as a hole in the mesh) and black ones do too.
VIEW_BACKGROUND = (0.5, 0.5, 0.5)


def render_result(result, size: int = 256, azimuths=VIEW_AZIMUTHS, elevations=VIEW_ELEVATIONS,
                  background=VIEW_BACKGROUND, device: str | torch.device = "cpu", rasterizer=None,
                  studio: int | None = None):
    """Render a result's textured (and displaced) mesh from fixed orbit cameras with flat lighting.

    ``elevations`` may be one number for every azimuth. Returns the ``RenderOutput`` (images
    ``[N, 3, size, size]`` float, row 0 top, and masks). ``studio`` 0 or 1: a pbr result's material
    (``result.maps``) under that ``nfsd.render.shading.studio_lighting`` instead of the flat base colour.
    """
    mesh = result.mesh
    world = mesh.world_positions()
    transform = mesh_lib.framing_transform(mesh)  # as the run framed it: loose vertices ignored
    offsets = getattr(result, "offsets", None)  # anything with mesh, uvs and texture renders
    if offsets is not None:
        world = (mesh.world_matrix[:3, :3] @ (mesh.positions + offsets).T).T + mesh.world_matrix[:3, 3]
    positions = torch.from_numpy(transform.apply(world).astype(np.float32)).to(device)
    triangles = torch.from_numpy(mesh.triangles.astype(np.int32)).to(device)
    uvs = torch.from_numpy(result.uvs.astype(np.float32)).to(device)
    texture = from_uint8(result.texture).to(device)
    cams = orbit_cameras(azimuths, elevations).to(device)
    lighting = flat_lighting(len(cams), background)
    if studio is not None:
        texture = material_texture(result.texture, result.maps).to(device)
        lighting = studio_lighting(cams.eye, studio, background)
    rasterizer = rasterizer or get_rasterizer("auto", device)
    with torch.no_grad():
        return render_views(rasterizer, positions, triangles, uvs, texture, cams, size, lighting)


def render_result_views(result, size: int = 256, azimuths=VIEW_AZIMUTHS, elevations=VIEW_ELEVATIONS,
                        device: str | torch.device = "cpu", rasterizer=None, studio: int | None = None) -> np.ndarray:
    """``render_result`` on the grey ``VIEW_BACKGROUND`` as uint8 ``[N, size, size, 3]`` (row 0 top): views.png."""
    out = render_result(result, size, azimuths, elevations, device=device, rasterizer=rasterizer, studio=studio)
    return (out.image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def render_material_views(result, size: int = 256, device: str | torch.device = "cpu", rasterizer=None) -> np.ndarray:
    """A pbr result's views.png: the six views under studio lightings 0 and 1, uint8 ``[2, 6, size, size, 3]``
    (row 0 top)."""
    return np.stack([render_result_views(result, size, device=device, rasterizer=rasterizer, studio=k)
                     for k in (0, 1)])


def map_images(result) -> dict[str, np.ndarray]:
    """A pbr result's map files (name without ``.png`` -> uint8 image, row 0 bottom): ``base_color`` (sRGB, the
    same bytes as ``texture``), ``roughness`` and ``metallic`` (linear grey), ``orm`` (glTF packing: R occlusion
    255, G roughness, B metallic) and, with a normal map, ``normal``. Empty for an albedo result."""
    maps = getattr(result, "maps", None) or {}
    if not maps:
        return {}
    images = {"base_color": result.texture, "roughness": maps["roughness"], "metallic": maps["metallic"],
              "orm": orm_image(maps)}
    if "normal" in maps:
        images["normal"] = maps["normal"]
    return images


def output_names(result) -> list[str]:
    """The files ``write_outputs`` writes for ``result`` (offsets.npy aside), in order."""
    udim = getattr(result, "udim", None)
    maps = list(map_images(result))
    if udim is None:
        images = ["texture.png"] + [f"{m}.png" for m in maps]
    else:
        images = [f"{m}.{t}.png" for m in ["texture", *maps] for t in udim.tiles]
    return images + ["textured.glb", "views.png", "report.json"]


def report_dict(result) -> dict:
    """The JSON-able summary of a run: settings, timings, losses, mesh and environment (and ``udim``:
    the tiles of a mesh laid out in UDIM tiles, see ``udim_report``)."""
    report = {
        "nfsd_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": result.config.to_dict(),
        "steps_done": result.steps_done,
        "cancelled": result.cancelled,
        "timings": result.timings,
        "losses": result.losses,
        "mesh": {"vertices": result.mesh.num_vertices, "faces": result.mesh.num_faces,
                 "uvs_generated": result.uvs_generated, "warnings": list(result.mesh.warnings)},
        "info": result.info,
        "material": material_report(result),
        "files": output_names(result) + (["offsets.npy"] if result.offsets is not None else []),
    }
    if getattr(result, "udim", None) is not None:
        report["udim"] = udim_report(result)
    return report


def material_report(result) -> dict:
    """report.json's ``material``: the kind (albedo or pbr), the maps and what each file holds."""
    maps = map_images(result)
    if not maps:
        return {"kind": "albedo", "maps": [], "texture": "texture.png: sRGB colour, lighting baked in as the prior drew it"}
    return {"kind": "pbr", "maps": sorted(getattr(result, "maps", {})),
            "texture": "texture.png = base_color.png: sRGB base colour", "roughness": "linear grey, 0..255 -> 0..1",
            "metallic": "linear grey, 0..255 -> 0..1", "orm": "glTF packing: R occlusion 255, G roughness, B metallic",
            **({"normal": "tangent space, OpenGL convention (+Y up), z from x and y"} if "normal" in maps else {}),
            "glb": "pbrMetallicRoughness: baseColorTexture, metallicRoughnessTexture (orm)"
                   + (", normalTexture" if "normal" in maps else ""),
            "views": "views.png: row 1 studio lighting 0 (white key, cool fill), row 2 lighting 1 (warm side, blue rim)"}


GLB_ATLAS_NOTE = ("glTF has no UDIM: textured.glb holds the tiles side by side in one atlas texture, with the "
                  "UVs moved into it; the UDIM tiles are texture.<tile>.png on the mesh's own UVs")


def udim_report(result) -> dict:
    """report.json's ``udim``: the tiles, their files, the atlas textured.glb holds instead."""
    layout = result.udim.layout
    return {"tiles": list(layout.tiles), "files": [f"texture.{t}.png" for t in layout.tiles],
            "tile_size": int(result.config.texture_size), "atlas": f"{layout.cols}x{layout.rows}",
            "atlas_size": int(result.texture.shape[0]), "glb": GLB_ATLAS_NOTE}


def write_outputs(result, out_dir, views_size: int = 256) -> dict[str, Path]:
    """Write every output file of a run into ``out_dir`` (created), each atomically.

    Files: ``texture.png`` (dilated sRGB albedo; a mesh laid out in UDIM tiles gets ``texture.1001.png``,
    ``texture.1002.png``... instead, one per tile, and textured.glb the atlas of its tiles on atlas UVs, as
    glTF has no UDIM), ``textured.glb`` (world space, Y-up as glTF wants),
    ``views.png`` (6 fixed views: four sides, above, below), ``report.json``, and ``offsets.npy`` (``[V, 3]`` float32 object
    space) when offsets were optimized. A pbr result (``result.maps``) adds ``base_color.png`` (the same as
    texture.png), ``roughness.png``, ``metallic.png``, ``orm.png`` and, with a normal map, ``normal.png``
    (``map_images``; UDIM: ``roughness.1001.png``... per tile); its textured.glb carries them as a
    pbrMetallicRoughness material and its views.png has two rows, one per studio lighting.

    Returns:
        name -> path of each file written.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NfsdError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
    udim = getattr(result, "udim", None)
    paths = {name: out / name for name in output_names(result)}
    images = {"texture": result.texture, **map_images(result)}
    for name, image in images.items():
        if udim is None:
            save_png(image, paths[f"{name}.png"])
        else:  # one image per tile; textured.glb and views.png use the atlas (result.texture, result.uvs)
            for tile, part in split_atlas(image, udim.layout).items():
                save_png(part, paths[f"{name}.{tile}.png"])
    with tempfile.TemporaryDirectory(dir=out, prefix=".glb-") as tmp:
        save_textured_glb(result.mesh, result.texture, Path(tmp) / "textured.glb", offsets=result.offsets,
                          maps=getattr(result, "maps", None))
        atomic_write_bytes(paths["textured.glb"], (Path(tmp) / "textured.glb").read_bytes())
    if getattr(result, "maps", None):
        rows = render_material_views(result, views_size)
        views = grid([v for row in rows for v in row], rows.shape[1])
    else:
        views = render_result_views(result, views_size)
        views = grid(list(views), len(views))
    save_png(np.ascontiguousarray(views[::-1]), paths["views.png"])
    atomic_write_bytes(paths["report.json"], json.dumps(report_dict(result), indent=2).encode())
    if result.offsets is not None:
        buf = io.BytesIO()
        np.save(buf, result.offsets.astype(np.float32))
        paths["offsets.npy"] = out / "offsets.npy"
        atomic_write_bytes(paths["offsets.npy"], buf.getvalue())
    return paths


def result_npz(result, meta: dict | None = None) -> bytes:
    """The result in the add-on's format (docs/API.md): texture RGBA uint8 row 0 bottom, uvs, offsets.

    A mesh laid out in UDIM tiles: ``texture`` uint8 ``[T, H, W, 4]`` (one per tile), ``tiles`` int32
    ``[T]`` their numbers, and ``uvs`` the mesh's own UDIM UVs. A pbr run adds ``roughness`` and ``metallic``
    uint8 ``[H, W]`` (UDIM ``[T, H, W]``) linear, and ``normal`` uint8 ``[H, W, 3]`` (``[T, H, W, 3]``) with
    ``normal_map``: ``TextureResult.maps``, row 0 bottom as ``texture``."""
    udim = getattr(result, "udim", None)
    textures = [result.texture] if udim is None else [udim.textures[t] for t in udim.tiles]
    h, w, _ = textures[0].shape
    rgba = np.stack([np.concatenate([t, np.full((h, w, 1), 255, np.uint8)], axis=2) for t in textures])
    arrays = {
        "texture": rgba[0] if udim is None else rgba,
        "uvs": (result.uvs if udim is None else udim.uvs).astype(np.float32),
        "uvs_generated": np.array(bool(result.uvs_generated)),
        "meta": np.array(json.dumps(meta if meta is not None else report_dict(result))),
    }
    if udim is not None:
        arrays["tiles"] = np.asarray(udim.tiles, np.int32)
    for name, image in sorted(getattr(result, "maps", {}).items()):  # pbr: roughness, metallic[, normal]
        image = np.asarray(image, np.uint8)
        arrays[name] = image if udim is None else np.stack(list(split_atlas(image, udim.layout).values()))
    if result.offsets is not None:
        arrays["offsets"] = result.offsets.astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
