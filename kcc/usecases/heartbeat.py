"""The heartbeat the running service writes, so `kcc-mail status` can tell a dead service from an idle one."""

from __future__ import annotations

import importlib.metadata
import os
import socket
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


def process_is_gone(owner: str) -> bool:
    """True when `owner` was a process on this host that no longer exists (killed, crashed).

    Owners are named `host:pid:…` (kcc.service.process_owner). A process on another host, or one that cannot be
    checked, counts as alive: only its silence (heartbeat, lease) tells.
    """
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, but belongs to another user
        return False
    return False


def forget_dead(uow: UnitOfWork, monitoring: MonitoringConfig, *, now: datetime | None = None) -> list[str]:
    """Remove the rows of processes that died, so the service is healthy again once a live process runs.

    Called at start and on every beat. Returns their owners, for the log. A live process's row is never older
    than the threshold, so it stays; a process on this host whose pid is gone is forgotten at once.
    """
    cutoff = (now or utcnow()) - dead_after(monitoring)
    with uow:
        rows = uow.session.execute(select(ServiceHeartbeat.owner, ServiceHeartbeat.beat_at)).all()
        owners = [owner for owner, beat_at in rows if beat_at < cutoff or process_is_gone(owner)]
        if owners:
            uow.session.execute(delete(ServiceHeartbeat).where(ServiceHeartbeat.owner.in_(owners)))
            uow.commit()
    return owners


def remove_heartbeat(uow: UnitOfWork, owner: str) -> None:
    """A clean stop: no row means "not running" rather than "died"."""
    with uow:
        uow.session.execute(delete(ServiceHeartbeat).where(ServiceHeartbeat.owner == owner))
        uow.commit()
