"""Reading mail: bytes to a parsed, classified message (parsing, MIME parts, header fields,
charsets, Message-IDs, HTML to text, classification, tag and priority extraction), and the
files, folders, Maildirs and mbox files that `mailticket ingest` reads."""
