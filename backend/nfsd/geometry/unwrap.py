"""UV unwrapping of meshes that come without UVs (xatlas), run in a child process.

xatlas 0.0.11 segfaults on some large, evenly curved meshes (icospheres of 81,920 faces, dense UV
spheres: its planar-chart pass, jpcy/xatlas#146), and takes minutes on others without a way to stop
it. So the unwrap runs in a child process (``python -m nfsd.geometry.unwrap IN.npz OUT.npy``): a crash becomes
one clear ``MeshError``, a cancel kills the child at once, and the caller sees the elapsed time.

No chart or pack option avoided the crash (max_chart_area, max_cost, max_boundary_length,
normal_deviation_weight, max_iterations, fix_winding, padding, resolution, bruteForce all still
crashed on the 81,920-face icosphere); handing xatlas the mesh in spatially compact pieces of at most
``CHUNK_FACES`` faces did, and is faster: each piece is charted on its own, all are packed into one
atlas (a piece's border becomes a seam, which matters little for an optimized texture).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import Cancelled, MeshError
from ..limits import LIMITS
from .mesh import Mesh
from ..processes.lifeline import die_with_parent

CHUNK_FACES = 20_000  # the 20,480-face icosphere unwraps whole; 81,920 faces in one piece crash
_POLL_S = 0.05
UNWRAP_TIMEOUT_S = float(LIMITS["unwrap_timeout"])
# float32 resolves about 1e-7 of a coordinate: a mesh smaller than this fraction of its distance from
# the origin has lost its shape before it reaches xatlas.
MIN_RELATIVE_EXTENT = 1e-5
MAX_COORDINATE = 1e30
ADVICE = ("unwrap it in Blender (UV > Smart UV Project) so it arrives with a UV map, or lower its face count "
          "(Decimate modifier)")


def framed(positions: np.ndarray) -> np.ndarray:
    """``positions`` moved to the origin and scaled to unit size (float32), what xatlas is given: its
    tolerances are absolute, and a mesh at 1e11 units hangs it (at 1e10 it works). UVs do not change
    under a uniform scale. Raises ``MeshError`` for non-finite or absurd coordinates."""
    p = np.asarray(positions, np.float64)
    if p.size == 0:
        return np.asarray(positions, np.float32)
    if not np.isfinite(p).all():
        raise MeshError("the mesh has non-finite vertex coordinates (NaN or infinity); fix or remove those "
                        "vertices before texturing it")
    lo, hi = p.min(axis=0), p.max(axis=0)
    far = float(np.abs(p).max())
    extent = float((hi - lo).max())
    if far > MAX_COORDINATE:
        raise MeshError(f"the mesh's coordinates reach {far:.3g}; apply a sensible scale in Blender (Object > "
                        "Apply > Scale, or scale it down) before texturing it")
    if extent <= 0 or extent < far * MIN_RELATIVE_EXTENT:
        raise MeshError(f"the mesh is {extent:.3g} units across but lies {far:.3g} units from the origin: float32 "
                        "cannot hold its shape there; move it near the origin (Object > Set Origin, or Apply > "
                        "Location) before texturing it")
    return ((p - (lo + hi) / 2) / extent).astype(np.float32)


def ensure_uvs(mesh: Mesh, on_progress: Callable[[str, float], None] | None = None,
               cancelled: Callable[[], bool] | None = None, chunk_faces: int = CHUNK_FACES,
               timeout: float | None = None, resolution: int = 0) -> Mesh:
    """Return ``mesh`` itself when it has UVs, else a copy unwrapped with xatlas (in a child process).

    The copy shares ``positions`` and ``triangles`` (untouched, same order) and gets per-corner
    ``uvs`` [F, 3, 2] float32 in [0, 1] in a single atlas, ``uvs_generated=True``. Charts are cut
    in world space so a non-uniformly scaled object gets even texel density where it is rendered.
    Degenerate faces get zero-area UVs. Chart growing is not refined (``max_iterations=0``): about
    twice as fast on large meshes, and seams matter little for an optimized texture.

    Args:
        on_progress: called with ``("unwrapping N faces", elapsed_seconds)`` at the start and about
            every half second while the unwrap runs.
        cancelled: polled every 50 ms; when it returns True the child is killed and ``Cancelled`` raised.
        chunk_faces: the most faces xatlas charts in one piece (see the module docstring).
        timeout: seconds the unwrap may take (default ``UNWRAP_TIMEOUT_S``); then the child is killed.
        resolution: the texture size the atlas is packed for (its 2-texel padding between charts is then
            2 texels of that texture); 0: xatlas's own choice (about 1024). See ``nfsd.geometry.texel_density``.

    The mesh is framed (moved to the origin, scaled to unit size) before xatlas sees it.

    Raises:
        MeshError: xatlas failed, crashed or ran out of time; non-finite or absurd coordinates (the
            message says what to do instead).
        Cancelled: ``cancelled()`` became true.
    """
    if mesh.uvs is not None:
        return mesh
    uvs = unwrap_in_child(mesh.world_positions(), mesh.triangles, on_progress, cancelled, chunk_faces, timeout,
                          resolution)
    return dataclasses.replace(mesh, uvs=uvs, uvs_generated=True, warnings=list(mesh.warnings))


def without_uvs(mesh: Mesh) -> Mesh:
    """A copy of ``mesh`` without its UVs (setting ``uvs: unwrap``), so ``ensure_uvs`` lays out new ones;
    the warning about its UVs outside [0, 1] goes with them. ``mesh`` itself when it has none."""
    if mesh.uvs is None:
        return mesh
    warnings = [w for w in mesh.warnings if "UVs outside [0, 1]" not in w]
    return dataclasses.replace(mesh, uvs=None, uvs_generated=False, warnings=warnings)


def unwrap_in_child(positions: np.ndarray, triangles: np.ndarray,
                    on_progress: Callable[[str, float], None] | None = None,
                    cancelled: Callable[[], bool] | None = None, chunk_faces: int = CHUNK_FACES,
                    timeout: float | None = None, resolution: int = 0) -> np.ndarray:
    """``unwrap`` in a child process; per-corner uvs ``[F, 3, 2]`` float32 (see ``ensure_uvs``)."""
    timeout = UNWRAP_TIMEOUT_S if timeout is None else float(timeout)
    positions = framed(positions)
    n_faces = int(len(triangles))
    what = f"unwrapping {n_faces:,} faces"
    t0 = time.monotonic()
    report = on_progress or (lambda text, elapsed: None)
    report(what, 0.0)
    with tempfile.TemporaryDirectory(prefix="nfsd-unwrap-") as tmp:
        inp, out, err = Path(tmp) / "mesh.npz", Path(tmp) / "uvs.npy", Path(tmp) / "stderr.txt"
        np.savez(inp, positions=positions, triangles=np.asarray(triangles, np.int64),
                 chunk_faces=np.array(int(chunk_faces)), resolution=np.array(int(resolution)))
        with open(err, "wb") as err_file:
            proc = subprocess.Popen(_child_command(inp, out), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err_file, env=_child_env())
            try:
                last_report = 0.0
                while proc.poll() is None:
                    if cancelled is not None and cancelled():
                        raise Cancelled(f"cancelled while {what}")
                    elapsed = time.monotonic() - t0
                    if elapsed > timeout:
                        raise MeshError(f"UV unwrapping (xatlas) took more than {timeout:g} s on this mesh of "
                                        f"{n_faces:,} faces and was stopped; {ADVICE}")
                    if elapsed - last_report >= 0.5:
                        report(what, elapsed)
                        last_report = elapsed
                    time.sleep(_POLL_S)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        code = proc.returncode
        if code != 0:
            raise MeshError(_failure_line(code, err.read_text(errors="replace"), n_faces))
        uvs = np.load(out, allow_pickle=False)
    report(what, time.monotonic() - t0)
    return uvs


def _failure_line(code: int, stderr: str, n_faces: int) -> str:
    advice = ADVICE
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"UV unwrapping (xatlas) crashed on this mesh of {n_faces:,} faces ({name}); {advice}"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    reason = lines[-1] if lines else f"exit code {code}"
    return f"UV unwrapping (xatlas) failed on this mesh of {n_faces:,} faces ({reason}); {advice}"


def _child_command(inp: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "nfsd.geometry.unwrap", str(inp), str(out)]


def _child_env() -> dict:
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    return env


def unwrap(positions: np.ndarray, triangles: np.ndarray, chunk_faces: int = CHUNK_FACES,
           resolution: int = 0) -> np.ndarray:
    """xatlas in this process: ``[V, 3]`` positions, ``[F, 3]`` indices -> per-corner uvs ``[F, 3, 2]``
    float32 in [0, 1], one atlas. The faces go to xatlas in compact pieces of at most ``chunk_faces``."""
    import xatlas

    positions = np.ascontiguousarray(positions, dtype=np.float32)
    triangles = np.asarray(triangles, dtype=np.int64)
    centroids = positions[triangles].mean(axis=1)
    pieces = _compact_pieces(np.arange(len(triangles)), centroids, max(1, int(chunk_faces)))
    atlas = xatlas.Atlas()
    for faces in pieces:
        used, local = np.unique(triangles[faces], return_inverse=True)
        atlas.add_mesh(positions[used], np.ascontiguousarray(local.reshape(-1, 3), dtype=np.uint32))
    chart_options = xatlas.ChartOptions()
    chart_options.max_iterations = 0
    pack_options = xatlas.PackOptions()
    pack_options.padding = 2  # texels between charts, so bilinear lookups and mipmaps stay inside
    if resolution > 0:
        pack_options.resolution = int(resolution)  # texels of the texture it is packed for
    atlas.generate(chart_options, pack_options)
    if atlas.atlas_count != 1:
        raise MeshError(f"xatlas made {atlas.atlas_count} atlases, not one")
    uvs = np.zeros((len(triangles), 3, 2), np.float32)
    for i, faces in enumerate(pieces):
        _, indices, uv = atlas[i]
        if indices.shape != (len(faces), 3):
            raise MeshError(f"xatlas returned {indices.shape[0]} faces for a piece of {len(faces)}")
        uvs[faces] = uv[indices.astype(np.int64)]
    return np.clip(uvs, 0.0, 1.0)


def _compact_pieces(faces: np.ndarray, centroids: np.ndarray, limit: int) -> list[np.ndarray]:
    """Split ``faces`` at the median of their centroids along the widest axis until no piece has more than ``limit``."""
    if len(faces) <= limit:
        return [faces]
    c = centroids[faces]
    axis = int(np.argmax(c.max(axis=0) - c.min(axis=0)))
    order = faces[np.argsort(c[:, axis], kind="stable")]
    half = len(order) // 2
    return _compact_pieces(order[:half], centroids, limit) + _compact_pieces(order[half:], centroids, limit)


def main(argv: list[str] | None = None) -> int:
    """``python -m nfsd.geometry.unwrap IN.npz OUT.npy``: the child's side of ``unwrap_in_child``."""
    inp, out = (argv if argv is not None else sys.argv[1:])[:2]
    die_with_parent(hard=True)  # never unwrap for nobody: the job thread that started us waits for us
    try:
        with np.load(inp, allow_pickle=False) as z:
            resolution = int(z["resolution"]) if "resolution" in z.files else 0
            uvs = unwrap(z["positions"], z["triangles"], int(z["chunk_faces"]), resolution)
        with open(out, "wb") as f:
            np.save(f, uvs)
    except Exception as exc:  # one line for the parent's message
        print(f"{type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
