"""The faults every fake vendor can reproduce, named the same way for all of them.

    fake.fail_next(Fault.LOST_ANSWER, method="POST", path=r"/api/v2/tickets\\.json")
    fake.fail_next(Fault.RATE_LIMITED, retry_after=30)
    fake.fail_next(Fault.SERVER_ERROR)            # iTop: its text/html error page
    fake.fail_next(Fault.WRONG_PASSWORD, times=2) # the vendor's own answer to bad credentials
    fake.fail_next(Fault.DELETED, ticket="42")    # gone now: reads answer as the vendor does

`method` and `path` (a regular expression matched against the whole path) narrow which
request meets the fault, and `where` (a test of the whole request) where the path does not
tell (iTop: every operation goes to rest.php, `itop.operation("core/create")`); `times` how
many requests meet it. A lost answer is applied by the vendor and then the connection closes
before any answer: the client cannot tell whether it happened.

The same queue takes a ready-made answer for a one-off that is no fault kind (a vendor's
"not found" from a write on a ticket that still exists): `fail_next(Resp(...))` on the
threaded fakes, `fail_next(JSONResponse(...))` on the Starlette ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from tests.backends.fakes.contract import Exchange


class Fault(StrEnum):
    LOST_ANSWER = "lost_answer"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    WRONG_PASSWORD = "wrong_password"
    DELETED = "deleted"


T = TypeVar("T")


@dataclass
class Pending(Generic[T]):
    """One scheduled fault; `answer` is the fault kind or a ready-made vendor answer."""

    method: str | None
    path: str | None
    answer: T
    times: int = 1
    retry_after: int = 7
    prefix: bool = False  # the older `path_prefix` matching of the Starlette fakes
    where: Callable[[Exchange], bool] | None = None

    def matches(self, ex: Exchange) -> bool:
        if self.method is not None and self.method != ex.method:
            return False
        if self.where is not None and not self.where(ex):
            return False
        if self.path is None:
            return True
        if self.prefix:
            return ex.path.startswith(self.path)
        return bool(re.fullmatch(self.path, ex.path))


def take(queue: list[Pending[T]], ex: Exchange) -> Pending[T] | None:
    """The first scheduled fault for this request, counted down (the caller holds a lock)."""
    for pending in queue:
        if pending.matches(ex):
            pending.times -= 1
            if pending.times <= 0:
                queue.remove(pending)
            return pending
    return None
