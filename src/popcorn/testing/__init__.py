"""Test doubles that ship with popcorn, kept out of the stage folders.

Everything here builds *real* components at toy size, from configs with random weights, and
saves them with ``save_pretrained`` so tests, benchmarks and plugin authors load them back
through the same code paths as real models:

- :mod:`popcorn.testing.toy_media`: every diffusers video and cover pipeline popcorn drives;
- :mod:`popcorn.testing.toy_predictor`: frame encoders, sentence encoders and a briefly
  trained predictor;
- :mod:`popcorn.testing.synthetic_media`: a generated corpus of short videos whose comment
  counts follow their content, for training and evaluating the predictor;
- :mod:`popcorn.testing.plugins`: the source of a third-party clip generator, installed as a
  plugin package by tests.

Nothing in popcorn's own commands imports this package.
"""
