"""The per-workspace change counter cached progress reads are checked against.

Every ORM write to a table a progress read depends on bumps the workspace's row of
`progress_version` in the same transaction, just before it commits: a process that sees
version N knows its representation built at N is current, whichever process wrote. The
bump is one upsert per transaction and workspace, taken at commit time so that the row is
locked only while the transaction commits.

Core statements that bypass the ORM (sync leases) do not bump; none of them writes what a
progress read shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as OrmSession

from service.progress.models import ProgressVersion

#: Tables whose rows carry their workspace and feed progress reads.
WITH_WORKSPACE = {
    "team",
    "period",
    "objective",
    "key_result",
    "key_result_value",
    "initiative",
    "mapping",
    "connector",
}
#: Link tables, and the (table, column) their workspace is read from.
LINKS = {
    "initiative_key_result": ("key_result", "key_result_id"),
    "mapping_source": ("mapping", "mapping_id"),
}
_TOUCHED = "progress_touched_workspaces"
_GONE = "progress_deleted_workspaces"
_TABLE = ProgressVersion.__table__  # type: ignore[attr-defined]

#: Per engine, what to call after a commit that bumped workspaces (this process's caches
#: learn of their own writes at once; other processes' at their next version check).
_listeners: WeakKeyDictionary[Engine, list[Callable[[set[int]], None]]] = WeakKeyDictionary()


def on_commit(engine: Engine, listener: Callable[[set[int]], None]) -> None:
    """Call `listener(workspace_ids)` after each commit on `engine` that bumped them."""
    _listeners.setdefault(engine, []).append(listener)


def read_versions(conn: Connection | OrmSession, workspace_ids: Iterable[int]) -> dict[int, int]:
    """The current version of each workspace (0 for one that never changed)."""
    ids = list(workspace_ids)
    rows = conn.execute(
        select(_TABLE.c.workspace_id, _TABLE.c.version).where(_TABLE.c.workspace_id.in_(ids))
    ).all()
    found = {int(w): int(v) for w, v in rows}
    return {w: found.get(w, 0) for w in ids}


def _workspaces_of(session: OrmSession, objects: Iterable[Any]) -> tuple[set[int], set[int]]:
    touched: set[int] = set()
    gone: set[int] = set()
    via: dict[str, set[int]] = {}
    for obj in objects:
        table = getattr(obj, "__tablename__", "")
        if table == "workspace":
            if obj.id is not None:
                touched.add(obj.id)
                if obj in session.deleted:
                    gone.add(obj.id)
        elif table in WITH_WORKSPACE:
            if obj.workspace_id is not None:
                touched.add(obj.workspace_id)
        elif table in LINKS:
            parent, column = LINKS[table]
            via.setdefault(parent, set()).add(getattr(obj, column))
    metadata = _TABLE.metadata
    for parent, ids in via.items():
        parents = metadata.tables[parent]
        touched.update(
            session.connection()
            .execute(select(parents.c.workspace_id).where(parents.c.id.in_(ids)))
            .scalars()
        )
    return touched, gone


@event.listens_for(OrmSession, "after_flush")
def _note(session: OrmSession, _context: Any) -> None:
    # after_flush: ids are assigned, and new/dirty/deleted still list what was written.
    changed = [*session.new, *(o for o in session.dirty if session.is_modified(o))]
    changed += session.deleted
    if not changed:
        return
    touched, gone = _workspaces_of(session, changed)
    session.info.setdefault(_TOUCHED, set()).update(touched)
    session.info.setdefault(_GONE, set()).update(gone)


def _upsert(conn: Connection, workspace_ids: list[int]) -> None:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(_TABLE).values([{"workspace_id": w, "version": 1} for w in workspace_ids])
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[_TABLE.c.workspace_id], set_={"version": _TABLE.c.version + 1}
        )
    )


@event.listens_for(OrmSession, "before_commit")
def _bump(session: OrmSession) -> None:
    # before_commit runs before the commit's own flush: flush first to see every write.
    if session.new or session.dirty or session.deleted:
        session.flush()
    gone = session.info.get(_GONE, set())
    touched = session.info.get(_TOUCHED, set()) - gone
    if touched:
        # Sorted: two transactions touching the same workspaces lock them in one order.
        _upsert(session.connection(), sorted(touched))
    # Deleted workspaces have no counter left, but this process's caches must drop them.
    session.info["progress_committing"] = touched | gone


@event.listens_for(OrmSession, "after_commit")
def _tell(session: OrmSession) -> None:
    touched: set[int] = session.info.pop("progress_committing", set())
    session.info.pop(_TOUCHED, None)
    session.info.pop(_GONE, None)
    if not touched:
        return
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    for listener in _listeners.get(engine, []):
        listener(touched)


@event.listens_for(OrmSession, "after_rollback")
def _forget(session: OrmSession) -> None:
    for key in (_TOUCHED, _GONE, "progress_committing"):
        session.info.pop(key, None)
