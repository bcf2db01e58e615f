"""Which ticket does a message belong to? Header threading first, the subject last."""

from mailticket.threading.refs import record_thread_refs
from mailticket.threading.resolver import Resolution, candidates, resolve
from mailticket.threading.subject import subject_ticket_number

__all__ = ["Resolution", "candidates", "record_thread_refs", "resolve", "subject_ticket_number"]
