"""The distillation engine: settings -> (render -> prior -> rule -> Adam step)* -> result.

``engine`` (TextureJob, the loop), ``config`` (TextureConfig, Progress, TextureResult), ``guidance``
(the pure distillation rules), ``texture`` / ``surface_field`` (texture parametrizations), ``offsets``
(bounded vertex offsets), ``outputs`` and ``image_files`` (what a run writes).
"""
