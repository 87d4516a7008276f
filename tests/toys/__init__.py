"""Toy-size real components for popcorn's tests and benchmarks, built from configs with random
weights and saved like real models, so they load back through popcorn's own code paths.

One module per family: :mod:`toys.llm` (a tiny Llama chat model), :mod:`toys.video` (the
diffusers video pipelines), :mod:`toys.sd` (Stable Diffusion covers and AnimateDiff),
:mod:`toys.predictor` (frame, sentence and caption encoders, a briefly trained predictor),
:mod:`toys.corpus` (a generated corpus of short videos), :mod:`toys.leak` (the PE-leak setup).
Benchmarks import them through ``benchmarks/_toys.py``, which puts this folder's parent on the
path.
"""
