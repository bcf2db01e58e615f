"""Tickets: creating, linking and merging them, their numbers, and the quarantine for mail
that could not be processed."""
