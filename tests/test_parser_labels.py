"""Markdown answers whose labels carry qualifiers, numbering or heading marks: real model
output that the parser reads."""

from __future__ import annotations

import pytest

from popcorn.writer.parser import parse_script

TITLE = "Ramen in Five Minutes"
COVER = "A steaming bowl of ramen with a soft egg on a dark wooden table, top-down, warm light"
VIDEO = "Chopsticks lift glossy noodles out of the broth in slow motion as steam curls up"

ANSWERS = {
    "bold label with a note inside": f"""Here you go!

**Title (max 50 characters):** {TITLE}
**Cover prompt (for Stable Diffusion):** {COVER}
**Video prompt (3 seconds):** {VIDEO}
""",
    "bold label with a note after it": f"""**Title** (under 50 chars): {TITLE}

**Cover Prompt** (one paragraph): {COVER}

**Video Prompt** (3-second clip): {VIDEO}
""",
    "numbered labels": f"""1. Title: {TITLE}
2. Cover prompt: {COVER}
3) Video prompt: {VIDEO}
""",
    "numbered bold labels": f"""1. **Title:** {TITLE}
2. **Cover image prompt:** {COVER}
3. **Video prompt:** {VIDEO}
""",
    "numbered headings": f"""### 1. Title
{TITLE}

### 2. Cover Prompt
{COVER}

### 3. Video Prompt (3 s)
{VIDEO}
""",
    "steps and dashes": f"""Step 1: Title — {TITLE}
Step 2: Cover prompt — {COVER}
Step 3: Video prompt — {VIDEO}
""",
}


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=list(ANSWERS))
def test_labelled_sections_are_read(answer: str):
    script = parse_script(answer).script
    assert script.title == TITLE
    assert script.cover_prompt == COVER
    assert script.video_prompt == VIDEO


def test_prose_that_mentions_a_title_is_not_a_label():
    answer = (
        f"The title should be short.\n**Title:** {TITLE}\n**Cover prompt:** {COVER}\n"
        f"**Video prompt:** {VIDEO}\n"
    )
    assert parse_script(answer).script.title == TITLE
