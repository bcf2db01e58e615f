"""Structured logs for the worker: key=value text (LOG_FORMAT=text) or JSON lines (json)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Protocol chatter of the libraries would drown the worker's own lines.
    for noisy in ("aioimaplib", "apscheduler", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # mail-parser warns about every part it does not turn into text (an image, a signature,
    # a DSN's fields), several lines per ordinary damaged message: parsing raises it to ERROR
    # for that reason, and lowering it here again filled the worker's log with that noise.
    for noisy in ("mail-parser", "mailparser"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
