"""What a creator keeps: a title of its own and a video prompt that describes a shot.

The gate (:mod:`popcorn.writer.gate`) asks whether an answer is a script for the query at all;
these two measures ask whether it is one worth keeping:

- a title *restates* the query when it is the query again: the same content words (after case,
  punctuation, stop words and word endings), most of them and nothing new, the query plus one
  word, or an embedding almost identical to the query's ("A Golden Retriever Learning to Surf"
  for "A golden retriever learning to surf", "Golden Retriever Learns to Surf");
- a video prompt is a *shot* when, in one to three sentences, it names a subject, an action and
  at least one of camera, framing, movement or light, and neither talks to the viewer ("in this
  video you will see") nor narrates in the first person.

Both are word rules, cheap enough for every draft, and both can be fooled by a determined
writer; what they cannot be maxed out by alone is kept by the gate's relevance rule (a shot of
something else scores low against the query).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from popcorn.writer.gate import _STOP, words

RESTATED_COSINE = 0.9
"""A title whose embedding is at least this close to the query's is the query again, however
its words differ ("Surfing Lessons for a Golden Retriever")."""
RESTATED_COVER = 0.6
"""A title made only of the query's words restates it when it holds this share of them or
more ("Making Sourdough Bread" for "Making sourdough bread from scratch"); fewer, and it is a
short title cut from the idea ("Sourdough")."""

_CAMERA = re.compile(
    r"\b(?:close[- ]?ups?|extreme close|macro|wide[- ](?:shot|angle)|medium shot|full shot|"
    r"long shot|establishing shot|overhead|top[- ]down|bird'?s[- ]eye|aerial|drone|tracking|"
    r"tracks?|dolly|pans?|panning|tilts?|tilting|zooms?|zooming|push[- ]in|pushes in|"
    r"pull[- ]back|pulls back|handheld|hand[- ]held|steadicam|static|locked[- ]off|"
    r"slow[- ]motion|slow[- ]mo|time[- ]?lapse|pov|point[- ]of[- ]view|low[- ]angle|"
    r"high[- ]angle|eye[- ]level|camera|shot|lens|focus|bokeh|depth of field|frame|framing|"
    r"framed|silhouetted?|backlit|backlight|light|lights|lighting|lit|sunlight|sunlit|"
    r"moonlight|moonlit|candlelight|candlelit|daylight|neon|golden hour|glow|glowing|shadows?|"
    r"sunset|sunrise|dawn|dusk|twilight|spotlight|lamplight|firelight|haze|fog)\b",
    re.IGNORECASE,
)
_SPEAKS = re.compile(
    r"\b(?:you|your|you're|you'll|you've|yourself|we|we're|let's|us|our|i|i'm|i've|i'd|my|me)"
    r"\b|\bin this (?:video|clip)\b|\bwatch as\b|\bsubscribe\b|\bfollow for\b|\bcomment\b",
    re.IGNORECASE,
)
_SUBJECT = re.compile(
    r"\b(?:a|an|the|two|three|four|five|his|her|their|its|one|some|several|many|tiny|small|"
    r"little|young|old|of)\s+(?!(?:close|wide|slow|medium|shot|camera|frame|light|moment|"
    r"story|video|clip|way|time|idea|power|magic|feeling|beauty|joy|art|importance|world|"
    r"life|day)\b)[a-z][a-z'-]{2,}",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# -ing words that are no action.
_NOT_ACTION = frozenset(
    {"morning", "evening", "lighting", "ceiling", "something", "nothing", "everything",
     "anything", "thing", "things", "king", "ring", "spring", "string", "wing", "wings",
     "clothing", "ending", "feeling", "feelings", "meaning", "beginning", "sibling", "pudding",
     "wedding", "icing", "stuffing", "setting", "framing", "tracking", "panning", "zooming",
     "tilting", "glowing", "amazing", "interesting", "stunning", "breathtaking", "inspiring",
     "exciting", "boring", "relaxing", "charming", "surprising", "during", "including",
     "according", "building", "painting", "awning", "bring", "sing", "lightning"}
)  # fmt: skip
# Verbs a shot shows, as stems: "flips", "poured", "dives" and "surfing" all count.
_ACTIONS = frozenset(
    """
    walk run jump ride flip pour slide spin danc sing play paint cut throw catch climb fall
    fly swim surf paddl driv cook bak knead stir chop open clos lift push pull turn look smil
    laugh cry hug wav sit stand lean reach hold grab drop kick hit writ typ read sleep wak
    stretch breath blow glow shin sparkl splash crash roll bounc float drift ris sink melt burn
    pop tap knock step kneel dig plant water sweep wash scrub fold knit sew ti wrap unwrap
    unbox reveal peek star watch gaz glanc nod shak trembl wander stroll rac chas leap div
    skat ski snowboard kayak row sail fish feed pet bark chirp sip drink eat bit tast chew
    sniff toss juggl shuffl deal flick strum drum build hammer saw drill sand brush comb stack
    sort arrang decorat frost pip hang swing clap cheer celebrat hurry rush paus stop start
    finish land lands spill slic mix whisk fry grill sizzl flash flicker wip hand giv tak
    carr sweep glid soar crawl hop skip march tip tumbl splash scrol pack unpack carv shap
    mold weav hurl spray rins soak dri shower bath squeez press peel grat tast sprinkl
    open enter leav exit arriv return wait rest lie yawn stretch blink wink whisper shout
    sings hums hum play kiss cuddl snuggl lick wag chas fetch balanc wobbl steer pedal
    """.split()  # noqa: SIM905
)
_ACTION_STEMS = frozenset(w.rstrip("e") for w in _ACTIONS)
_SUFFIXES = ("ing", "es", "ed", "s")


@dataclass(frozen=True)
class ShotCheck:
    """What a video prompt holds of a shot."""

    subject: bool
    action: bool
    camera: bool
    sentences: int
    speaks: bool

    @property
    def ok(self) -> bool:
        return (
            self.subject
            and self.action
            and self.camera
            and 1 <= self.sentences <= 3
            and (not self.speaks)
        )

    def missing(self) -> list[str]:
        """What keeps it from being a shot, in words ("no camera or light", ...)."""
        out = [f"no {name}" for name in ("subject", "action") if not getattr(self, name)]
        if not self.camera:
            out.append("no camera, framing or light")
        if not 1 <= self.sentences <= 3:
            out.append(f"{self.sentences} sentences")
        if self.speaks:
            out.append("talks to the viewer")
        return out


def stem(word: str) -> str:
    """A crude stem: "learning", "learns" and "learned" are "learn"; "flipping" is "flip"."""
    word = word.removesuffix("'s")
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "ls":
                word = word[:-1]  # flipp -> flip, runn -> run (but not "sell", "pass")
            break
    return word


def content(text: str) -> set[str]:
    """The stems of ``text``'s content words (no stop words)."""
    return {stem(w) for w in words(text) if w not in _STOP and not w.isdigit()}


