"""The seeded English corpus every tiny tokenizer is trained on: caption-like sentences.

One corpus for every architecture, so the tiny models share their ordinary vocabulary and differ only in
their special tokens.
"""
from __future__ import annotations

import random

SEED = 0

# Words the corpus is made of, grouped so sentences read like image captions.
COLOURS = (
    "red orange yellow green blue purple pink brown black white grey gray gold silver "
    "dark light bright pale"
).split()
ANIMALS = (
    "cat dog bird fish horse cow sheep goat pig duck chicken rabbit mouse bear lion tiger "
    "elephant monkey zebra giraffe deer fox wolf frog snake turtle owl bee butterfly"
).split()
OBJECTS = (
    "car bus bike train boat plane truck house door window table chair bed sofa lamp clock "
    "book cup plate bowl bottle glass box bag ball hat shoe shirt phone computer screen "
    "picture photo sign road street bridge tree flower grass leaf rock hill mountain river "
    "lake sea beach sky cloud sun moon star field garden park wall floor roof fence kitchen "
    "room city town building tower light water snow ice fire food bread apple banana cake "
    "pizza sandwich orange umbrella kite toy bench pole line circle square shape pattern"
).split()
PEOPLE = "man woman boy girl child person people player driver family friend group crowd".split()
ADJECTIVES = (
    "big small large little tall short long round flat old new young happy sad busy quiet "
    "empty full open closed clean wet dry warm cold hot soft hard smooth rough sharp blurry "
    "clear simple plain striped spotted wooden metal plastic shiny colourful many few"
).split()
VERBS = (
    "sits stands runs walks jumps flies swims sleeps eats drinks holds looks plays rides "
    "carries waits lies rests moves grows shines hangs leans"
).split()
PREPOSITIONS = "on in under over near behind beside between above below inside across along".split()
PLACES = "left right top bottom middle centre corner background foreground edge".split()
DESCRIBE = (
    "The image shows|This picture shows|In the photo there is|The scene contains|"
    "I can see|There is|The picture has|This image contains|We see|It shows"
).split("|")
QUESTIONS = (
    "Describe the image.|What is in the picture?|What colour is the {noun}?|"
    "How many {noun}s are there?|Where is the {noun}?|What is the {animal} doing?|"
    "Is there a {noun} in the image?|What do you see?|Describe this photo in detail.|"
    "What is the main object?"
).split("|")
NUMBERS = "one two three four five six seven eight nine ten".split()


def _sentence(rng: random.Random) -> str:
    """One caption, question or answer-like sentence."""
    noun = rng.choice(OBJECTS + ANIMALS + PEOPLE)
    phrase = f"a {rng.choice(ADJECTIVES)} {rng.choice(COLOURS)} {noun}"
    kind = rng.randrange(5)
    if kind == 0:
        return f"{rng.choice(DESCRIBE)} {phrase} {rng.choice(PREPOSITIONS)} the {rng.choice(OBJECTS)}."
    if kind == 1:
        return f"The {rng.choice(ANIMALS + PEOPLE)} {rng.choice(VERBS)} {rng.choice(PREPOSITIONS)} {phrase}."
    if kind == 2:
        return rng.choice(QUESTIONS).format(noun=rng.choice(OBJECTS), animal=rng.choice(ANIMALS))
    if kind == 3:
        return f"There are {rng.choice(NUMBERS)} {rng.choice(OBJECTS + ANIMALS)}s in the {rng.choice(PLACES)}."
    return f"{phrase.capitalize()} can be seen at the {rng.choice(PLACES)} of the image."


def corpus(n_paragraphs: int = 10000) -> list[str]:
    """Seeded paragraphs of one to four sentences each."""
    rng = random.Random(SEED)
    return [" ".join(_sentence(rng) for _ in range(rng.randint(1, 4))) for _ in range(n_paragraphs)]
