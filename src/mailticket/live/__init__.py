"""Live sources for `mailticket run`: IMAP mailboxes, a local Maildir, an LMTP/SMTP receiver."""
