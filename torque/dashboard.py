"""The dashboard at ``GET /``: one static page over the JSON API.

No build step and nothing fetched from elsewhere: the page, its style and
its script are in ``torque/static/``, put together once at import, and it
talks only to this node's API (relative URLs, so it also works behind a
proxy under a sub-path).  With ``--api-token`` the page asks for the token
once and keeps it in ``sessionStorage`` (this tab only), sending it as
``Authorization: Bearer``; the page itself needs no token, and holds no data
until the API answers.

Everything shown is built with ``textContent``, never ``innerHTML``, so a
task's URL or error can't inject markup; a Content-Security-Policy that
allows only this page's own script and style (by hash) backs that up.
"""

from __future__ import annotations

import base64
import hashlib
from importlib.resources import files


def _static(name: str) -> str:
    return (files("torque") / "static" / name).read_text(encoding="utf-8")


STYLE = _static("dashboard.css")
SCRIPT = _static("dashboard.js")
BODY = _static("dashboard.html")


def _hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


PAGE = (
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "<title>torque</title>\n"
    f"<style>{STYLE}</style>\n</head>\n<body>{BODY}<script>{SCRIPT}</script>\n</body>\n</html>\n"
).encode()

CSP = (
    f"default-src 'none'; script-src {_hash(SCRIPT)}; style-src {_hash(STYLE)}; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def render(request) -> bytes:
    """The page, with headers that keep it from being framed, sniffed or
    cached, and that let it run nothing but its own script."""
    request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
    request.setHeader(b"Content-Security-Policy", CSP.encode())
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    request.setHeader(b"Cache-Control", b"no-store")
    return PAGE
