"""What popcorn ships for testing code that uses it, kept out of the stage folders:

- :mod:`popcorn.testing.mockllm`: the ``mock:NAME`` LLM backend (registered like any other),
  which answers at once with valid script JSON, or with a scripted list of answers;
- :mod:`popcorn.testing.plugins`: :func:`~popcorn.testing.plugins.install_plugin`, which
  installs a plugin package the way pip leaves one, and a sample clip generator's source.

Toy-size model builders live with popcorn's own tests (``tests/toys/``), not in the wheel.
Nothing in popcorn's own commands imports this package except through the ``mock:`` entry.
"""
