"""Split a customer's reply into what they wrote now, what they quoted, and their signature.

One algorithm over quote-aware lines (`lines.py`), whichever part the client sent:

1. A *hard boundary* ends the new text: everything from it on is the earlier mail, quoted or
   not. Hard boundaries are our own reply marker, an "-----Original Message-----" or forward
   separator, an Outlook-style header block ("From:/Sent:/To:/Subject:" in any of the
   languages in `markers.py`), an attribution line ("On … wrote:") whose quote is not
   ">"-prefixed, and the reply containers of HTML clients.
2. Above it, ">"-quoted lines (or lines inside HTML quote containers) and their attribution
   lines are quoted; every other line is the customer's, so answers written between quoted
   parts (inline posting) and below them (bottom posting) are kept.
3. The signature is cut from the end of the new text (`signatures.py`).

It never decides on a guess that would hide the customer's words without something quoted
to show for it: an attribution without an address, a date or an opening word is not one, a
header block needs a sender and a second field, and a signature cut needs only
signature-like lines below it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailticket.conversation.html import html_lines
from mailticket.conversation.lines import Line, Mark, text_lines
from mailticket.conversation.markers import (
    DIGIT_RE,
    EMAIL_RE,
    FIELD_ROLE,
    FORWARD_RE,
    HEADER_FIELD_RE,
    INTRO_OPENER_RE,
    RULE_RE,
    SEPARATOR_RE,
    WROTE_RE,
    is_reply_marker,
)
from mailticket.conversation.signatures import find_signature


@dataclass(frozen=True, slots=True)
class ReplyParts:
    """A reply, split. `new_text` is what the comment shows; nothing is ever dropped:
    new_text + signature + quoted_text together hold every non-blank line of the part used."""

    new_text: str
    quoted_text: str
    signature: str
    # How the quote was found: "text:intro", "text:header-block", "text:separator",
    # "text:forward", "text:marker", "text:quote-prefix", "html:.gmail_quote", "html:#divRplyFwdMsg",
    # ..., or "none" when the message quotes nothing.
    method: str
    # Which part the split was made on: "text", "html" or "none" (both empty).
    source: str
    # The quoted part is a forwarded message rather than a replied-to one.
    forwarded: bool = False

    @property
    def has_quote(self) -> bool:
        return bool(self.quoted_text.strip())

    @property
    def body_with_signature(self) -> str:
        return "\n\n".join(p for p in (self.new_text, self.signature) if p)


@dataclass(frozen=True, slots=True)
class _Split:
    kept: list[int]
    quoted: list[int]
    boundary: int | None
    method: str
    forwarded: bool


_MAX_INTRO_LINES = 3
_MAX_INTRO_CHARS = 320


def _join(parts: list[str]) -> str:
    out = ""
    for p in parts:
        # "Someone <\nsomeone@example.com> wrote:" rejoins without a space after "<".
        out = p if not out else (out + p if out.endswith(("<", "(", "[")) else out + " " + p)
    return out


_DASHED = re.compile(r"^[-–—=]{2,}\s*(?P<inner>.+?)\s*[-–—=]{2,}$")
_OLD_GMAIL = re.compile(r"^\d{4}[/.-]\d{1,2}[/.-]\d{1,2}\b.*<[^<>@\s]+@[^<>\s]+>$")


def _is_intro(s: str, quote_follows: bool) -> bool:
    dashed = _DASHED.match(s)
    if dashed:  # Android's "---- John Smith wrote ----"
        s = dashed.group("inner").rstrip(":：") + ":"
    if quote_follows and _OLD_GMAIL.match(s):  # Gmail's old "2011/4/7 Name <address>"
        return True
    if len(s) > _MAX_INTRO_CHARS or not s.endswith((":", "：")):
        return False
    anchored = bool(EMAIL_RE.search(s) or DIGIT_RE.search(s) or INTRO_OPENER_RE.match(s))
    if WROTE_RE.search(s):
        return anchored
    # No verb (Gmail in Japanese: "2024年1月15日(月) 10:00 田中太郎 <taro@example.com>:"): a date
    # and an address, and only directly above a quote.
    return quote_follows and bool(EMAIL_RE.search(s) and DIGIT_RE.search(s)) and len(s) <= 200


def _intro_start(s: str) -> bool:
    if s.endswith((".", "!", "?", "。", "！", "？")):
        return False
    return bool(INTRO_OPENER_RE.match(s) or DIGIT_RE.search(s) or EMAIL_RE.search(s))


# `_is_intro` accepts only text ending in one of these: ":" (the attribution), ">" (Gmail's
# old "2011/4/7 Name <address>") or a dash or "=" (Android's "---- John wrote ----"). An
# attribution ends where its last line ends, so a line ending otherwise cannot end one, and
# the regexes run only on the few lines that can.
_INTRO_LAST = frozenset(":：>-–—=")


class _View:
    """The columns of `lines` the scan reads, each computed once per message (a property or
    a look-ahead per line and per rule cost more than the rules themselves)."""

    __slots__ = ("depth", "lines", "n", "next_content", "text")

    def __init__(self, lines: list[Line]) -> None:
        self.lines = lines
        self.n = n = len(lines)
        self.text = [line.text for line in lines]
        self.depth = [line.depth for line in lines]
        # next_content[j]: the first non-blank line after j, or None; one pass from the end.
        self.next_content: list[int | None] = [None] * n
        following: int | None = None
        for k in range(n - 1, -1, -1):
            self.next_content[k] = following
            if self.text[k]:
                following = k


def _intro_end(v: _View, i: int) -> int | None:
    """Last line of an attribution starting at line i (wrapped over up to 3 lines), or None."""
    text, depth = v.text, v.depth
    parts: list[str] = []
    for j in range(i, min(i + _MAX_INTRO_LINES, v.n)):
        s = text[j]
        if not s or depth[j]:
            break
        parts.append(s)
        if s[-1] not in _INTRO_LAST:
            continue
        nxt = v.next_content[j]
        quote_follows = nxt is not None and depth[nxt] > 0
        if _is_intro(_join(parts), quote_follows):
            # "Thanks\nOn … wrote:" keeps "Thanks": line i joins the attribution only if it
            # looks like its start (an opening word, a date, an address), not like a sentence.
            if j > i and _is_intro(_join(parts[1:]), quote_follows) and not _intro_start(parts[0]):
                return None
            return j
    return None


def _header_block(v: _View, i: int) -> bool:
    """An Outlook-style header of the earlier mail starts at line i."""
    text = v.text
    m = HEADER_FIELD_RE.match(text[i])
    if not m:
        return False
    roles = {FIELD_ROLE[m.group("name").casefold()]}
    from_value = m.group("value") if "from" in roles else ""
    stray = 0
    for j in range(i + 1, min(i + 10, v.n)):
        s = text[j]
        if not s:
            break
        f = HEADER_FIELD_RE.match(s)
        if f:
            role = FIELD_ROLE[f.group("name").casefold()]
            roles.add(role)
            if role == "from" and not from_value:
                from_value = f.group("value")
            stray = 0
        else:
            stray += 1  # a wrapped long value (To: with many addresses)
            if stray > 2:
                break
    if "from" not in roles:
        return False
    if EMAIL_RE.search(from_value) and len(roles) >= 2:
        return True
    return "subject" in roles or ("date" in roles and len(roles) >= 3)


def _hard_boundary(v: _View, i: int) -> tuple[str, bool] | None:
    """(method, forwarded) when line i starts the earlier mail outright."""
    s = v.text[i]
    if is_reply_marker(s):
        return "text:marker", False
    if SEPARATOR_RE.match(s):
        forwarded = bool(FORWARD_RE.search(s))
        return ("text:forward" if forwarded else "text:separator"), forwarded
    # A header field has its colon on the line itself: without one, no block starts here.
    if (":" in s or "：" in s) and _header_block(v, i):
        return "text:header-block", False
    if RULE_RE.match(s):
        nxt = v.next_content[i]
        if nxt is not None and nxt - i <= 3 and _header_block(v, nxt):
            return "text:header-block", False
    return None


def _split(lines: list[Line]) -> _Split:
    v = _View(lines)
    n, text, depth = v.n, v.text, v.depth
    quoted: set[int] = set()
    boundary: int | None = None
    method = "none"
    forwarded = False
    i = 0
    while i < n:
        line = lines[i]
        if line.mark is Mark.BOUNDARY:
            boundary, method = i, line.evidence or "html"
            break
        if not text[i]:
            i += 1
            continue
        if depth[i] or line.mark is Mark.INTRO:
            quoted.add(i)
            if method == "none":
                method = line.evidence or "text:quote-prefix"
            i += 1
            continue
        hard = _hard_boundary(v, i)
        if hard:
            boundary, (method, forwarded) = i, hard
            break
        end = _intro_end(v, i)
        if end is not None:
            nxt = v.next_content[end]
            if nxt is None or (depth[nxt] == 0 and lines[nxt].mark is Mark.NONE):
                # The quote that follows is not marked: all of it is the earlier mail.
                boundary, method = i, "text:intro"
                break
            quoted.update(range(i, end + 1))
            method = "text:intro"
            i = end + 1
            continue
        # A quoted line broken by the client's wrapping ("> long text …\ncontinued\n> more")
        # is quote, not an inline answer.
        if (
            0 < i < n - 1
            and depth[i - 1]
            and depth[i + 1]
            and len(lines[i - 1].raw) >= 50
            and text[i][:1].islower()
        ):
            quoted.add(i)
        i += 1
    if boundary is not None:
        # The rule or blank lines right above an Outlook header belong to it.
        b = boundary
        while b > 0 and (not text[b - 1] or RULE_RE.match(text[b - 1])) and b - 1 not in quoted:
            b -= 1
            if RULE_RE.match(text[b]):
                boundary = b
        quoted.update(range(boundary, n))
    kept = [k for k in range(n) if k not in quoted]
    return _Split(kept, sorted(quoted), boundary, method, forwarded)


def _render(lines: list[Line], idx: list[int], quoted: bool) -> str:
    """Lines by index; a gap where other lines were taken out becomes one blank line."""
    out: list[str] = []
    prev: int | None = None
    for k in idx:
        line = lines[k]
        text = (
            line.raw.rstrip() if quoted else (line.raw.rstrip() if line.depth == 0 else line.text)
        )
        if prev is not None and k != prev + 1 and out and out[-1]:
            out.append("")
        if not text.strip():
            if out and out[-1]:
                out.append("")
        else:
            out.append(text)
        prev = k
    return "\n".join(out).strip("\n")


def _parts(lines: list[Line], source: str) -> ReplyParts:
    sp = _split(lines)
    kept = sp.kept
    # Signature: a client's signature container, else the words at the end of the new text.
    sig_at: int | None = None
    marked = [p for p, k in enumerate(kept) if lines[k].mark is Mark.SIGNATURE]
    if marked and all(lines[k].mark is Mark.SIGNATURE or lines[k].blank for k in kept[marked[0] :]):
        sig_at = marked[0]
    if sig_at is None:
        sig_at = find_signature([lines[k].text for k in kept])
        # A list footer below the signature ("-Maarten\n\n____\nriak-users mailing list"):
        # look once more above the cut.
        if sig_at is not None:
            above = find_signature([lines[k].text for k in kept[:sig_at]])
            if above is not None:
                sig_at = above
    new_idx = kept if sig_at is None else kept[:sig_at]
    sig_idx = [] if sig_at is None else kept[sig_at:]
    return ReplyParts(
        new_text=_render(lines, new_idx, quoted=False).strip(),
        quoted_text=_render(lines, sp.quoted, quoted=True).strip(),
        signature=_render(lines, sig_idx, quoted=False).strip(),
        method=sp.method,
        source=source,
        forwarded=sp.forwarded,
    )


def _locate(text: list[Line], html: ReplyParts) -> int | None:
    """Line of the text part where the HTML part's quote starts, if it can be found."""
    first = next((s.strip() for s in html.quoted_text.splitlines() if len(s.strip()) >= 8), None)
    if first is None:
        return None
    key = " ".join(first.split()).casefold()
    for k, line in enumerate(text):
        t = " ".join(line.text.split()).casefold()
        if t and (t == key or (len(t) >= 12 and key.startswith(t))):
            return k
    return None


def split_reply(text: str | None, html: str | None) -> ReplyParts:
    """Split a customer's reply. Pass the message's text/plain part and text/html part as
    decoded strings (None for a part the message does not have; do not pass a text rendered
    from the HTML as `text`). Pure: no I/O, never raises on odd input."""
    lines = text_lines(text) if text and text.strip() else None
    text_parts = _parts(lines, "text") if lines is not None else None
    if text_parts is not None and text_parts.has_quote:
        return text_parts  # what the HTML part says is not asked then: no need to parse it
    html_parts = _parts(html_lines(html), "html") if html and html.strip() else None
    if text_parts is None or lines is None:
        return html_parts or ReplyParts("", "", "", "none", "none")
    if html_parts is None or not html_parts.has_quote:
        return text_parts
    # The text part shows no quote but the HTML marks one (a client that flattens quotes in
    # its text part, a header block in a language we do not know): cut the text where the
    # HTML quote starts, so the customer's own line breaks are kept.
    at = _locate(lines, html_parts)
    if at is None or at == 0:
        return html_parts
    forced = [
        *lines[:at],
        *(Line(ln.raw, ln.text, ln.depth, Mark.BOUNDARY, html_parts.method) for ln in lines[at:]),
    ]
    return _parts(forced, "text")
