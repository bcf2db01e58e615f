"""The reply and forward prefixes mail clients put in front of a subject, per language.

One list for both directions: threading reads a bare ticket number right after them
(`threading.subject`), and our outgoing mail drops them before putting its one ticket tag in
front (`outbound.compose`). Outlook and Exchange translate the prefix into the user's
language ("AW:", "SV:", "Antw:", "回复:", "答复:"); most other clients write "Re:"/"Fwd:".
"""

from __future__ import annotations

import re

# Reply, then forward, per language. Two-letter words only where a client writes them; no
# single letters (Italian Outlook's "R:"/"I:" would eat real subjects such as "R: …").
_WORDS = [
    "re", "fw", "fwd",  # en, and most clients anywhere
    "aw", "wg", "antwort",  # de
    "sv", "vb", "vs", "vl",  # sv, da/no, fi
    "antw", "doorst",  # nl
    "ref", "réf", "tr",  # fr
    "rif", "res", "rv", "enc",  # it, pt, es
    "odp", "pd",  # pl
    "ynt", "ilt", "İlt",  # tr
    "vá", "továbbítás",  # hu
    "πρθ", "απ", "σχετ",  # el
    "ответ", "отв", "пересл",  # ru
    "回复", "答复", "转发", "回覆", "答覆", "轉寄", "轉發",  # zh
    "返信", "転送",  # ja
    "회신", "답장", "전달",  # ko
]  # fmt: skip

# One prefix with what may follow the word: a count ("Re[2]:", "Re(3):"), a space before the
# colon (French "RE :"), an ASCII or a full-width colon.
REPLY_PREFIX = (
    r"(?:" + "|".join(re.escape(w) for w in sorted(set(_WORDS), key=len, reverse=True)) + r")"
    r"\s*(?:\[\d+\]|\(\d+\))?\s*[:：]"
)
