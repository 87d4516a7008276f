"""The media stage's tests, one module per module of :mod:`popcorn.media` (shared helpers in
:mod:`media.helpers`, fixtures in ``conftest.py``). A package, so that its ``conftest``
does not stand in for ``tests/conftest.py``, which other test modules import from."""
