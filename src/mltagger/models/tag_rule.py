"""The approved tag list's rule: which models may serve under it, and what a promotion changes.

The list itself lives in the store (`mltagger.serving.tag_list`); this module is the pure part,
kept low so that serving, the cycle and the command line apply one copy of it. A tag is
`active` (the serving model answers it and every model must), `pending` (an admin added it; no
promoted model answers it yet), `retiring` (an admin asked to drop it; the serving model still
answers it, a new model may leave it out) or `retired` (no model may answer it).

A model with labels L is accepted iff active ⊆ L ⊆ active ∪ pending ∪ retiring. Promoting it
turns the pending tags it answers into active ones and the retiring tags it leaves out into
retired ones, so after a promotion the list's active tags are exactly the model's labels again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from mltagger.core.errors import UserError

ACTIVE = "active"
PENDING = "pending"
RETIRING = "retiring"
RETIRED = "retired"
TAG_STATUSES = (ACTIVE, PENDING, RETIRING, RETIRED)
# The fallback tag: every model answers it for what fits no topic; it can never be dropped.
FALLBACK_TAG = "other"
MAX_TAG_CHARS = 40
# lowercase kebab-case: words of a-z and 0-9 joined by single hyphens
TAG_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class TagListError(UserError):
    """A model that the tag list refuses, or an admin change the list cannot take; one line."""


def bad_tag_name(name: str) -> str | None:
    """Why `name` cannot be a tag (None when it can): tags are lowercase kebab-case words, at
    most MAX_TAG_CHARS long, because they appear in URLs, metrics labels and file names."""
    if not isinstance(name, str) or not name:
        return "a tag name must be a non-empty string"
    if len(name) > MAX_TAG_CHARS:
        return f"tag {name[:MAX_TAG_CHARS]!r}… is {len(name)} characters; at most {MAX_TAG_CHARS}"
    if not TAG_NAME.match(name):
        return (
            f"tag {name!r} is not lowercase kebab-case (letters a-z, digits, single hyphens "
            "between words, e.g. recommender-systems)"
        )
    return None


def _served(statuses: Mapping[str, str]) -> set[str]:
    return {t for t, s in statuses.items() if s in (ACTIVE, RETIRING)}


def refusal(labels: Iterable[str], statuses: Mapping[str, str]) -> str | None:
    """Why a model answering `labels` may not serve under the list `statuses` (tag -> status),
    in one line; None when it may. Retiring tags count as active for the model that still
    answers them, and may be left out by a new one. Every model answers the fallback tag
    through the decision rule (low confidence, out of scope), whether or not it is one of its
    classes: a six-topic model answers `other` too."""
    labels = list(labels)
    have = set(labels) | {FALLBACK_TAG}
    required = {t for t, s in statuses.items() if s == ACTIVE}
    allowed = {t for t, s in statuses.items() if s in (ACTIVE, PENDING, RETIRING)}
    missing = sorted(required - have)
    unexpected = [t for t in labels if t not in allowed]
    if not missing and not unexpected:
        return None
    parts = []
    if missing:
        parts.append(f"it does not answer the active tags {missing}")
    if unexpected:
        named = ", ".join(f"{t} ({statuses.get(t, 'not in the list')})" for t in unexpected)
        parts.append(f"it answers tags the list does not allow: {named}")
    return "; ".join(parts)


def promotion_changes(labels: Iterable[str], statuses: Mapping[str, str]) -> dict[str, str]:
    """What promoting an accepted model changes: tag -> new status. The pending tags it answers
    become active; the retiring tags it leaves out become retired."""
    have = set(labels)
    changes = {}
    for tag, status in statuses.items():
        if status == PENDING and tag in have:
            changes[tag] = ACTIVE
        elif status == RETIRING and tag not in have:
            changes[tag] = RETIRED
    return changes


def rollback_changes(labels: Iterable[str], statuses: Mapping[str, str]) -> dict[str, str]:
    """What rolling back to an earlier model changes, so the list describes what serves again:
    the active tags it does not answer go back to pending (a later promote brings them), the
    retired tags it answers go back to retiring. Tags the list does not hold at all (removed
    since) are not changed: `refusal` still refuses such a model."""
    have = set(labels)
    changes = {}
    for tag, status in statuses.items():
        if status == ACTIVE and tag not in have and tag != FALLBACK_TAG:
            changes[tag] = PENDING
        elif status == RETIRED and tag in have:
            changes[tag] = RETIRING
    return changes


def after(statuses: Mapping[str, str], changes: Mapping[str, str]) -> dict[str, str]:
    """The list once `changes` are applied."""
    return {**statuses, **changes}
