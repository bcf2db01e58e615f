"""An HTML mail body as quote-aware lines.

Clients mark quotes in HTML far more reliably than in plain text, and in the same way in
every language: Gmail's `gmail_quote`, Apple's `<blockquote type="cite">`, Thunderbird's
`moz-cite-prefix`, Yahoo's `yahoo_quoted`, Outlook's `divRplyFwdMsg` and the border-top
header div, Hotmail's `stopSpelling` rule. This walker (stdlib parser: tolerant of broken
markup, no native dependency) turns the body into `Line`s with a quote depth and marks, and
the words-based rules in `quotes.py` then run on them exactly as on a text part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

from mailticket.conversation.lines import Line, Mark, clean

_SKIP = frozenset({"script", "style", "head", "title", "noscript", "template", "svg", "xml"})
_BLOCK = frozenset(
    {
        "p", "div", "section", "article", "header", "footer", "aside", "nav", "main", "h1", "h2",
        "h3", "h4", "h5", "h6", "ul", "ol", "dl", "dt", "dd", "table", "tr", "li", "blockquote",
        "pre", "hr", "form", "fieldset", "address", "center", "body", "html", "figure",
        "figcaption", "tbody", "thead", "tfoot", "caption",
    }
)  # fmt: skip
_VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "wbr", "col", "area", "base"})
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_HIDDEN = re.compile(r"display\s*:\s*none", re.IGNORECASE)

# Containers whose start means "the earlier mail begins here", to the end of the document.
_BOUNDARY_IDS = re.compile(
    r"^(?:x_)?(?:divRplyFwdMsg|appendonsend|OLK_SRC_BODY_SECTION|mail-editor-reference-message-container"
    r"|stopSpelling|reply-intro|ms-outlook-mobile-reference-message|zwchr|mailReplyMessage)$",
    re.IGNORECASE,
)
_BOUNDARY_CLASSES = frozenset(
    {
        "outlookmessageheader", "ms-outlook-mobile-reference-message", "x_outlookmessageheader",
        "zmail_extra", "protonmail_quote", "yahoo_quoted", "aolreplyheader",
        "mail-editor-reference-message-container", "x_mail-editor-reference-message-container",
    }
)  # fmt: skip
# Outlook desktop puts the earlier mail's header in a div with a thin top border.
_OUTLOOK_BORDER = re.compile(r"border-top\s*:\s*solid\s+#?[\w]+\s+[\d.]+pt", re.IGNORECASE)
# Lines inside these are quoted (one more level).
_QUOTE_CLASSES = frozenset(
    {"gmail_quote", "yahoo_quoted", "protonmail_quote", "moz-forward-container"}
)
_INTRO_CLASSES = frozenset({"gmail_attr", "moz-cite-prefix", "gmail_quote_attribution"})
_SIGNATURE_CLASSES = frozenset(
    {"gmail_signature", "moz-signature", "signature", "yahoo-signature", "x_signature"}
)
_SIGNATURE_IDS = re.compile(
    r"^(?:x_)?(?:signature|AppleMailSignature|Signature|ms-outlook-mobile-signature)$",
    re.IGNORECASE,
)


@dataclass
class _Frame:
    tag: str
    depth: int = 0  # quote levels this element adds
    mark: Mark = Mark.NONE
    evidence: str = ""
    skip: bool = False
    pre: bool = False
    gmail_container: bool = False


class _Walker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[Line] = []
        self.stack: list[_Frame] = []
        self.buf: list[str] = []
        self.after_boundary = False
        self.boundary_evidence = ""
        # Sums over the stack, kept as frames come and go (a frame's depth, skip and pre
        # never change once pushed): text arrives far more often than tags.
        self._depth_sum = 0
        self._skips = 0
        self._pres = 0

    def _push(self, frame: _Frame) -> None:
        self.stack.append(frame)
        self._depth_sum += frame.depth
        self._skips += frame.skip
        self._pres += frame.pre

    def _pop_from(self, i: int) -> None:
        for f in self.stack[i:]:
            self._depth_sum -= f.depth
            self._skips -= f.skip
            self._pres -= f.pre
        del self.stack[i:]

    # -- state of the current position ------------------------------------------------------------
    def _depth(self) -> int:
        return self._depth_sum

    def _mark(self) -> tuple[Mark, str]:
        for f in reversed(self.stack):
            if f.mark is not Mark.NONE:
                return f.mark, f.evidence
        return Mark.NONE, ""

    def _evidence(self) -> str:
        for f in reversed(self.stack):
            if f.evidence:
                return f.evidence
        return ""

    def _skipping(self) -> bool:
        return self._skips > 0

    def _in_pre(self) -> bool:
        return self._pres > 0

    # -- output -------------------------------------------------------------------------------------------
    def flush(self, force_blank: bool = False) -> None:
        text = "".join(self.buf)
        self.buf.clear()
        if not self._in_pre():
            text = _SPACES.sub(" ", text)
        parts = text.split("\n") if self._in_pre() else [text]
        depth = self._depth()
        mark, evidence = self._mark()
        evidence = evidence or self._evidence()
        for part in parts:
            stripped = clean(part)
            if not stripped and not force_blank:
                continue
            line_mark = mark
            if self.after_boundary and mark is Mark.NONE:
                line_mark = Mark.BOUNDARY
                evidence = self.boundary_evidence
            self.lines.append(Line(part.strip(), stripped, depth, line_mark, evidence))

    def _blank(self) -> None:
        if self.lines and not self.lines[-1].blank:
            self.lines.append(Line("", "", self._depth(), Mark.NONE, ""))

    # -- parser callbacks ---------------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "br":
            self.flush(force_blank=True)
            return
        if tag in _VOID and tag != "hr":
            return
        if tag in _BLOCK:
            self.flush()
            if tag in ("p", "blockquote", "table"):
                self._blank()
        frame = _Frame(tag)
        classes = {c.lower() for c in a.get("class", "").split()}
        ident = a.get("id", "")
        style = a.get("style", "")
        if tag in _SKIP or _HIDDEN.search(style):
            frame.skip = True
        if tag == "pre":
            frame.pre = True
        boundary = ""
        if _BOUNDARY_IDS.match(ident):
            boundary = f"html:#{ident}"
        elif classes & _BOUNDARY_CLASSES:
            boundary = "html:." + sorted(classes & _BOUNDARY_CLASSES)[0]
        elif tag == "div" and _OUTLOOK_BORDER.search(style) and "padding" in style.lower():
            boundary = "html:outlook-border-top"
        elif tag == "hr" and ident.lower() == "stopspelling":
            boundary = "html:#stopSpelling"
        if boundary and not self.after_boundary and not self._depth():
            self.after_boundary = True
            self.boundary_evidence = boundary
        if tag == "blockquote":
            frame.depth = 1
            frame.evidence = "html:blockquote" + (
                "[type=cite]" if a.get("type", "").lower() == "cite" else ""
            )
        elif classes & _INTRO_CLASSES:
            frame.mark, frame.evidence = Mark.INTRO, "html:." + sorted(classes & _INTRO_CLASSES)[0]
        elif "gmail_quote" in classes and tag != "blockquote":
            # Gmail puts the attribution and the blockquote in this div; an inline answer typed
            # between two quoted parts lands in it too, outside any blockquote. So the div itself
            # quotes nothing: text before its first blockquote is the attribution.
            frame.gmail_container = True
            frame.mark, frame.evidence = Mark.INTRO, "html:.gmail_quote"
        elif classes & _QUOTE_CLASSES:
            frame.depth = 1
            frame.evidence = "html:." + sorted(classes & _QUOTE_CLASSES)[0]
        if classes & _SIGNATURE_CLASSES or _SIGNATURE_IDS.match(ident):
            frame.mark, frame.evidence = Mark.SIGNATURE, "html:signature"
        if tag == "hr":
            self.flush()
            return
        if tag == "blockquote":
            for f in self.stack:
                if f.gmail_container:
                    f.mark = Mark.NONE  # past the attribution
        self._push(frame)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID and self.stack and self.stack[-1].tag == tag:
            self._pop_from(len(self.stack) - 1)

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        # Close up to the matching open element; stray end tags are ignored.
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i].tag == tag:
                if tag in _BLOCK or self.stack[i].depth or self.stack[i].mark is not Mark.NONE:
                    self.flush()
                self._pop_from(i)
                if tag in ("p", "blockquote", "table"):
                    self._blank()
                return

    def handle_data(self, data: str) -> None:
        if not self._skipping():
            self.buf.append(data)


def html_lines(html: str) -> list[Line]:
    walker = _Walker()
    walker.feed(html)
    walker.close()
    walker.flush()
    return walker.lines


def html_to_plain(html: str) -> str:
    """The visible text of `html`, nothing removed (for callers that need a neutral rendering)."""
    out: list[str] = []
    for line in html_lines(html):
        if line.blank and (not out or not out[-1]):
            continue
        out.append(line.text)
    return "\n".join(out).strip()
