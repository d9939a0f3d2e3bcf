"""Generate short product reviews with a sentiment label as data/reviews.csv.

The sentences are built from templates with synonyms, intensifiers and
negation, so the label depends on word order: "not good" is negative, "not
bad" is positive, "good but broken" turns on the clause after "but".
Deterministic (fixed seed), no download.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

POSITIVE = [
    "good",
    "great",
    "excellent",
    "lovely",
    "solid",
    "reliable",
    "fantastic",
    "decent",
]
NEGATIVE = [
    "bad",
    "awful",
    "terrible",
    "poor",
    "flimsy",
    "disappointing",
    "useless",
    "cheap",
]
NOUNS = [
    "phone",
    "blender",
    "jacket",
    "lamp",
    "keyboard",
    "tent",
    "kettle",
    "charger",
    "chair",
]
INTENSIFIERS = ["", "", "really ", "very ", "quite ", "truly "]
OPENERS = [
    "the {n} is",
    "this {n} is",
    "my new {n} is",
    "honestly the {n} is",
    "overall this {n} is",
]
NEGATIONS = ["not", "never", "hardly", "not at all"]
ENDINGS = ["", "", ".", "!", " overall.", " for the price."]


def _phrase(rng: random.Random, positive: bool) -> str:
    """An adjective phrase whose sentiment is `positive`, maybe via negation."""
    negate = rng.random() < 0.4
    word_positive = positive != negate
    adj = rng.choice(POSITIVE if word_positive else NEGATIVE)
    if negate:
        neg = rng.choice(NEGATIONS)
        if neg == "not at all":
            return f"not at all {adj}"
        return f"{neg} {adj}"
    return f"{rng.choice(INTENSIFIERS)}{adj}"


def review(rng: random.Random) -> tuple[str, str]:
    positive = rng.random() < 0.5
    opener = rng.choice(OPENERS).format(n=rng.choice(NOUNS))
    if rng.random() < 0.3:
        # contrast: the clause after "but" decides
        first = _phrase(rng, not positive)
        text = f"{opener} {first} but {_phrase(rng, positive)}"
    else:
        text = f"{opener} {_phrase(rng, positive)}"
    return text + rng.choice(ENDINGS), "positive" if positive else "negative"


def main(n: int = 2400, seed: int = 0) -> None:
    rng = random.Random(seed)
    out = Path(__file__).resolve().parent / "data" / "reviews.csv"
    out.parent.mkdir(exist_ok=True)
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for _ in range(n):
            writer.writerow(review(rng))
    print(f"wrote {out} ({n} reviews)")


if __name__ == "__main__":
    main()
