"""Mail from ourselves: the rule that keeps our own mail from becoming a customer's word.

Mail whose From is one of our own addresses (MAIL_FROM, i.e. support@MAIL_DOMAIN by default,
and OWN_ADDRESSES, also with a `+tag`) is an agent's copy of an answer sent from a mail
client (Bcc/Cc to the support mailbox), our outgoing mail sent back in by a forwarding alias
or a misrouted MTA under a new Message-ID, or a monitoring probe. None of it is a customer
asking for something, so, like RT ("mail from itself") and osTicket (system addresses), it
never opens a ticket.

The rule sits beside the classifier and gives such mail the label `own_mail`, one of
`types.AUTOMATED_LABELS`, so it takes exactly the path auto-replies and bounces take, on
every source (LMTP, IMAP, Maildir, `ingest`, the API's test mail): it is logged (on the
ticket its headers thread to, else on no ticket), never opens a ticket (no default create,
no follow-up, and `create_ticket` refuses it), never reopens one, makes no comment, does not
count as the customer's reply for the SLA or the idle clock, adds no participants and is
never auto-answered.

It overrides every other label, spam included: the sender is a fact, the label a guess, and
a spam label would let EMAIL_UNMATCHED_ACTION=create_ticket open a ticket for it. A forged
From: support@ gains nothing by it: it can only be logged, never write a comment, change a
status or add a recipient, and `suspect` mail still never threads by subject.
"""

from __future__ import annotations

from mailticket.outbound.loop import is_own_address
from mailticket.settings import Settings
from mailticket.types import OWN_MAIL, Classification, ParsedEmail, RuleHit

RULE = "own_address"


def from_ourselves(settings: Settings, email: ParsedEmail) -> str | None:
    """Why the message is our own mail, or None when its sender is not one of ours."""
    sender = email.from_address
    if sender and is_own_address(settings, sender):
        return f"From {sender} is one of our own addresses (MAIL_FROM / OWN_ADDRESSES)"
    return None


def classify_own(
    settings: Settings, email: ParsedEmail, classification: Classification
) -> Classification:
    """`classification`, or `own_mail` (the classifier's hits kept) when we sent it."""
    reason = from_ourselves(settings, email)
    if reason is None:
        return classification
    hit = RuleHit(RULE, OWN_MAIL, 1.0, reason)
    return Classification(OWN_MAIL, 1.0, (*classification.hits, hit))
