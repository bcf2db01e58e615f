"""Conversations: what a customer's reply says once the quoted history is taken off.

    from mailticket.conversation import split_reply
    parts = split_reply(text_part, html_part)   # either may be None
    parts.new_text      # the comment's body: only what the customer wrote now
    parts.quoted_text   # the earlier mail they quoted: shown folded ("show quoted text")
    parts.signature     # their signature, kept apart
    parts.method        # how the quote was found ("text:intro", "html:.gmail_quote", ..., "none")

`REPLY_MARKER` / `reply_marker(lang)` is the line our agent replies put above the quoted
customer message; `split_reply` treats it as a quote boundary in every language.
"""

from mailticket.conversation.markers import (
    REPLY_MARKER,
    REPLY_MARKERS,
    is_reply_marker,
    reply_marker,
)
from mailticket.conversation.quotes import ReplyParts, split_reply

__all__ = [
    "REPLY_MARKER",
    "REPLY_MARKERS",
    "ReplyParts",
    "is_reply_marker",
    "reply_marker",
    "split_reply",
]
