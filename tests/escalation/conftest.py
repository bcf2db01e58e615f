from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.smtp_sink import SmtpSink


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server on 127.0.0.1 recording what it accepts."""
    with SmtpSink() as sink:
        yield sink
