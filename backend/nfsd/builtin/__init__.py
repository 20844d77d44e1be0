"""The built-in prior: a small text-to-texture diffusion model that ships with the package.

- ``dataset``: procedural textures (6 patterns x 8 colours) described by short prompts;
- ``train_prior``: trains the pixel-space UNet + tiny text encoder (``python -m nfsd.builtin.train_prior``);
- ``classifier``: reads a view, names its pattern and colours (``python -m nfsd.builtin.classifier``);
- ``sampling``: DDIM + classifier-free guidance sampling of a loaded prior;
- ``quality``: the NFSD / SDS / CSD quality benchmark (``nfsd bench quality``).

The weights live in ``weights/prior/`` (a diffusers folder without ``vae/``, loaded by
``nfsd.prior.load_prior("builtin")``) and ``weights/classifier.safetensors``.
"""
