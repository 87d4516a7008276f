"""Generated micro-video corpora in MicroLens' exact file formats, for tests, benchmarks and demos.

Text is built from per-category vocabularies, so its meaning matches its category and retrieval
can be checked for real (a cooking query must find food videos). Comment counts are heavy-tailed
with zeros. The raw files carry MicroLens' quirks: malformed lines, missing captions and cover
descriptions, duplicate ids, non-ASCII text. Category names can be plain ("food"), in the style
of MicroLens' translated platform labels ("Delicacy"), or opaque codes ("C07"), so routing can be
measured where a name says little about what the category holds. Nothing here is MicroLens data.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from popcorn._io import atomic_write_text
from popcorn.retrieval.importers import COVER_CAPTIONS_FILE

# 22 categories, as in the pre-joined MicroLens table. Each: (name, subjects, actions, places).
CATEGORIES: list[tuple[str, list[str], list[str], list[str]]] = [
    (
        "food",
        [
            "pasta",
            "ramen",
            "dumplings",
            "street tacos",
            "chocolate cake",
            "sushi rolls",
            "fried chicken",
            "spicy noodles",
        ],
        ["cooking", "tasting", "baking", "grilling", "plating", "frying"],
        ["a home kitchen", "a night market", "a bakery", "a restaurant kitchen"],
    ),
    (
        "pets",
        ["golden retriever puppy", "fluffy kitten", "parrot", "hamster", "corgi", "rescue dog"],
        ["playing fetch", "napping", "chasing a toy", "learning a trick"],
        ["the living room", "the backyard", "a dog park", "a cozy bed"],
    ),
    (
        "travel",
        ["backpacker", "road trip", "hidden beach", "mountain village", "old town"],
        ["exploring", "hiking to", "discovering", "wandering through"],
        ["Iceland", "Kyoto", "the Alps", "Santorini", "Patagonia"],
    ),
    (
        "sports",
        ["basketball player", "soccer striker", "tennis rally", "marathon runner"],
        ["scoring", "training for", "winning", "dribbling past defenders in"],
        ["the final match", "a packed stadium", "the championship game"],
    ),
    (
        "music",
        ["guitarist", "piano cover", "street singer", "drummer", "violin duet"],
        ["performing", "jamming to", "covering", "recording"],
        ["a rooftop concert", "a subway station", "a home studio"],
    ),
    (
        "dance",
        ["hip hop crew", "ballet dancer", "k-pop dance cover", "tap dancer"],
        ["dancing to", "choreographing", "practicing a routine for"],
        ["a dance studio", "the street", "a talent show"],
    ),
    (
        "gaming",
        ["speedrunner", "minecraft build", "esports team", "retro console"],
        ["beating the final boss in", "streaming", "building a castle in", "clutching a round in"],
        ["an online tournament", "a late night stream", "a survival world"],
    ),
    (
        "anime",
        ["anime fan", "manga artist", "cosplayer", "studio animator"],
        ["drawing", "reviewing", "cosplaying", "animating"],
        ["a futuristic neon city", "a convention", "a sketchbook"],
    ),
    (
        "beauty",
        ["makeup artist", "skincare routine", "nail art", "hairstylist"],
        ["applying", "transforming with", "reviewing", "trying"],
        ["a vanity mirror", "a salon", "a bathroom shelf"],
    ),
    (
        "fashion",
        ["streetwear outfit", "vintage jacket", "runway look", "sneaker collection"],
        ["styling", "thrifting", "modelling", "unboxing"],
        ["a thrift store", "fashion week", "a closet makeover"],
    ),
    (
        "technology",
        ["new smartphone", "gaming laptop", "robot vacuum", "smartwatch"],
        ["unboxing", "testing", "reviewing", "taking apart"],
        ["a tech desk setup", "a gadget lab", "a launch event"],
    ),
    (
        "cars",
        ["sports car", "classic muscle car", "electric truck", "drift car"],
        ["restoring", "drifting", "test driving", "detailing"],
        ["a race track", "a garage", "a mountain road"],
    ),
    (
        "fitness",
        ["home workout", "weightlifter", "yoga flow", "calisthenics athlete"],
        ["training", "stretching", "lifting", "building muscle with"],
        ["the gym", "a park", "a living room mat"],
    ),
    (
        "comedy",
        ["prank", "stand-up comedian", "sketch duo", "funny fail"],
        ["pranking", "joking about", "reacting to", "roasting"],
        ["the office", "a family dinner", "a comedy club"],
    ),
    (
        "education",
        ["math teacher", "history lesson", "study tips", "language tutor"],
        ["explaining", "teaching", "summarising", "quizzing"],
        ["a classroom", "a whiteboard", "a library"],
    ),
    (
        "nature",
        ["waterfall", "wild fox", "northern lights", "coral reef", "thunderstorm"],
        ["filming", "watching", "tracking", "photographing"],
        ["a national park", "the rainforest", "the ocean"],
    ),
    (
        "art",
        ["oil painting", "watercolor portrait", "graffiti mural", "clay sculpture"],
        ["painting", "sketching", "sculpting", "speed drawing"],
        ["an art studio", "a city wall", "a gallery"],
    ),
    (
        "crafts",
        ["woodworking project", "knitted sweater", "resin table", "origami crane"],
        ["building", "knitting", "crafting", "folding"],
        ["a workshop", "a craft table", "a garage workbench"],
    ),
    (
        "parenting",
        ["toddler", "newborn baby", "family morning", "twins"],
        ["laughing at", "learning to walk in", "playing with", "surprising mom in"],
        ["the nursery", "a playground", "the kitchen table"],
    ),
    (
        "movies",
        ["film trailer", "movie scene", "director", "box office hit"],
        ["reviewing", "recreating", "analysing", "ranking"],
        ["a cinema", "a film set", "the red carpet"],
    ),
    (
        "science",
        ["chemistry experiment", "physics demo", "telescope", "volcano model"],
        ["testing", "demonstrating", "observing", "exploding"],
        ["a lab", "the night sky", "a science fair"],
    ),
    (
        "news",
        ["city council", "election night", "local reporter", "weather warning"],
        ["reporting on", "covering", "interviewing about", "breaking news on"],
        ["city hall", "the newsroom", "downtown"],
    ),
]
# Translated-platform-style labels (not MicroLens' own list): a word a platform would use,
# which often says little about the videos to a sentence embedder ("Delicacy" for food).
MICROLENS_STYLE_NAMES: dict[str, str] = {
    "food": "Delicacy",
    "pets": "Adorable",
    "travel": "Outing",
    "sports": "Athletics",
    "music": "Melody",
    "dance": "Choreo",
    "gaming": "E-sports",
    "anime": "ACG",
    "beauty": "Makeover",
    "fashion": "Outfit",
    "technology": "Digital",
    "cars": "Motoring",
    "fitness": "Body shaping",
    "comedy": "Funny",
    "education": "Knowledge",
    "nature": "Scenery",
    "art": "Creativity",
    "crafts": "Handmade",
    "parenting": "Parent-child",
    "movies": "Film & TV",
    "science": "Popular science",
    "news": "Current affairs",
}
CategoryNames = Literal["plain", "microlens", "codes"]


def category_name(topic: str, names: CategoryNames) -> str:
    """What the corpus calls the category about ``topic`` (a name of :data:`CATEGORIES`)."""
    if names == "microlens":
        return MICROLENS_STYLE_NAMES[topic]
    if names == "codes":
        return f"C{[c[0] for c in CATEGORIES].index(topic) + 1:02d}"
    return topic


# Three everyday queries per topic, in words of their own rather than the generator's
# vocabulary (none is one of the study's 200 queries): what routing is measured on.
TOPICAL_QUERIES: list[tuple[str, str]] = [
    ("How to cook ramen at home", "food"),
    ("A quick omelette before school", "food"),
    ("Trying every dessert at a street food festival", "food"),
    ("Teaching my dog to roll over", "pets"),
    ("A cat that hates bath time", "pets"),
    ("A day in the life of a pet rabbit", "pets"),
    ("Backpacking across Southeast Asia on a budget", "travel"),
    ("Getting lost in the backstreets of Lisbon", "travel"),
    ("Sunrise over the canyons on a road trip", "travel"),
    ("The last-second shot that won the game", "sports"),
    ("Drills to improve your football passing", "sports"),
    ("Behind the scenes with an Olympic sprinter", "sports"),
    ("Playing a famous song on an old piano", "music"),
    ("How to write a catchy chorus", "music"),
    ("An acoustic set by a busker at the train station", "music"),
    ("Learn this viral dance in 30 seconds", "dance"),
    ("Ballet warm-up for beginners", "dance"),
    ("Breakdancing battle in the park", "dance"),
    ("Speedrunning a classic platformer", "gaming"),
    ("My best clutch moment in a battle royale", "gaming"),
    ("Building a medieval city in a sandbox game", "gaming"),
    ("Reacting to the first episode of a new anime series", "anime"),
    ("Drawing my favourite manga hero", "anime"),
    ("Top cosplay looks from a fan convention", "anime"),
    ("A five-minute everyday makeup look", "beauty"),
    ("My nighttime skincare routine for dry skin", "beauty"),
    ("Trying a bold red lipstick for the first time", "beauty"),
    ("Styling one pair of jeans five ways", "fashion"),
    ("Thrift store outfit haul", "fashion"),
    ("What people wore at the fashion show", "fashion"),
    ("Unboxing the newest phone", "technology"),
    ("Is this budget laptop worth it", "technology"),
    ("Testing a smart home gadget", "technology"),
    ("Restoring a rusty 1970s muscle car", "cars"),
    ("Drifting around a mountain hairpin", "cars"),
    ("First drive in an electric pickup", "cars"),
    ("A 10-minute ab workout with no equipment", "fitness"),
    ("Morning yoga to wake up your body", "fitness"),
    ("How I got stronger with pull-ups", "fitness"),
    ("Pranking my roommate with fake spiders", "comedy"),
    ("A stand-up bit about awkward family dinners", "comedy"),
    ("When the office printer breaks again", "comedy"),
    ("Explaining fractions with pizza slices", "education"),
    ("Three study hacks before your exam", "education"),
    ("Learning Spanish verbs the easy way", "education"),
    ("A thunderstorm rolling over the plains", "nature"),
    ("Spotting whales off the coast", "nature"),
    ("Northern lights over a frozen lake", "nature"),
    ("Painting a sunset with watercolors", "art"),
    ("Spray painting a giant mural", "art"),
    ("Speed sketching a portrait", "art"),
    ("Making a wooden cutting board by hand", "crafts"),
    ("Knitting a scarf for beginners", "crafts"),
    ("Folding a paper crane step by step", "crafts"),
    ("My toddler's first steps", "parenting"),
    ("Morning routine with three kids", "parenting"),
    ("Telling the kids about a new baby sibling", "parenting"),
    ("Ranking every superhero film", "movies"),
    ("Recreating an iconic film scene on a budget", "movies"),
    ("Reviewing this summer's blockbuster", "movies"),
    ("Making a baking soda volcano erupt", "science"),
    ("Why the sky is blue, shown with a demo", "science"),
    ("Looking at Saturn through a backyard telescope", "science"),
    ("Live from election night", "news"),
    ("City council votes on the new park", "news"),
    ("Storm warning issued for the coast", "news"),
]
"""(query, topic) pairs: the topic is a name of :data:`CATEGORIES`; see category_name."""


_HOOKS = [
    "You won't believe",
    "Wait for it:",
    "POV:",
    "Day 3 of",
    "Watch till the end:",
    "Nobody expected",
    "The secret to",
    "How I learned",
]
_EXTRA = ["✨", "🔥", "😂", "café", "naïve", "日本", "été", "🐾"]


@dataclass(frozen=True)
class SynthReport:
    videos: int
    categories: int
    files: list[str]


def _comment_count(rng: random.Random) -> int:
    if rng.random() < 0.08:
        return 0
    return int(rng.lognormvariate(3.0, 1.6))


def generate_microlens(
    folder: Path | str,
    videos: int = 500,
    seed: int = 0,
    quirks: bool = True,
    table: bool = True,
    names: CategoryNames = "plain",
) -> SynthReport:
    """Write MicroLens-100k-format files (and a pre-joined ``table.jsonl``) into ``folder``,
    including LLaVA-style cover captions (:data:`COVER_CAPTIONS_FILE`).

    ``names`` picks what the categories are called (see :func:`category_name`); the videos are
    the same whatever it is.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    # Cover quirks draw from their own generator, so the rest of a seed's corpus is unchanged.
    cover_rng = random.Random(f"covers-{seed}")
    likes_views, titles, tags, captions, covers, rows = [], [], [], [], [], []
    comments: list[tuple[str, int, str]] = []
    user = 0
    for i in range(videos):
        vid = 10_000 + i
        topic, subjects, actions, places = CATEGORIES[i % len(CATEGORIES)]
        name = category_name(topic, names)
        subject, action, place = rng.choice(subjects), rng.choice(actions), rng.choice(places)
        title = f"{rng.choice(_HOOKS)} {subject} {action} {place}"
        if quirks and rng.random() < 0.05:
            title += f" {rng.choice(_EXTRA)}"
        caption = f"A {subject} {action} {place}."
        cover = f"Close-up of a {subject} in {place}, bright colors"
        n_comments = _comment_count(rng)
        likes = n_comments * rng.randint(3, 30)
        views = likes * rng.randint(10, 100) + rng.randint(0, 999)
        likes_views.append(f"{vid}\t{likes}\t{views}")
        titles.append((vid, title))
        tags.append((vid, name))
        if not (quirks and rng.random() < 0.1):  # some videos have no caption
            captions.append(f"{vid}\t{caption}")
        has_cover = not (quirks and cover_rng.random() < 0.05)  # some covers were not captioned
        if has_cover:
            covers.append((vid, cover))
        for _ in range(n_comments):
            user += 1
            comments.append(
                (f"u{user % 5000}", vid, rng.choice(["love it", "so cool", "lol", "wow"]))
            )
        rows.append(
            {
                "video_id": vid,
                "title_en": title,
                "cover_desc": cover if has_cover else "",
                "caption_en": caption,
                "partition": name,
                "likes": likes,
                "views": views,
                "comment_count": n_comments,
            }
        )

    if quirks:
        likes_views.insert(len(likes_views) // 2, "broken line without tabs")
        likes_views.append(f"{10_000}\t1\t2")  # duplicate id: the first line wins
        captions.append("not-a-number\tcaption for an id that does not parse")
    _write_lines(folder / "MicroLens-100k_likes_and_views.txt", likes_views)
    _write_csv(folder / "MicroLens-100k_title_en.csv", titles, bad=quirks)
    _write_csv(folder / "tags_to_summary.csv", tags, bad=quirks)
    _write_lines(
        folder / "MicroLens-100k_comment_en.txt",
        [f"{u}\t{v}\t{c}" for u, v, c in comments] + (["truncated\t"] if quirks else []),
    )
    _write_lines(folder / "MicroLens-100k_caption_en.txt", captions)
    # As in the release: comma-separated, a description quoted where it holds a comma.
    _write_csv(folder / COVER_CAPTIONS_FILE, covers, bad=False)
    files = [
        "MicroLens-100k_likes_and_views.txt",
        "MicroLens-100k_title_en.csv",
        "tags_to_summary.csv",
        "MicroLens-100k_comment_en.txt",
        "MicroLens-100k_caption_en.txt",
        COVER_CAPTIONS_FILE,
    ]
    if table:
        atomic_write_text(
            folder / "table.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        )
        files.append("table.jsonl")
    return SynthReport(videos=videos, categories=min(videos, len(CATEGORIES)), files=files)


def _write_lines(path: Path, lines: list[str]) -> None:
    atomic_write_text(path, "\n".join(lines) + "\n")


def _write_csv(path: Path, rows: list[tuple[int, str]], bad: bool) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for vid, value in rows:
        writer.writerow([vid, value])
    text = buf.getvalue()
    if bad:
        text += "just-one-field\n"
    atomic_write_text(path, text)
