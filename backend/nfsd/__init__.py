"""nfsd: texture a mesh from a text prompt with Noise-Free Score Distillation.

The packages read top to bottom as the pipe (docs/ARCHITECTURE.md draws it); a module imports only
modules below it, by the name of the module that defines what it imports (tests/test_architecture.py):

- ``cli``        the ``nfsd`` console script (texture, demo, serve, models, bench); ``cli_args`` its parser
- ``server``     the HTTP API (FastAPI) the Blender add-on talks to
- ``jobs``       the server's queue, job folders, the worker process, uploaded-file checks
- ``bench``      benchmarks (each prints its figures)
- ``builtin``    the shipped prior (``vocabulary``, ``prior_model``); ``builtin.training`` made it
- ``distill``    the engine: TextureConfig -> TextureJob.run (``optimize``: prepare / take_step / finish)
                 -> TextureResult; the distillation rules (NFSD, SDS, CSD, DDS), texture
                 parametrizations over ``texels`` (UV coverage, dilation), offsets, outputs
- ``priors``     diffusion priors (diffusers SD 1.x/2.x/SDXL, single files, LoRAs, tiny encoders), the
                 model cache and the catalog a server offers
- ``render``     cameras, the rasterizer interface and its backends (PyTorch, nvdiffrast), render_views
- ``geometry``   the Mesh container, mesh files, the add-on's wire .npz, unwrapping, seams
- ``processes``  ``lifeline``: every child process exits when its parent dies (even by ``kill -9``)
- ``settings``   every job setting declared once, and the one resolver all faces go through
- ``limits``, ``errors``  the numbers every face checks against; the errors users see
"""

__version__ = "0.1.0"
