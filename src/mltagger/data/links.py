"""A link's identity, for the duplicate screen's exact stage: two items that point at the same
page are the same item, whatever their titles say."""

from __future__ import annotations

import re

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://")


def url_key(url: str | None) -> str | None:
    """The link without scheme, `www.`, query, fragment or trailing slash, in lower case; None
    for no link or a bare domain (a site's front page names the site, not one item)."""
    if not url:
        return None
    u = _SCHEME.sub("", url.strip().lower())
    u = u.removeprefix("www.")
    u = u.split("#", 1)[0].split("?", 1)[0].rstrip("/")
    return u if "/" in u and u.split("/", 1)[0] else None
