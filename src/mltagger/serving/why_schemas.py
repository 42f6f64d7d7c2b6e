"""The answer of `GET /items/{id}/why` (schemas.py is at its length limit, so it lives here)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class WordOut(BaseModel):
    word: str = Field(description="a word of the item (lower-cased; every occurrence counts)")
    importance: float = Field(
        description="how much the explained tag's probability drops without it (negative: "
        "the word spoke against the tag)"
    )


class NeighbourOut(BaseModel):
    id: int | str | None = Field(description="the training item's id in the training data")
    title: str
    tag: str = Field(description="its label in the training data")
    similarity: float = Field(description="cosine similarity of the model's sentence embeddings")


class WhyOut(BaseModel):
    """Why the serving model gives an item its top tag: the words that moved the score most
    (occlusion) and the nearest labelled training items."""

    id: int
    model_version: str = Field(description="the model explained: the one serving now")
    stored_by: str | None = Field(description="the model that tagged the item when stored")
    note: str | None = Field(
        description="set when stored_by is another model than the one explained"
    )
    tag: str = Field(description="the tag explained: the serving model's top tag on the item")
    probability: float = Field(description="that tag's probability on the whole text")
    item_tag: str | None = Field(description="the item's tag now (a person's may differ)")
    words: list[WordOut] = Field(description="up to 8 words, the largest drop first")
    words_tried: int = Field(
        description="how many words were removed one at a time (no stop words, only the words "
        "within the model's max_length tokens, at most 48)"
    )
    neighbours: list[NeighbourOut] | None = Field(
        description="the 3 nearest labelled training items; null while they are being indexed"
    )
    neighbours_note: str | None = Field(
        description="why there are none, or why they may not be the model's own training data"
    )
