"""mailticket: turn a support mailbox into a ticket system."""

__version__ = "0.1.0"
