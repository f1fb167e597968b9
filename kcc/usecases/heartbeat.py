"""The heartbeat the running service writes, so `kcc-mail status` can tell a dead service from an idle one."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select

from kcc.config import MonitoringConfig
from kcc.monitoring import dead_after
from store.monitoring import ServiceHeartbeat
from store.types import utcnow
from store.uow import UnitOfWork


def kcc_version() -> str:
    """The installed version, shown per process so a half-finished upgrade is visible."""
    try:
        return importlib.metadata.version("kcc-mail")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Who this process is and what it runs, written to `service_heartbeat` every `heartbeat_interval`."""

    owner: str
    started_at: datetime
    intake: tuple[str, ...]
    relay: bool
    version: str = field(default_factory=kcc_version)


def beat(uow: UnitOfWork, heartbeat: Heartbeat, *, now: datetime | None = None) -> None:
    """Insert or renew this process's row; only this process writes it, so a read-then-write is safe."""
    with uow:
        row = uow.session.get(ServiceHeartbeat, heartbeat.owner)
        if row is None:
            row = ServiceHeartbeat(
                owner=heartbeat.owner, started_at=heartbeat.started_at, version=heartbeat.version,
                intake=list(heartbeat.intake), relay=heartbeat.relay,
            )
            uow.session.add(row)
        row.beat_at = now or utcnow()
        uow.commit()


def forget_dead(uow: UnitOfWork, monitoring: MonitoringConfig, *, now: datetime | None = None) -> list[str]:
    """At start: remove rows of processes that died earlier, so a restart after a crash is healthy again.

    Returns their owners, for the log. A live process's row is never older than the threshold, so it stays.
    """
    cutoff = (now or utcnow()) - dead_after(monitoring)
    with uow:
        owners = list(uow.session.scalars(select(ServiceHeartbeat.owner).where(ServiceHeartbeat.beat_at < cutoff)))
        if owners:
            uow.session.execute(delete(ServiceHeartbeat).where(ServiceHeartbeat.owner.in_(owners)))
            uow.commit()
    return owners


def remove_heartbeat(uow: UnitOfWork, owner: str) -> None:
    """A clean stop: no row means "not running" rather than "died"."""
    with uow:
        uow.session.execute(delete(ServiceHeartbeat).where(ServiceHeartbeat.owner == owner))
        uow.commit()
