"""A link's identity, for the duplicate screen's exact stage: two items that point at the same
page are the same item, whatever their titles say; and which links may be shown at all."""

from __future__ import annotations

import re

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://")
# A link people may follow: http(s), a host name or IPv4 address (an international name in its
# xn-- form) and an optional port, then any path, query and fragment in printable ASCII (other
# characters percent-encoded). So no `javascript:`, `data:` or `vbscript:` link, none hiding a
# space or a control character, none with a user name before the host (`http://bank.example@evil`
# reads as the bank), and none that a URL parser refuses (`http://[`). Written for Python's `re`
# and ECMA-262 alike (the API states it).
_LABEL = "[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
_PORT = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
HTTP_URL = f"^[Hh][Tt][Tt][Pp][Ss]?://{_LABEL}(\\.{_LABEL})*\\.?(:{_PORT})?([/?#][!-~]*)?$"
MAX_URL_CHARS = 2048
_HTTP_URL = re.compile(HTTP_URL)


def is_http_url(url: object) -> bool:
    # fullmatch: Python's `$` also matches before a final newline, ECMA-262's does not
    return isinstance(url, str) and len(url) <= MAX_URL_CHARS and bool(_HTTP_URL.fullmatch(url))


def url_key(url: str | None) -> str | None:
    """The link without scheme, `www.`, query, fragment or trailing slash, in lower case; None
    for no link or a bare domain (a site's front page names the site, not one item)."""
    if not url:
        return None
    u = _SCHEME.sub("", url.strip().lower())
    u = u.removeprefix("www.")
    u = u.split("#", 1)[0].split("?", 1)[0].rstrip("/")
    return u if "/" in u and u.split("/", 1)[0] else None
