"""The built-in prior: a small text-to-texture diffusion model that ships with the package.

- ``vocabulary``: the patterns, colours and prompts it knows;
- ``training.dataset``: procedural textures (6 patterns x 8 colours) described by short prompts;
- ``training.train_prior``: trains the pixel-space UNet + tiny text encoder (``python -m nfsd.builtin.training.train_prior``);
- ``training.classifier``: reads a view, names its pattern and colours (``python -m nfsd.builtin.training.classifier``);
- ``training.sampling``: DDIM + classifier-free guidance sampling of a loaded prior;
- ``training.quality``: the NFSD / SDS / CSD quality benchmark (``nfsd bench quality``).

The weights live in ``weights/prior/`` (a diffusers folder without ``vae/``, loaded by
``nfsd.priors.prior.load_prior("builtin")``) and ``weights/classifier.safetensors``.
"""
