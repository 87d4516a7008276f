"""Puts popcorn's tests/ folder on ``sys.path``, so that a benchmark builds its toy models with
the very builders the tests use and check (``tests/toys/``) instead of a copy of them.

Import it before any ``toys`` module: ``import _toys  # noqa: F401``.
"""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
