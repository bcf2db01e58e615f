"""Readable plain text from an HTML mail body, with the stdlib parser only."""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Their content is never text a human reads.
_SKIP = frozenset({"script", "style", "head", "title", "noscript", "template", "svg", "object"})
_BLOCK = frozenset(
    {
        "p", "div", "section", "article", "header", "footer", "aside", "nav", "main",
        "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "dt", "dd", "table", "tr",
        "blockquote", "pre", "hr", "form", "fieldset", "address", "center", "body", "html",
        "figure", "figcaption", "tbody", "thead", "tfoot", "caption",
    }
)  # fmt: skip
_CELL = frozenset({"td", "th"})
_SPACES = re.compile(r"[ \t\r\n\f\v\u00a0\u200b]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.skipping = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skipping += 1
        elif tag == "br":
            self.chunks.append("\n")
        elif tag == "li":
            self.chunks.append("\n- ")
        elif tag in _CELL:
            self.chunks.append(" ")
        elif tag in _BLOCK:
            self.chunks.append("\n")
            if tag == "pre":
                self.pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.chunks.append("\n")
        elif tag in _BLOCK:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK:
            # </li> adds nothing: the next <li> or the list's end breaks the line, so list
            # items stay on consecutive lines.
            self.chunks.append("\n")
            if tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if self.pre:
            self.chunks.append(data.replace("\n", "\x00"))  # kept through whitespace folding
        else:
            self.chunks.append(_SPACES.sub(" ", data))


def html_to_text(html: str) -> str:
    """Drop script/style, turn block elements into line breaks, decode entities."""
    collector = _TextCollector()
    collector.feed(html)
    collector.close()
    joined = "".join(collector.chunks)
    lines = (line.strip() for line in joined.replace("\x00", "\n").split("\n"))
    text = "\n".join(lines)
    return _BLANK_LINES.sub("\n\n", text).strip()
