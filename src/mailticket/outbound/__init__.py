"""Outgoing mail: templated auto-replies, loop protection, SMTP delivery via the outbox."""
