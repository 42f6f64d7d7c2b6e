"""Which links may be shown at all: the http(s) link rule that validation (`data.validation`) and
the API's models (`serving.schemas`) both apply. A link's identity for the duplicate screen
(`url_key`) is the screen's own rule, in `mltagger.screen.screening`."""

from __future__ import annotations

import re

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
