"""The README fits on a screen and starts with the two commands; the pages it points to exist,
and so does every file and heading a relative link in README.md or docs/ names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").rglob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)

TWO_COMMANDS = """\
# Popcorn

```bash
bash scripts/setup.sh && .venv/bin/popcorn generate "A cat learning to skateboard"
bash scripts/setup.sh --dev && .venv/bin/python -m pytest
```
"""


def relative_links(page: Path) -> list[str]:
    """Links to files of this repository (not web addresses), outside code blocks."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces
    turned into hyphens."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    found = set()
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_readme_starts_with_the_two_commands():
    assert README.read_text(encoding="utf-8").startswith(TWO_COMMANDS)


def test_readme_fits_in_about_two_hundred_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move detail into docs/"


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file_and_heading(page: Path):
    broken = []
    for link in relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        missing_file = not target.exists()
        missing_heading = bool(anchor) and target.suffix == ".md" and anchor not in anchors(target)
        if missing_file or missing_heading:
            broken.append(link)
    assert broken == [], f"{page.relative_to(ROOT)} links to what does not exist: {broken}"


def test_every_docs_page_is_reachable_from_the_readme():
    linked = {(ROOT / link.partition("#")[0]).resolve() for link in relative_links(README)}
    top_level = [p for p in PAGES if p.parent == ROOT / "docs"]
    assert [p.name for p in top_level if p not in linked] == []


def test_no_page_says_to_install_from_pypi():
    # The package is not published yet: installing means a clone.
    for page in [README, *PAGES]:
        text = page.read_text(encoding="utf-8")
        assert "from PyPI" not in text, page
        assert "pip install popcorn-video" not in text, page
        assert "pip install 'popcorn-video" not in text, page
