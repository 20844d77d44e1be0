"""Writing a textured mesh as a binary glTF (GLB) for any viewer: ``save_textured_glb`` (the albedo, and a
pbr result's maps as a glTF metallic-roughness material) and ``orm_image`` (glTF's packing of those maps).

Conventions: images are uint8 with row 0 at the BOTTOM (v = 0), as everywhere in nfsd; they are flipped
to PNG's top-first rows on write, and trimesh turns v to glTF's top-left UV origin. Positions are written
in world space (the mesh's ``world_matrix`` applied) turned from Blender's Z-up to glTF's Y-up,
``(x, y, z) -> (x, z, -y)`` (the transpose of ``nfsd.geometry.mesh_files.Y_UP_TO_Z_UP``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import MeshError
from .mesh import Mesh
from .mesh_files import Y_UP_TO_Z_UP


def save_textured_glb(mesh: Mesh, texture: np.ndarray, path: str | os.PathLike, offsets: np.ndarray | None = None,
                      maps: dict | None = None) -> None:
    """Write ``mesh`` with ``texture`` as a binary glTF (GLB) for any viewer.

    Args:
        mesh: a mesh with ``uvs`` (call ``ensure_uvs`` first).
        texture: ``[H, W, 3]`` (or RGBA ``[H, W, 4]``) uint8 sRGB albedo, row 0 = BOTTOM (v = 0).
        path: output file.
        offsets: optional ``[V, 3]`` object-space vertex offsets added before the world matrix.
        maps: a pbr result's maps (``TextureResult.maps``: ``roughness``, ``metallic`` uint8 ``[H, W]``, optional
            ``normal`` uint8 ``[H, W, 3]``, row 0 bottom): written as the material's metallicRoughness texture
            (glTF's ORM packing: R occlusion 255, G roughness, B metallic; factors 1) and normal texture
            (tangent space, +Y up; viewers derive the tangents, glTF's MikkTSpace rule).

    Positions are written in world space turned to glTF's Y-up (``(x, y, z) -> (x, z, -y)``).
    Vertices are split where corners differ in UV or normal (glTF has one UV per vertex). Normals
    are smooth per Blender vertex, except at corners more than 40 degrees off that smooth normal
    (a cube's edges), which take their face's normal. Without ``maps`` the material is unlit-looking PBR
    albedo (metallic 0, roughness 1).
    """
    import trimesh
    from PIL import Image

    if mesh.uvs is None:
        raise MeshError("the mesh has no UVs to lay the texture on; call ensure_uvs first")
    tex = np.asarray(texture)
    if tex.dtype != np.uint8 or tex.ndim != 3 or tex.shape[2] not in (3, 4):
        raise MeshError(f"texture must be uint8 [H, W, 3] (or [H, W, 4]); got {tex.dtype} {list(tex.shape)}")
    local = np.asarray(mesh.positions, np.float64)
    if offsets is not None:
        off = np.asarray(offsets, np.float64)
        if off.shape != local.shape:
            raise MeshError(f"offsets have shape {list(off.shape)}; expected {list(local.shape)}")
        local = local + off
    m = np.asarray(mesh.world_matrix, np.float64)
    world = (local @ m[:3, :3].T + m[:3, 3]) @ Y_UP_TO_Z_UP  # row vectors: p @ C == C^T p, Z-up -> Y-up
    tri = np.asarray(mesh.triangles, np.int64)

    face_n = np.cross(world[tri[:, 1]] - world[tri[:, 0]], world[tri[:, 2]] - world[tri[:, 0]])
    vert_n = np.zeros_like(world)
    for k in range(3):
        np.add.at(vert_n, tri[:, k], face_n)  # area-weighted
    face_n = _normalized(face_n)
    corner_n = _normalized(vert_n)[tri]  # [F, 3, 3]
    sharp = np.einsum("fkc,fc->fk", corner_n, face_n) < np.cos(np.radians(40.0))
    corner_n = np.where(sharp[..., None], face_n[:, None, :], corner_n)

    corner_uv = np.asarray(mesh.uvs, np.float64)
    keys = np.concatenate([tri.reshape(-1, 1), corner_uv.reshape(-1, 2), np.round(corner_n.reshape(-1, 3), 6)], axis=1)
    unique_keys, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    vertex_of = unique_keys[:, 0].astype(np.int64)
    out_normals = corner_n.reshape(-1, 3)[first]

    image = Image.fromarray(np.ascontiguousarray(tex[::-1]))  # PNG inside the GLB stores row 0 at the top
    if maps:
        extra = {"metallicRoughnessTexture": Image.fromarray(np.ascontiguousarray(orm_image(maps)[::-1])),
                 "metallicFactor": 1.0, "roughnessFactor": 1.0}
        if "normal" in maps:
            extra["normalTexture"] = Image.fromarray(np.ascontiguousarray(np.asarray(maps["normal"], np.uint8)[::-1]))
    else:
        extra = {"metallicFactor": 0.0, "roughnessFactor": 1.0}
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=image, doubleSided=False, **extra)
    out = trimesh.Trimesh(
        vertices=world[vertex_of],
        faces=inverse.reshape(-1, 3),
        visual=trimesh.visual.TextureVisuals(uv=unique_keys[:, 1:3], material=material),
        process=False,
    )
    out.vertex_normals = out_normals
    # trimesh writes glTF's top-left UV origin itself (v -> 1 - v).
    data = out.export(file_type="glb", include_normals=True)
    Path(path).write_bytes(data)


def orm_image(maps: dict) -> np.ndarray:
    """glTF's packing of a pbr result's maps: uint8 ``[H, W, 3]`` = (occlusion 255, roughness, metallic),
    from ``maps["roughness"]``, ``maps["metallic"]`` uint8 ``[H, W]`` (row order unchanged)."""
    rough = np.asarray(maps["roughness"], np.uint8)
    return np.stack([np.full_like(rough, 255), rough, np.asarray(maps["metallic"], np.uint8)], axis=-1)


def _normalized(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)