def restates(query: str, title: str, cosine: float | None = None) -> bool:
    """Whether ``title`` is ``query`` again (``cosine``: of their embeddings, when known)."""
    asked, mine = content(query), content(title)
    if not mine or not asked:
        return False
    if mine <= asked and len(mine) >= RESTATED_COVER * len(asked):
        return True
    if asked <= mine and len(mine - asked) <= 1:
        return True
    return cosine is not None and cosine >= RESTATED_COSINE


def check_shot(video_prompt: str) -> ShotCheck:
    """How ``video_prompt`` measures as a shot (see the module's docstring)."""
    text = video_prompt.strip()
    sentences = [s for s in _SENTENCE.split(text) if len(words(s)) >= 2]
    tokens = words(text)
    action = any(
        (w.endswith("ing") and len(w) > 4 and w not in _NOT_ACTION)
        or stem(w).rstrip("e") in _ACTION_STEMS
        for w in tokens
    )
    first = tokens[0] if tokens else ""
    # "A cat ...", "the keeper's hands", "close-up of hands": a determiner before a noun; or a
    # bare plural to open with ("Hands drop noodles into the broth").
    bare = first not in _STOP and not _CAMERA.fullmatch(first) and first.endswith("s")
    return ShotCheck(
        subject=bool(_SUBJECT.search(text)) or (bare and len(first) > 3),
        action=action,
        camera=bool(_CAMERA.search(text)),
        sentences=len(sentences),
        speaks=bool(_SPEAKS.search(text)),
    )
