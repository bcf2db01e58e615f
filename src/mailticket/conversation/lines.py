"""A message body as lines that know how deeply they are quoted.

Both the text part and the HTML part are reduced to this one shape, so one algorithm
(`quotes.py`) decides what is new and what is quoted, whatever the client sent.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import NamedTuple


class Mark(Enum):
    """What the HTML structure (not the words) says about a line."""

    NONE = "none"
    # First line after a client's own reply boundary (Outlook's divRplyFwdMsg, border-top
    # header, Hotmail's stopSpelling...): everything from here on is the earlier mail.
    BOUNDARY = "boundary"
    # Attribution above a quote inside a quote container (Gmail's gmail_attr,
    # Thunderbird's moz-cite-prefix).
    INTRO = "intro"
    # Inside a client's signature container (gmail_signature, moz-signature, #Signature).
    SIGNATURE = "signature"


# A named tuple, not a frozen dataclass: a message is tens to thousands of lines, and a frozen
# dataclass's __init__ (one object.__setattr__ per field) cost more than splitting them.
class Line(NamedTuple):
    raw: str  # as the customer's client wrote it (text part) or rendered (HTML part)
    text: str  # without the quote prefix, stripped
    depth: int  # quote level: "> > x" is 2, a line inside two <blockquote>s is 2
    mark: Mark = Mark.NONE
    evidence: str = ""  # which HTML construct set the depth or mark, for ReplyParts.method

    @property
    def blank(self) -> bool:
        return not self.text


_QUOTE_PREFIX = re.compile(r"^((?:[ \t]{0,3}>)+)[ \t]?")
_INVISIBLE = str.maketrans(
    {"\u00a0": " ", "\u200b": None, "\ufeff": None, "\u202f": " ", "\u3000": " "}
)


def clean(s: str) -> str:
    # Every character _INVISIBLE maps is outside ASCII: most lines need no translate.
    return s.strip() if s.isascii() else s.translate(_INVISIBLE).strip()


def text_lines(text: str) -> list[Line]:
    out: list[Line] = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        m = _QUOTE_PREFIX.match(raw)
        if m:
            out.append(Line(raw, clean(raw[m.end() :]), m.group(1).count(">")))
        else:
            out.append(Line(raw, clean(raw), 0))
    return out
