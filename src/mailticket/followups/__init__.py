"""Closed tickets: a customer's reply reopens one within the reopen window, or opens a
follow-up ticket linked to it after that (see routing.py)."""

from mailticket.followups.routing import FOLLOWUP, Routed, closed_since, route, within_window

__all__ = ["FOLLOWUP", "Routed", "closed_since", "route", "within_window"]
