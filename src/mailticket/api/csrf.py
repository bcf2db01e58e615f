"""Cross-site request forgery protection for the thread view's forms.

Three layers, any one of which stops a forged post:
- the sign-in cookie is SameSite=strict, so a browser does not send it with a request that
  another site starts;
- the browser's own word on where the request comes from (Sec-Fetch-Site, else Origin)
  must be this site;
- every form carries a token signed with the signed-in API token (HMAC-SHA256): a page on
  another site can neither read the HttpOnly cookie nor our pages, so it cannot make one.
  No server secret is needed, and signing out (or revoking the token) ends its validity.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from fastapi import Request

from mailticket.api.errors import Problem

FIELD = "csrf_token"
_PURPOSE = b"mailticket thread view form v1"


def form_token(session_token: str) -> str:
    """The token the signed-in browser's forms carry."""
    return hmac.new(session_token.encode(), _PURPOSE, hashlib.sha256).hexdigest()


def cross_site(request: Request) -> bool:
    # Browsers state where a request comes from in Sec-Fetch-Site; older ones only in Origin
    # ("null" from opaque origins counts as foreign).
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    return bool(origin) and urlsplit(origin or "").netloc != request.headers.get("host")


def check(request: Request, session_token: str, submitted: str | None) -> None:
    """Problem 403 unless the post comes from our own page."""
    if cross_site(request):
        raise Problem(403, "cross-site form posts are refused")
    if not submitted or not hmac.compare_digest(submitted, form_token(session_token)):
        raise Problem(403, "the form's security token is missing or wrong: reload the page")
