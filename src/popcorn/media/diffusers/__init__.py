"""The built-in diffusion generators, one job per module: :mod:`.loader` (memory options and
loading a diffusers pipeline through :data:`popcorn.residency.MODELS`), :mod:`.acceleration`
(``--compile``, ``--cache``), :mod:`.prompts` (text windows), :mod:`.frames` (pipeline output
as bytes), :mod:`.animatediff` (motion adapters), :mod:`.video` and :mod:`.cover` (the
generators). Their presets are plain data in :mod:`popcorn.media.presets`.

Nothing here imports torch or diffusers until a model is loaded or run.
"""
