"""Duplicate screening at ingest time: exact copies (same normalised text or same link) and near
copies found by the lexical screen, against the store and within the incoming batch.

Two stages, cheapest first: the exact stage looks up each item's content hash
(`mltagger.data.duplicates.content_hash`) and link key (`url_key`, here because a link's identity
is the screen's rule, not the data's) in the store; the near stage runs the lexical screen
(`mltagger.screen.sketch`, `.index`, `.pairs`) on what is left.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from mltagger.data.duplicates import content_hash
from mltagger.screen.pairs import best, candidates
from mltagger.screen.sketch import VERSION, LazyProfiles, Text, normalised, sketch

EXACT = "exact"
NEAR = "near"
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://")


def url_key(url: str | None) -> str | None:
    """A link's identity for the exact stage: two items that point at the same page are the same
    item, whatever their titles say. The link without scheme, `www.`, query, fragment or trailing
    slash, in lower case; None for no link or a bare domain (a site's front page names the site,
    not one item)."""
    if not url:
        return None
    u = _SCHEME.sub("", url.strip().lower())
    u = u.removeprefix("www.")
    u = u.split("#", 1)[0].split("?", 1)[0].rstrip("/")
    return u if "/" in u and u.split("/", 1)[0] else None


@dataclass(frozen=True)
class Duplicate:
    """What an item duplicates: a stored item (`item_id`) or an earlier item of its batch
    (`batch_index`), found by text or link (`exact`, `how`) or by the lexical screen (`near`;
    `similarity` is then the pair model's duplicate probability)."""

    kind: str
    similarity: float
    item_id: int | None = None
    batch_index: int | None = None
    how: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def screen_batch(
    items: Sequence[dict],
    hashes: Sequence[str],
    stored: Callable[[Sequence[str], Sequence[str | None]], tuple[dict, dict]],
    index,
    model,
) -> tuple[list[Duplicate | None], list]:
    """The duplicate (if any) of each item of a batch, against the store and earlier batch items,
    and the items' sketches (what the store keeps for the next screen).

    Exact beats near; a stored match beats a batch match. `stored(hashes, link_keys)` maps the
    hashes and link keys it knows to item ids (`Store.ids_by_hash_or_url`: one query for the
    batch); `index` is the `ScreenIndex` of stored items and `model` the calibrated `PairModel`
    (None: exact stage only).
    """
    urls = [url_key(it.get("url")) for it in items]
    known, known_urls = stored(list(hashes), urls)
    result: list[Duplicate | None] = [None] * len(items)
    first_hash: dict[str, int] = {}
    first_url: dict[str, int] = {}
    for j, (h, u) in enumerate(zip(hashes, urls, strict=True)):
        if h in known:
            result[j] = Duplicate(EXACT, 1.0, item_id=known[h], how="text")
        elif u and u in known_urls:
            result[j] = Duplicate(EXACT, 1.0, item_id=known_urls[u], how="link")
        elif h in first_hash:
            result[j] = Duplicate(EXACT, 1.0, batch_index=first_hash[h], how="text")
        elif u and u in first_url:
            result[j] = Duplicate(EXACT, 1.0, batch_index=first_url[u], how="link")
        first_hash.setdefault(h, j)
        if u:
            first_url.setdefault(u, j)
    sketches = sketch([Text(normalised(it["title"], it["description"])) for it in items])
    if model is None:
        return result, sketches
    cands = candidates(LazyProfiles(items), sketches, index, model.k, model.floor)
    for j, cs in enumerate(cands):
        if result[j] is not None:
            continue
        top, prob = best(model, cs)
        if top is not None and prob >= model.threshold:
            result[j] = Duplicate(
                NEAR, round(prob, 4), item_id=top.item_id, batch_index=top.batch_index
            )
    return result, sketches


def fill_store(store, items: Sequence[dict], chunk: int = 5000) -> int:
    """Store real items (title, description, url) with their screen sketches, as the service
    would have stored them, so the screen can be measured against a full store (load tests)."""
    n = 0
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        vecs = sketch([Text(normalised(it["title"], it["description"])) for it in part])
        store.add_items(
            [
                {
                    "title": it["title"],
                    "description": it["description"] or "",
                    "url": it.get("url"),
                    "url_key": url_key(it.get("url")),
                    "content_hash": content_hash(it["title"], it["description"] or ""),
                    "tag": "other",
                    "tagged_by": "model",
                    "needs_review": False,
                    "source": "benchmark",
                    "embedding": vecs[k],
                    "embedding_model": VERSION,
                }
                for k, it in enumerate(part)
            ]
        )
        n += len(part)
    return n
