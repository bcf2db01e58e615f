"""Header fields of a stdlib Message read the robust way: raw values, decoded by us.

The stdlib's compat32 `get()` hands back `Header` objects for raw 8-bit values and its
address parser gives up on some real-world From lines; these helpers work from the raw
strings so the top-level message and embedded ones are read identically.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from mailparser.dates import parse_mail_date

from mailticket.reading.charsets import decode_header, unescape_surrogates
from mailticket.reading.msgids import normalize_message_id, parse_id_list
from mailticket.types import EmbeddedMessage

_ADDRESS = re.compile(r"[^\s<>@,;:\"'()\[\]]+@[^\s<>@,;:\"'()\[\]]+")
_FOLD = re.compile(r"\r?\n[ \t]*")
# The shapes nearly every address header has, read without the stdlib's address parser
# (a third of parsing time): "a@b", "Name <a@b>", "Two Words <a@b>", "\"Any, text\" <a@b>".
# Anything else (comments, groups, lists, escapes, odd spacing) goes to getaddresses.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR_SPEC = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_SIMPLE = re.compile(
    rf'\s*(?:(?P<bare>{_ADDR_SPEC})'
    rf'|(?:(?P<words>[\w=?+/-]+(?: [\w=?+/-]+)*)|"(?P<quoted>[^"\\]*)") ?<(?P<addr>{_ADDR_SPEC})>)\s*'
)

# A display name holding an "@" without quotes ("jo@x.example <jo@y.example>", as Exchange
# and some web mailers write it when the name is an address). RFC 5322 has no such phrase,
# so getaddresses takes the name for a mailbox of its own, listed first: the requester, the
# auto-reply's recipient, became the name. Every mail client reads the angle-addr as the
# mailbox and the rest as its name; so do we, for one element of a list at a time.
_AT_IN_NAME = re.compile(rf"\s*(?P<name>[^<>\"(),;:]*@[^<>\"(),;:]*?)\s*<(?P<addr>{_ADDR_SPEC})>\s*")

HeaderIndex = dict[str, list[str]]


def header_index(msg: Message) -> HeaderIndex:
    """Lower-cased name → raw values in order (surrogate-escaped where 8-bit)."""
    index: HeaderIndex = {}
    for name, value in msg.raw_items():
        index.setdefault(name.strip().lower(), []).append(str(value))
    return index


def decoded_headers(index: HeaderIndex, hint: str | None) -> dict[str, list[str]]:
    return {name: [decode_header(v, hint) for v in values] for name, values in index.items()}


def first_message_id(values: list[str] | None) -> str | None:
    """The first valid id among repeated Message-ID headers."""
    for value in values or ():
        ident = normalize_message_id(unescape_surrogates(value))
        if ident is not None:
            return ident
    return None


def id_list(values: list[str] | None, *, bare: bool = False) -> list[str]:
    """Ids of repeated In-Reply-To (bare=False) or References (bare=True) fields: see
    reading.msgids for which values count as ids and why a bare one needs `bare`."""
    out: list[str] = []
    for value in values or ():
        for ident in parse_id_list(unescape_surrogates(value), bare=bare):
            if ident not in out:
                out.append(ident)
    return out


def addresses(values: list[str] | None, hint: str | None) -> list[tuple[str, str]]:
    """(decoded display name, lower-cased bare address) for every address in the values."""
    out: list[tuple[str, str]] = []
    for value in values or ():
        text = _FOLD.sub(" ", unescape_surrogates(value, hint))
        simple = _SIMPLE.fullmatch(text)
        if simple is not None:
            name = simple["words"] or simple["quoted"] or ""
            addr = simple["bare"] or simple["addr"]
            out.append((decode_header(name, hint).strip("\"' "), addr.lower()))
            continue
        # Without quotes or comments a comma only separates elements, so each is read alone.
        if '"' not in text and "(" not in text and _AT_IN_NAME.search(text):
            for element in text.split(","):
                named = _AT_IN_NAME.fullmatch(element)
                if named is not None:
                    name = decode_header(named["name"], hint).strip("' ")
                    out.append((name, named["addr"].lower()))
                elif element.strip():
                    out.extend(_parsed_addresses(element, hint))
            continue
        out.extend(_parsed_addresses(text, hint))
    return out


def _parsed_addresses(text: str, hint: str | None) -> list[tuple[str, str]]:
    """The stdlib parser's reading of one unfolded value, for the shapes _SIMPLE leaves."""
    try:
        # A lone local part ("MAILER-DAEMON") is still who sent it.
        pairs = [(n, a) for n, a in getaddresses([text]) if "@" in a or a == text.strip()]
    except RecursionError:  # deeply nested comments: the stdlib parser recurses per level
        pairs = []
    if not pairs:
        # getaddresses gives up on some broken lines; any "x@y" in them is still the sender.
        pairs = [("", a) for a in _ADDRESS.findall(text)]
    for i, (name, addr) in enumerate(pairs):
        # "Big Bug bb@bug.example" (no angle brackets) comes back as one "address" with
        # spaces, which no server delivers to: the one x@y in it is the address, the rest
        # its name.
        found = _ADDRESS.findall(addr) if any(ch.isspace() for ch in addr.strip()) else []
        if len(found) == 1:
            rest = " ".join(addr.replace(found[0], " ").split())
            pairs[i] = (name or rest, found[0])
    return [
        (decode_header(name, hint).strip("\"' "), addr.strip().strip("<>").lower())
        for name, addr in pairs
    ]


def return_path(values: list[str] | None) -> str | None:
    """ "" for the null reverse-path "<>", None when absent, else the bare address."""
    if not values:
        return None
    value = unescape_surrogates(values[0]).strip()
    found = _ADDRESS.search(value)
    return found.group(0).strip("<>").lower() if found else ""


def parse_date(values: list[str] | None) -> tuple[datetime | None, str | None]:
    """Aware UTC datetime (or None) and a defect note when the Date header is unusable."""
    if not values:
        return None, None
    raw = values[0]
    # The stdlib first: it is twice as fast, and wherever it finds a zone, mail-parser (the
    # fallback for odd formats) reads the same instant (checked on the whole corpus).
    try:
        quick = parsedate_to_datetime(unescape_surrogates(raw).strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        quick = None
    if quick is not None and quick.tzinfo is not None:
        try:
            return quick.astimezone(UTC), None
        except (OverflowError, ValueError):
            pass
    result = parse_mail_date(raw)
    when = result.value
    if when is None:
        try:
            when = parsedate_to_datetime(unescape_surrogates(raw).strip())
        except (TypeError, ValueError, IndexError, OverflowError):
            return None, "Date: " + ", ".join(result.reasons or ("unparseable",))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # no zone given: RFC 5322's "-0000", taken as UTC
    try:
        return when.astimezone(UTC), None
    except (OverflowError, ValueError):
        return None, "Date: out of range"


def embedded_message(index: HeaderIndex, hint: str | None) -> EmbeddedMessage:
    sender = addresses(index.get("from"), hint)
    subject = index.get("subject")
    return EmbeddedMessage(
        message_id=first_message_id(index.get("message-id")),
        in_reply_to=tuple(id_list(index.get("in-reply-to"))),
        references=tuple(id_list(index.get("references"), bare=True)),
        subject=decode_header(subject[0], hint) if subject else "",
        from_address=sender[0][1] if sender else "",
    )
