"""nfsd: texture a mesh from a text prompt with Noise-Free Score Distillation.

Modules, one concept each:

- ``mesh``      the Mesh container, checks, normalization (framing)
- ``mesh_files`` OBJ/PLY/glTF readers and the GLB writer; ``mesh_builtin`` generated meshes
- ``unwrap``    xatlas UV unwrapping in a child process (crash-safe, cancellable)
- ``wire``      the wire .npz the add-on sends (read with header-first size limits, write)
- ``cameras``   random and fixed orbit cameras, view words (Blender axes: Z up, front is -Y)
- ``renderer``  render_views (lighting, shading) over a rasterizer; picks the rasterizer
- ``rasterizer`` the rasterize / interpolate / texture / antialias interface and conventions;
  backends ``torch_rasterizer`` (pure PyTorch) and ``nvdiffrast_rasterizer`` (CUDA)
- ``texture``   texture parametrizations, PNG I/O, UV-island dilation
- ``prior``     diffusion priors (diffusers Stable Diffusion, the built-in model), model cache
- ``guidance``  the distillation rules (NFSD, SDS, CSD) as pure functions
- ``engine``    the optimization loop: config, progress, cancellation, snapshots
- ``outputs``   texture.png, textured.glb, views.png, report.json, offsets.npy
- ``cli``       the ``nfsd`` console script (texture, demo, serve, bench)
- ``server``    the HTTP API (FastAPI)
- ``jobs``      the server's job queue; ``job_store`` (disk), ``job_runner`` (one job), ``job_worker``
                (the worker process), ``job_results`` (preview, uvs and result encodings)
- ``inputcheck``  checks of uploaded files, run by the server in a child process
- ``limits``    every limit in one place (settings ranges, the server's request limits)
"""

__version__ = "0.1.0"
