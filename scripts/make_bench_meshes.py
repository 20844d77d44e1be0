"""Make the real-mesh benchmark's OBJ files with Blender (bpy), into benchmarks/meshes/.

    python scripts/make_bench_meshes.py            # bpy in its own process (never beside pymeshlab)

Four meshes with different UV layouts, all generated here (licence: the project's; Suzanne is
Blender's built-in primitive, and what Blender outputs belongs to its user):

- suzanne.obj:  Blender's monkey, subdivided once, with its own UVs (quads kept in the file).
- hardsurface.obj: a bevelled box with a cylinder boss on top and a slot cut in front, quads,
  Smart-UV-projected (many rectangular islands).
- quadruped.obj: an animal-like "scan": body, four legs, neck, head, horns and ears made of
  primitives, voxel-remeshed into one watertight surface, Smart-UV-projected (many small islands,
  thin parts), triangulated.
- quadruped_noisy.obj: the same animal with surface noise and no UVs: the backend unwraps it with
  xatlas, as it does for a scan without a UV map.

Deterministic (fixed seeds); each file stays under ~300 KB.
"""

import math
import sys
from pathlib import Path

import bpy
import bmesh
import numpy as np

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "meshes"


def clear():
    bpy.ops.object.select_all(action="SELECT")
    bpy.ops.object.delete()


def active():
    return bpy.context.view_layer.objects.active


def apply_all(obj):
    bpy.context.view_layer.objects.active = obj
    for m in list(obj.modifiers):
        bpy.ops.object.modifier_apply(modifier=m.name)


def smart_uv(obj, angle=66.0, margin=0.01):
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.mesh.select_all(action="SELECT")
    bpy.ops.uv.smart_project(angle_limit=math.radians(angle), island_margin=margin)
    bpy.ops.object.mode_set(mode="OBJECT")


def export(obj, name, uvs=True, triangulate=False):
    bpy.ops.object.select_all(action="DESELECT")
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj
    path = OUT / name
    bpy.ops.wm.obj_export(filepath=str(path), export_selected_objects=True, export_uv=uvs, export_normals=False,
                          export_materials=False, export_triangulated_mesh=triangulate, apply_modifiers=True)
    print(f"{path.name}: {len(obj.data.polygons)} polygons, {path.stat().st_size // 1024} KB")


def suzanne():
    clear()
    bpy.ops.mesh.primitive_monkey_add(size=2.0, calc_uvs=True)
    obj = active()
    obj.modifiers.new("sub", "SUBSURF").levels = 1
    apply_all(obj)
    export(obj, "suzanne.obj")


def hardsurface():
    clear()
    bpy.ops.mesh.primitive_cube_add(size=2.0)
    box = active()
    box.scale = (1.4, 1.0, 0.6)
    bpy.ops.object.transform_apply(scale=True)
    bpy.ops.mesh.primitive_cylinder_add(vertices=24, radius=0.45, depth=0.6, location=(0.3, 0.0, 0.8))
    boss = active()
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(-0.6, -1.0, 0.0))
    slot = active()
    slot.scale = (0.8, 0.4, 0.25)
    bpy.ops.object.transform_apply(scale=True)
    for other, op in ((boss, "UNION"), (slot, "DIFFERENCE")):
        mod = box.modifiers.new(op, "BOOLEAN")
        mod.operation, mod.object, mod.solver = op, other, "EXACT"
        bpy.context.view_layer.objects.active = box
        bpy.ops.object.modifier_apply(modifier=mod.name)
        bpy.data.objects.remove(other)
    bev = box.modifiers.new("bevel", "BEVEL")
    bev.width, bev.segments, bev.limit_method = 0.06, 2, "ANGLE"
    apply_all(box)
    # Ngons from the booleans become quads/triangles; quads stay quads in the file.
    bpy.context.view_layer.objects.active = box
    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.mesh.select_all(action="SELECT")
    bpy.ops.mesh.quads_convert_to_tris(quad_method="BEAUTY", ngon_method="BEAUTY")
    bpy.ops.mesh.tris_convert_to_quads()
    bpy.ops.object.mode_set(mode="OBJECT")
    smart_uv(box)
    export(box, "hardsurface.obj")


def quadruped():
    """Primitives joined and voxel-remeshed into one surface (Z up, front towards -Y)."""
    clear()
    parts = []

    def ellipsoid(loc, scale, rot=(0, 0, 0)):
        bpy.ops.mesh.primitive_uv_sphere_add(segments=24, ring_count=12, location=loc, rotation=rot)
        o = active()
        o.scale = scale
        parts.append(o)

    def limb(loc, radius, depth, rot=(0, 0, 0)):
        bpy.ops.mesh.primitive_cylinder_add(vertices=12, radius=radius, depth=depth, location=loc, rotation=rot)
        parts.append(active())

    ellipsoid((0, 0, 1.0), (0.5, 1.1, 0.45))                      # body
    for x in (-0.3, 0.3):
        for y in (-0.7, 0.7):
            limb((x, y, 0.45), 0.1, 0.9)                             # legs
            ellipsoid((x, y, 0.04), (0.13, 0.15, 0.06))              # hooves
    limb((0, -1.15, 1.45), 0.17, 0.8, rot=(math.radians(-35), 0, 0))  # neck
    ellipsoid((0, -1.45, 1.8), (0.22, 0.38, 0.22), rot=(math.radians(-20), 0, 0))  # head
    for s in (-1, 1):
        limb((s * 0.22, -1.35, 2.1), 0.035, 0.4, rot=(0, s * math.radians(35), 0))  # horns
        ellipsoid((s * 0.3, -1.3, 1.9), (0.14, 0.04, 0.07))           # ears
    limb((0, 1.2, 1.0), 0.04, 0.7, rot=(math.radians(40), 0, 0))     # tail
    bpy.ops.object.select_all(action="DESELECT")
    for o in parts:
        o.select_set(True)
    bpy.context.view_layer.objects.active = parts[0]
    bpy.ops.object.transform_apply(location=True, rotation=True, scale=True)
    bpy.ops.object.join()
    obj = active()
    rem = obj.modifiers.new("remesh", "REMESH")
    rem.mode, rem.voxel_size = "VOXEL", 0.045
    apply_all(obj)
    dec = obj.modifiers.new("decimate", "DECIMATE")
    dec.ratio = 0.25
    apply_all(obj)
    return obj


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    suzanne()
    hardsurface()
    obj = quadruped()
    smart_uv(obj, angle=60.0, margin=0.005)
    export(obj, "quadruped.obj", triangulate=True)
    # The noisy scan: the same animal with small bumps, no UVs (xatlas unwraps it).
    rng = np.random.default_rng(0)
    me = obj.data
    co = np.zeros(len(me.vertices) * 3)
    me.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    nrm = np.zeros(len(me.vertices) * 3)
    me.vertices.foreach_get("normal", nrm)
    co += nrm.reshape(-1, 3) * rng.normal(0, 0.008, (len(co), 1))
    me.vertices.foreach_set("co", co.reshape(-1))
    me.update()
    export(obj, "quadruped_noisy.obj", uvs=False, triangulate=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
