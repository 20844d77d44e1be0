"""Diffusion priors: ``prior`` (load_prior -> Prior, the model cache), ``loading`` (folders, single
files, hub ids), ``families`` (SD 1.x / 2.x / SDXL), ``text`` (windowed prompts), ``lora``,
``fast_encoder`` (tiny encoder on the gradient path), ``catalog`` / ``model_files`` (what a server
offers), ``analytic`` and ``tiny`` (exact toy priors and random-weight models for tests)."""
