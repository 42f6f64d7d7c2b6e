"""Named slices of the data: the subsets where an average can hide a weak spot.

A slice is a function item -> bool registered with @slicing_function. The registry is the one
place slices are defined; evaluation reports every registered slice, with per-tag precision
inside it. Items are the cleaned dicts from mltagger.data.prepare (title, description, text, tag).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

SliceFn = Callable[[dict], bool]


@dataclass(frozen=True)
class Slice:
    name: str
    fn: SliceFn
    description: str

    def mask(self, items: Sequence[dict]) -> list[bool]:
        return [bool(self.fn(it)) for it in items]


REGISTRY: dict[str, Slice] = {}


def slicing_function(name: str | None = None) -> Callable[[SliceFn], SliceFn]:
    """Register a slice under `name` (default: the function's name); its docstring describes it."""

    def register(fn: SliceFn) -> SliceFn:
        key = name or fn.__name__
        if key in REGISTRY:
            raise ValueError(f"slice {key!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        REGISTRY[key] = Slice(key, fn, doc[0] if doc else "")
        return fn

    return register


def _has(pattern: str) -> Callable[[str], bool]:
    rx = re.compile(pattern, re.IGNORECASE)
    return lambda text: rx.search(text) is not None


_LLM = _has(
    r"\b(llms?|large[- ]language[- ]models?|gpt[-\w]*|chatgpt|prompt(?:s|ing|ed)?"
    r"|instruction[- ]tun\w*|rlhf|llama\w*|chatbots?)\b"
)
_TRANSFORMER = _has(r"\b(transformers?|vit|attention|detr|swin|self[- ]attention)\b")
_VISION = _has(
    r"\b(image\w*|vision|visual|video\w*|pixels?|object detection|segmentation|"
    r"detect\w*|cnns?|convolutional|photos?|cameras?|faces?|vit|detr|gan)\b"
)
_TUTORIAL = _has(
    r"\b(tutorials?|course\w*|lessons?|lectures?|guides?|blog|walkthrough|"
    r"introduction|intro|explained|learn(ing)? how|step[- ]by[- ]step|notebooks?|"
    r"hands[- ]on|book|cheat ?sheet|podcast)\b"
)
_LIBRARY = _has(
    r"\b(library|libraries|toolkit|toolbox|framework|package|api|sdk|pip install|"
    r"open[- ]source tool|python module|wrapper|cli)\b"
)

SHORT_TEXT_WORDS = 12


@slicing_function()
def short_text(item: dict) -> bool:
    """Title + description of at most 12 words: little context for any model."""
    return len(item["text"].split()) <= SHORT_TEXT_WORDS


@slicing_function()
def llm(item: dict) -> bool:
    """LLM content: large language models, GPT-style models, prompting, chatbots."""
    return _LLM(item["text"])


@slicing_function()
def cv_transformers(item: dict) -> bool:
    """Vision content that mentions transformers or attention: easy to confuse with NLP."""
    return _VISION(item["text"]) and _TRANSFORMER(item["text"])


@slicing_function()
def tutorial(item: dict) -> bool:
    """Tutorials, courses, blog posts, books and other teaching material."""
    return _TUTORIAL(item["text"])


@slicing_function()
def library(item: dict) -> bool:
    """Content describing a library, toolkit, framework or API rather than a model or paper."""
    return _LIBRARY(item["text"])


OUT_OF_SCOPE_TAG = "other"


@slicing_function()
def out_of_scope(item: dict) -> bool:
    """Items labelled `other`: ML content outside the six topics (gold label, not text)."""
    return item.get("tag") == OUT_OF_SCOPE_TAG


GOLD_SLICES = {"out_of_scope"}


def register_tag_slices(tags: Sequence[str]) -> list[str]:
    """One slice per tag: items whose gold tag is that tag.

    Accuracy inside `tag=X` is X's recall; its per-tag precision table shows where X's items go.
    Registered lazily because the tag list comes from the data config.
    """
    names = []
    for tag in tags:
        key = f"tag={tag}"
        if key not in REGISTRY:
            REGISTRY[key] = Slice(
                key, lambda it, t=tag: it.get("tag") == t, f"items whose gold tag is {tag}"
            )
        names.append(key)
    return names


def content_slices() -> list[str]:
    """The registered slices that look at the text only (usable on unlabelled items too)."""
    return [k for k in REGISTRY if not k.startswith("tag=") and k not in GOLD_SLICES]
