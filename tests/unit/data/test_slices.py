"""Slices: each named slice picks what its docstring says, and the registry stays consistent."""

from __future__ import annotations

import pytest

from mltagger.data import slices
from mltagger.data.text import join_text


def item(title: str, description: str = "", tag: str | None = None) -> dict:
    return {
        "title": title,
        "description": description,
        "text": join_text(title, description),
        "tag": tag,
    }


@pytest.mark.parametrize(
    ("name", "yes", "no"),
    [
        (
            "short_text",
            item("GraphSAGE", "Inductive node embeddings."),
            item("A long one", "with many many words in the description so that it is not short"),
        ),
        (
            "llm",
            item("Prompt engineering guide", "Getting more out of GPT-4."),
            item("Image classification", "ResNet on CIFAR-10."),
        ),
        (
            "llm",
            item("LLaMA fine-tuning", "Instruction tuning a large language model."),
            item("Spelling correction", "Fix typos promptly."),
        ),
        (
            "cv_transformers",
            item("ViT explained", "Vision transformer for image classification."),
            item("BERT explained", "A transformer for text."),
        ),
        (
            "tutorial",
            item("A gentle introduction to GANs", "Tutorial with code."),
            item("DETR", "End-to-end object detection."),
        ),
        (
            "library",
            item("PyTorch Geometric", "A library for deep learning on graphs."),
            item("Attention is all you need", "The paper."),
        ),
    ],
)
def test_slice_matches_examples(name, yes, no):
    fn = slices.REGISTRY[name].fn
    assert fn(yes)
    assert not fn(no)


def test_every_slice_says_what_it_captures():
    for s in slices.REGISTRY.values():
        assert s.description, s.name


def test_registering_a_name_twice_fails():
    with pytest.raises(ValueError, match="registered twice"):
        slices.slicing_function("short_text")(lambda it: True)


def test_tag_slices_each_pick_their_own_tag():
    # Names no other test registers, so this checks registrations made here.
    tags = ["slice-test-a", "slice-test-b", "slice-test-c"]
    names = slices.register_tag_slices(tags)
    assert names == [f"tag={t}" for t in tags]
    items = [item(t, tag=t) for t in tags]
    for k, name in enumerate(names):
        assert slices.REGISTRY[name].mask(items) == [j == k for j in range(len(tags))], name
    assert slices.register_tag_slices(tags[:1]) == names[:1]  # registering again is a no-op
    assert not any(n.startswith("tag=") for n in slices.content_slices())
