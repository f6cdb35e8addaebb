"""Every table, imported in one place so Alembic and tests see the whole schema."""

from service.auth.models import ApiToken, AuditEvent  # noqa: F401
from service.mappings.models import Mapping, MappingSource, MappingVersion  # noqa: F401
from service.okr.models import (  # noqa: F401
    Initiative,
    InitiativeKeyResult,
    KeyResult,
    KeyResultValue,
    Objective,
    Period,
    Team,
)
from service.progress import versions  # noqa: F401 - bumps progress_version on writes
from service.progress.models import ProgressVersion  # noqa: F401
from service.sync.models import (  # noqa: F401
    Connector,
    RateBudget,
    SyncedRecord,
    SyncRun,
    SyncState,
)
from service.workspaces.models import Workspace  # noqa: F401
