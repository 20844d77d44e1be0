"""What a job hands to clients, encoded: preview PNGs, the ``uvs.npz`` and the ``result.npz`` of docs/API.md."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from ..errors import NfsdError
from .store import atomic_write
from ..distill.image_files import encode_png as _encode_png

log = logging.getLogger("nfsd.jobs")




def encode_png(image: np.ndarray) -> bytes:
    """A preview PNG: ``nfsd.distill.image_files.encode_png`` at the fastest compression (polled, not kept)."""
    return _encode_png(image, compress_level=1)


def uvs_npz(uvs: np.ndarray, generated: bool) -> bytes:
    """Per-corner ``uvs`` float32 ``[F, 3, 2]`` -> the ``GET /jobs/{id}/uvs`` .npz bytes (docs/API.md):
    ``uvs`` float32 ``[F, 3, 2]`` and ``uvs_generated`` bool scalar (True: the backend unwrapped)."""
    uvs = np.asarray(uvs, dtype=np.float32)
    if uvs.ndim != 3 or uvs.shape[1:] != (3, 2):
        raise ValueError(f"uvs must be [F, 3, 2], got {list(uvs.shape)}")
    buf = io.BytesIO()
    np.savez(buf, uvs=uvs, uvs_generated=np.array(bool(generated)))
    return buf.getvalue()


def store_job_uvs(folder: Path, job) -> bool:
    """Write ``uvs.npz`` for a constructed job (anything with a ``mesh`` holding ``uvs`` and
    ``uvs_generated``, as ``nfsd.distill.engine.TextureJob`` has) into its folder; False when it has none."""
    mesh = getattr(job, "mesh", None)
    uvs = getattr(mesh, "uvs", None)
    if uvs is None:
        return False
    try:
        atomic_write(Path(folder) / "uvs.npz", uvs_npz(uvs, bool(getattr(mesh, "uvs_generated", False))))
    except (OSError, NfsdError):  # only the early preview needs them; the result carries them again
        log.exception("could not write the UVs to %s", folder)
        return False
    return True


def result_npz(result, job_id: str) -> bytes:
    """A ``TextureResult`` -> the result .npz bytes of docs/API.md (``nfsd.distill.outputs.result_npz``), meta with the job id."""
    from ..distill.outputs import report_dict, result_npz as encode

    meta = report_dict(result)
    meta["job_id"] = job_id
    return encode(result, meta)
