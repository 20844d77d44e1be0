"""What a texturing run reports while it runs (``Progress``) and returns (``TextureResult``).

What it depends on, ``TextureConfig``, is declared with every setting in ``nfsd.settings``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..geometry.mesh import Mesh
    from ..settings import TextureConfig


@dataclass
class Progress:
    """What a progress callback receives."""

    phase: str            # "loading" | "optimizing" | "done"
    step: int
    total: int
    loss: float | None
    elapsed: float        # seconds since run() started
    eta: float | None     # seconds to the end of the optimization
    fraction: float       # 0..1 within the phase


@dataclass
class TextureResult:
    """The outcome of a run (also of a cancelled one: what existed when it stopped)."""

    texture: np.ndarray             # uint8 [Ht, Wt, 3], row 0 bottom, UV islands dilated
    uvs: np.ndarray                 # [F, 3, 2] float32 per-corner UVs the texture is laid out on
    uvs_generated: bool
    offsets: np.ndarray | None      # [V, 3] float32 object space, Blender's vertex order
    mesh: Mesh
    config: TextureConfig
    losses: list[float] = field(default_factory=list)
    steps_done: int = 0
    cancelled: bool = False
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    # A mesh laid out in UDIM tiles ran on an atlas (``texture``/``uvs`` above): its per-tile textures
    # and own UVs (``nfsd.distill.tiles.UdimTextures``); None otherwise.
    udim: Any = None
    # A ``material == "pbr"`` run's other maps, in the layout, row order and dilation of ``texture``
    # (the atlas for UDIM): ``roughness`` and ``metallic`` uint8 ``[Ht, Wt]`` linear (0..255 -> 0..1),
    # ``normal`` uint8 ``[Ht, Wt, 3]`` tangent space, OpenGL convention (+Y up, as Blender's Normal Map
    # node and glTF), only with ``normal_map``. Empty for albedo runs.
    maps: dict = field(default_factory=dict)


__all__ = ["Progress", "TextureResult"]
