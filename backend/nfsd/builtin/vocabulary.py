"""What the built-in prior knows: six patterns in eight colours, and the prompts that name them.

Run time (the prior's tokenizer, the prompt check before a job) and training read this one list.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.10),
    "orange": (1.00, 0.50, 0.05),
    "yellow": (0.96, 0.86, 0.10),
    "green": (0.10, 0.62, 0.18),
    "blue": (0.10, 0.25, 0.88),
    "purple": (0.50, 0.14, 0.66),
    "white": (0.95, 0.95, 0.95),
    "black": (0.05, 0.05, 0.05),
}
COLOUR_NAMES = tuple(COLOURS)
PATTERNS = ("solid", "stripes", "checkerboard", "dots", "gradient", "waves")

# The engine appends these to prompts; training captions carry them at random so they are harmless.
VIEW_SUFFIXES = (", front view", ", side view", ", back view", ", overhead view")
NEGATIVE_WORDS = ("unrealistic", "blurry", "low quality", "out of focus", "ugly", "low contrast", "dull",
                  "dark", "low-resolution", "gloomy")
NEGATIVE_PROMPT = ", ".join(NEGATIVE_WORDS)  # the NFSD paper's p_neg, word for word


@dataclass(frozen=True)
class TextureSpec:
    """One prompt: a pattern and its colours (``colours[0]`` is the dots' colour, ``colours[1]`` their ground)."""

    pattern: str
    colours: tuple[str, ...]

    @property
    def prompt(self) -> str:
        p, c = self.pattern, self.colours
        if p == "solid":
            return f"solid {c[0]}"
        if p == "stripes":
            return f"{c[0]} and {c[1]} stripes"
        if p == "checkerboard":
            return f"checkerboard of {c[0]} and {c[1]}"
        if p == "dots":
            return f"{c[0]} dots on {c[1]}"
        if p == "gradient":
            return f"gradient from {c[0]} to {c[1]}"
        return f"{c[0]} and {c[1]} waves"


def all_specs() -> list[TextureSpec]:
    """Every prompt of the dataset (176): 8 solids, 28 unordered pairs for the symmetric patterns,
    56 ordered pairs for dots (dots and ground are told apart)."""
    specs = [TextureSpec("solid", (c,)) for c in COLOUR_NAMES]
    pairs = list(itertools.combinations(COLOUR_NAMES, 2))
    for pattern in PATTERNS[1:]:
        chosen = list(itertools.permutations(COLOUR_NAMES, 2)) if pattern == "dots" else pairs
        specs += [TextureSpec(pattern, pair) for pair in chosen]
    return specs


SPECS = all_specs()
PROMPTS = tuple(s.prompt for s in SPECS)
_BY_PROMPT = {s.prompt: s for s in SPECS}


def parse_prompt(prompt: str) -> TextureSpec:
    """The spec a dataset prompt names (a view suffix is ignored). ``ValueError`` for other prompts."""
    base = prompt.strip().lower()
    for suffix in VIEW_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    base = " ".join(base.split())
    if base in _BY_PROMPT:
        return _BY_PROMPT[base]
    # Symmetric patterns accept either colour order ("white and red stripes").
    for spec in SPECS:
        if spec.pattern not in ("solid", "dots") and len(spec.colours) == 2:
            swapped = TextureSpec(spec.pattern, spec.colours[::-1]).prompt
            if swapped == base:
                return spec
    raise ValueError(f"{prompt!r} is not a prompt of the built-in dataset; examples: {PROMPTS[8]!r}, {PROMPTS[0]!r}")


def vocabulary() -> list[str]:
    """All texts the tokenizer must know: prompts, view suffixes, the negative prompt."""
    return list(PROMPTS) + list(VIEW_SUFFIXES) + [NEGATIVE_PROMPT]


def words(text: str) -> list[str]:
    """The words of ``text`` as the prior's tokenizer splits them (lower case, letters and digits)."""
    return re.findall(r"[a-z0-9]+", text.lower())


# The words a prompt may use: those of the dataset's prompts and of the view suffixes the engine appends.
PROMPT_WORDS = frozenset(w for text in PROMPTS + VIEW_SUFFIXES for w in words(text))


def unknown_words(prompt: str) -> list[str]:
    """The words of ``prompt`` the built-in prior never saw in a prompt, in order, each once
    (``unknown_words("weathered oak wood") == ["weathered", "oak", "wood"]``; ``[]`` for every prompt of
    ``PROMPTS``, with or without a view suffix). Such words reach the prior as unknown tokens: it
    draws what its other words say, or noise."""
    return list(dict.fromkeys(w for w in words(prompt) if w not in PROMPT_WORDS))


def grammar() -> str:
    """The prompts the built-in prior knows, as one line: the six patterns with COLOUR slots, and the colours."""
    forms = " | ".join(TextureSpec(p, ("COLOUR", "COLOUR")).prompt for p in PATTERNS)
    return f"{forms}; COLOUR is one of {', '.join(COLOUR_NAMES)} (e.g. 'red and white stripes', 'blue dots on yellow')"
