"""Rendering: the rasterizer interface (``rasterizer``) and its backends (``torch_rasterizer``,
``nvdiffrast_rasterizer``), ``renderer`` (render_views, lighting) and ``cameras``."""
