"""Imports every module that declares tables, so `Base.metadata` is complete.

Alembic's env and the schema test import this; each feature adds its models module here.
"""

from mailticket.api import models as api_models  # noqa: F401
from mailticket.backends import models as backend_models  # noqa: F401
from mailticket.conversation import models as conversation_models  # noqa: F401
from mailticket.customers import models as customer_models  # noqa: F401
from mailticket.live import models as live_models  # noqa: F401
from mailticket.sla import models as sla_models  # noqa: F401
from mailticket.store import (
    models,  # noqa: F401
    outbox_models,  # noqa: F401
    senderauth_models,  # noqa: F401
)
from mailticket.store.db import Base

metadata = Base.metadata
