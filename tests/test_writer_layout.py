"""The script stage lives in ``popcorn.writer``; ``popcorn.llm`` holds the backends only.

Layers import downwards: the writer may use the LLM backends and retrieval (PE), but no backend
imports the writer or retrieval, and retrieval never imports the writer. Read from the source,
so that a lazy import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import popcorn
from popcorn import profiles
from popcorn.profiles import PROFILE_NAMES
from popcorn.writer.lenient_json import json_objects
from popcorn.writer.prompts import TEMPLATES, PromptTemplates

PACKAGE = Path(popcorn.__file__).parent


def _imports(folder: str) -> dict[str, set[str]]:
    """Each module of ``folder`` -> the ``popcorn`` modules it imports, wherever it does."""
    found: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[str(path.relative_to(PACKAGE))] = {n for n in names if n.startswith("popcorn")}
    return found


def _offending(folder: str, upper: tuple[str, ...]) -> dict[str, set[str]]:
    return {
        module: bad
        for module, names in _imports(folder).items()
        if (bad := {n for n in names if n.startswith(upper)})
    }


def test_llm_backends_import_no_stage_above_them() -> None:
    above = ("popcorn.writer", "popcorn.retrieval", "popcorn.pipeline", "popcorn.config")
    assert _offending("llm", above) == {}


def test_retrieval_never_imports_the_writer() -> None:
    assert _offending("retrieval", ("popcorn.writer", "popcorn.pipeline")) == {}


def test_prompts_parser_and_gate_are_no_longer_in_llm() -> None:
    left = {p.name for p in (PACKAGE / "llm").iterdir()}
    assert not left & {"prompts.py", "parser.py", "quality.py", "templates"}
    assert not (PACKAGE / "generation.py").exists()


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_each_profile_finds_its_packaged_templates_in_the_writer(name: str) -> None:
    folder = profiles.get(name).prompts
    templates = PromptTemplates.packaged_for(folder)
    assert templates.folder.parent == TEMPLATES == PACKAGE / "writer" / "templates"
    assert templates.basic("A cat learning to skateboard")[0]["role"] == "system"


def test_lenient_json_keeps_every_draft_and_notes_one_cut_off() -> None:
    text = 'Draft: {\'title\': \'A\',} then the answer {"title": "B", } and {"title": "C'
    objects, truncated, saw_brace = json_objects(text)
    assert objects == [{"title": "A"}, {"title": "B"}]
    assert truncated and saw_brace


def test_lenient_json_keeps_quotes_inside_text() -> None:
    objects, truncated, _ = json_objects('{"title": "a "big" cat", \'cover\': \'the cat\'s day\'}')
    assert objects == [{"title": 'a "big" cat', "cover": "the cat's day"}]
    assert not truncated
