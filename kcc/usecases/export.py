"""Export to the registers: the exporter's transactions around its jobs, and the operator's view of them.

Jobs are written by the decisions themselves (store.export.enqueue). The exporter claims the due jobs of a few
klantcontacten in a short transaction (a lease), brings each klantcontact into Open Klant with no transaction
open (kcc.usecases.export_sync), and records the outcome under its lease: `done`; `retry` with backoff when the
register could not be reached or answered 5xx (the lookups make a retry safe even if the request had arrived);
`failed` on a 4xx, with the register's own explanation, until an operator fixes the cause and retries.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from kcc.errors import Refused
from kcc.registers.documenten import DocumentenClient
from kcc.registers.klantinteracties import KlantinteractiesClient, RegisterRefused, RegisterUnreachable
from kcc.usecases.export_bodies import ExportRefused
from kcc.usecases.export_sync import REPAIR, DocumentSettings, DossierSync, JobClaim, LeaseLost, NotReady
from kcc.usecases.paging import Page
from store.export import UNFINISHED, ExportedRecord, ExportJob, enqueue
from store.klantinteracties import Klantcontact
from store.states import ExportStatus
from store.types import utcnow
from store.uow import UnitOfWork

log = logging.getLogger(__name__)

DUE = (ExportStatus.PENDING, ExportStatus.RETRY)
FIRST_RETRY_SECONDS = 10.0
NOT_READY_SECONDS = 5.0


class ExportError(Refused):
    """An operator's request on the export jobs cannot be carried out; nothing was changed."""


@dataclass(frozen=True, slots=True)
class ExportSettings:
    referentienummer_prefix: str = "KM"
    lease_seconds: float = 300.0
    batch_size: int = 20
    retry_max_seconds: float = 3600.0
    concurrency: int = 4
    """Klantcontacten exported at the same time (each its own connections to the registers)."""
    documents: DocumentSettings | None = None
    """None: the documents stay local (no [documenten] url), and so do the bijlagen that would name them."""


@dataclass
class ExportSummary:
    """What one round did, per klantcontact: exported, to try again, failed (each with its jobs settled)."""

    done: int = 0
    retry: int = 0
    failed: int = 0
    requests: int = 0

    def add(self, other: ExportSummary) -> None:
        self.done += other.done
        self.retry += other.retry
        self.failed += other.failed
        self.requests += other.requests

    def __str__(self) -> str:
        return f"exported={self.done} retry={self.retry} failed={self.failed} changes={self.requests}"


ClientFactory = Callable[[], KlantinteractiesClient]
DocumentenFactory = Callable[[], DocumentenClient]


def backoff(attempt: int, retry_max_seconds: float) -> timedelta:
    """10 s, 20 s, 40 s … up to `retry_max_seconds`: a register that is down for hours is not hammered."""
    return timedelta(seconds=min(FIRST_RETRY_SECONDS * 2 ** max(attempt - 1, 0), retry_max_seconds))


class Exporter:
    """Works through the export jobs: one round (`run_once`, for cron and tests) or rounds until stopped."""

    def __init__(self, uow_factory: Callable[[], UnitOfWork], client_factory: ClientFactory,
                 settings: ExportSettings, documenten_factory: DocumentenFactory | None = None) -> None:
        self._uow = uow_factory
        self._client_factory = client_factory
        self._documenten_factory = documenten_factory
        self._settings = settings
        self._actor_lock = threading.Lock()

    def run_once(self, *, now: datetime | None = None, stop: threading.Event | None = None) -> ExportSummary:
        """Every due job, oldest klantcontact first, until none is due (or `stop`).

        Up to `concurrency` klantcontacten are exported at once, each by a worker with its own connections: a
        klantcontact's jobs are always one claim, so they stay in order; an answer whose customer's klantcontact
        is not in the register yet waits for it (NotReady) and is tried again shortly after.
        """
        total = ExportSummary()
        now = now or utcnow()  # one moment for the round: a job it sends to retry is not due again in it
        expire_leases(self._uow(), now=now)
        workers = max(1, self._settings.concurrency)
        with contextlib.ExitStack() as stack:
            connections: queue.SimpleQueue[tuple[KlantinteractiesClient, DocumentenClient | None]] = (
                queue.SimpleQueue())
            for _ in range(workers):
                documenten = self._documenten_factory() if self._documenten_factory is not None else None
                connections.put((stack.enter_context(self._client_factory()),
                                 stack.enter_context(documenten) if documenten is not None else None))

            def export_one(claimed: JobClaim, last_try: bool) -> ExportSummary | None:
                client, documenten = connections.get()
                try:
                    return self._export(client, documenten, claimed, now, last_try=last_try)
                finally:
                    connections.put((client, documenten))

            pool = stack.enter_context(ThreadPoolExecutor(workers, thread_name_prefix="kcc-export"))
            while stop is None or not stop.is_set():
                claims = claim(self._uow(), now=now, lease_seconds=self._settings.lease_seconds,
                               limit=self._settings.batch_size)
                if not claims:
                    break
                # An answer exported beside the customer's klantcontact it refers to may find that one not there
                # yet: it is tried again, still under its lease, once the rest of the batch is in.
                waiting = []
                for claimed, summary in zip(claims, pool.map(export_one, claims, [False] * len(claims)),
                                            strict=True):
                    if summary is None:
                        waiting.append(claimed)
                    else:
                        total.add(summary)
                for summary in pool.map(export_one, waiting, [True] * len(waiting)):
                    assert summary is not None
                    total.add(summary)
        return total

    def verify(self, *, repair: bool = False) -> list[str]:
        """Every exported klantcontact read back from the registers and compared, field by field and link by link,
        with what kcc-mail holds; one line per difference. Nothing is sent.

        With `repair`, each klantcontact that differs gets a job (reden `verify`) that the exporter's next round
        carries out: a record gone from the register is looked up and made again, a record changed there is sent
        whole again (kcc-mail's decision is the record). Documents changed in Open Zaak are listed, not repaired:
        their content there is locked behind Open Zaak's own versioning.
        """
        with self._uow() as uow:
            exported = list(uow.session.scalars(
                select(ExportJob.klantcontact_id).where(ExportJob.status == ExportStatus.DONE)
                .group_by(ExportJob.klantcontact_id).order_by(ExportJob.klantcontact_id)))
        found: list[str] = []
        documenten = self._documenten_factory() if self._documenten_factory is not None else None
        with self._client_factory() as client, documenten or contextlib.nullcontext():
            for klantcontact_id in exported:
                sync = DossierSync(self._uow, client, JobClaim(klantcontact_id, (), "", 0),
                                   prefix=self._settings.referentienummer_prefix,
                                   lease_seconds=self._settings.lease_seconds, documenten=documenten,
                                   documents=self._settings.documents, verify=True)
                try:
                    sync.run()
                except LookupError:  # purged meanwhile: nothing left here to compare
                    continue
                except (RegisterUnreachable, ExportRefused) as exc:
                    found.append(f"klantcontact {klantcontact_id}: cannot be compared: {exc}")
                    continue
                found += [f"klantcontact {klantcontact_id}: {line}" for line in sync.differences]
                if repair and (sync.gone or sync.changed):
                    schedule_repair(self._uow(), klantcontact_id, gone=sync.gone, changed=sync.changed)
        return found

    def run_forever(self, stop: threading.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                summary = self.run_once(stop=stop)
                if summary.done or summary.retry or summary.failed:
                    log.info("export round: %s", summary)
            except Exception as exc:  # the database may be away for a moment; the next round tries again
                log.error("an export round failed (%s: %s); trying again in %g s", type(exc).__name__, exc, interval)
            stop.wait(interval)

    def _export(self, client: KlantinteractiesClient, documenten: DocumentenClient | None, claimed: JobClaim,
                now: datetime, *, last_try: bool = True) -> ExportSummary | None:
        """One klantcontact's claimed jobs sent and settled; None (nothing settled, the lease still held) when it
        refers to a klantcontact not in the register yet and this is not its `last_try` in the round."""
        sync = DossierSync(self._uow, client, claimed, prefix=self._settings.referentienummer_prefix,
                           lease_seconds=self._settings.lease_seconds, documenten=documenten,
                           documents=self._settings.documents, actor_lock=self._actor_lock)
        summary = ExportSummary()
        try:
            summary.requests = sync.run()
        except LeaseLost as exc:
            log.warning("klantcontact %s: %s; left to it", claimed.klantcontact_id, exc)
            return summary
        except NotReady as exc:
            if not last_try:
                return None
            return self._settle_retry(claimed, now, exc, timedelta(seconds=NOT_READY_SECONDS))
        except RegisterUnreachable as exc:
            return self._settle_retry(claimed, now, exc, backoff(claimed.attempt, self._settings.retry_max_seconds))
        except (RegisterRefused, ExportRefused, LookupError) as exc:
            if finish(self._uow(), claimed, ExportStatus.FAILED, f"{exc}. {operator_advice()}"):
                log.error("klantcontact %s not exported: %s", claimed.klantcontact_id, exc)
                summary.failed = 1
            return summary
        if finish(self._uow(), claimed, ExportStatus.DONE, ""):
            summary.done = 1
        return summary

    def _settle_retry(self, claimed: JobClaim, now: datetime, exc: Exception, delay: timedelta) -> ExportSummary:
        """The jobs wait: shortly for a klantcontact not in the register yet, with backoff for a register away."""
        summary = ExportSummary()
        if finish(self._uow(), claimed, ExportStatus.RETRY, str(exc), next_attempt=max(now, utcnow()) + delay):
            log.warning("klantcontact %s not exported yet (attempt %s): %s; next try in %g s",
                        claimed.klantcontact_id, claimed.attempt, exc, delay.total_seconds())
            summary.retry = 1
        return summary


def operator_advice() -> str:
    return "Fix the cause (configuration or data), then run `kcc-mail export retry`"


# --- the exporter's transactions -----------------------------------------------------------------------------


def claim(uow: UnitOfWork, *, now: datetime, lease_seconds: float, limit: int) -> list[JobClaim]:
    """The due jobs of up to `limit` klantcontacten, oldest job first; one lease per klantcontact.

    A klantcontact another exporter holds (a job `sending` under a live lease) is skipped, so its jobs are never
    worked on twice at once; FOR UPDATE SKIP LOCKED keeps two exporters from claiming the same rows on PostgreSQL.
    """
    lease_until = now + timedelta(seconds=lease_seconds)
    with uow:
        session = uow.session
        busy = select(ExportJob.klantcontact_id).where(ExportJob.status == ExportStatus.SENDING)
        due = session.execute(
            select(ExportJob.id, ExportJob.klantcontact_id, ExportJob.attempts)
            .where(ExportJob.status.in_(DUE), ExportJob.next_attempt_at <= now,
                   ExportJob.klantcontact_id.not_in(busy))
            .order_by(ExportJob.id).limit(limit * 10).with_for_update(skip_locked=True)
        ).all()
        grouped: dict[int, list[tuple[int, int]]] = {}
        for job_id, klantcontact_id, attempts in due:
            if klantcontact_id in grouped or len(grouped) < limit:
                grouped.setdefault(klantcontact_id, []).append((job_id, attempts))
        claims = []
        for klantcontact_id, jobs in grouped.items():
            token = uuid.uuid4().hex
            attempt = max(attempts for _, attempts in jobs) + 1
            ids = tuple(job_id for job_id, _ in jobs)
            session.execute(
                update(ExportJob).where(ExportJob.id.in_(ids))
                .values(status=ExportStatus.SENDING, lease_token=token, lease_until=lease_until, attempts=attempt)
                .execution_options(synchronize_session=False)
            )
            claims.append(JobClaim(klantcontact_id, ids, token, attempt))
        uow.commit()
    return claims


def finish(uow: UnitOfWork, claimed: JobClaim, status: ExportStatus, error: str, *,
           next_attempt: datetime | None = None) -> bool:
    """Record the outcome if the lease is still ours; False when another exporter took the jobs over.

    `done` also settles this klantcontact's older jobs that had failed or wait for a retry: the register now has
    the klantcontact as it is, which includes what those jobs were for.
    """
    now = utcnow()
    with uow:
        session = uow.session
        values: dict[str, Any] = {"status": status, "lease_token": "", "lease_until": None,
                                  "last_error": error[:4000]}
        if status == ExportStatus.DONE:
            values["finished_at"] = now
        if next_attempt is not None:
            values["next_attempt_at"] = next_attempt
        changed = session.execute(
            update(ExportJob).where(ExportJob.id.in_(claimed.job_ids), ExportJob.lease_token == claimed.lease_token,
                                    ExportJob.status == ExportStatus.SENDING)
            .values(**values).execution_options(synchronize_session=False)
        )
        if int(getattr(changed, "rowcount", 0)) != len(claimed.job_ids):
            uow.rollback()
            log.warning("klantcontact %s: the export jobs were taken over before their outcome (%s) was recorded",
                        claimed.klantcontact_id, status)
            return False
        if status == ExportStatus.DONE:
            session.execute(
                update(ExportJob).where(ExportJob.klantcontact_id == claimed.klantcontact_id,
                                        ExportJob.id < max(claimed.job_ids),
                                        ExportJob.status.in_((ExportStatus.FAILED, ExportStatus.RETRY)))
                .values(status=ExportStatus.DONE, finished_at=now, last_error="")
                .execution_options(synchronize_session=False)
            )
        uow.commit()
    return True


def expire_leases(uow: UnitOfWork, *, now: datetime) -> int:
    """Jobs whose exporter died mid-export go back to `retry`: the lookups before every create make that safe."""
    with uow:
        result = uow.session.execute(
            update(ExportJob).where(ExportJob.status == ExportStatus.SENDING, ExportJob.lease_until < now)
            .values(status=ExportStatus.RETRY, lease_token="", lease_until=None, next_attempt_at=now,
                    last_error="the exporter stopped before it recorded the outcome; resumed by looking up first")
            .execution_options(synchronize_session=False)
        )
        uow.commit()
    return int(getattr(result, "rowcount", 0))


# --- the operator's side -------------------------------------------------------------------------------------


def backfill(uow: UnitOfWork) -> int:
    """A job for every klantcontact that never had one (registered before export jobs existed); returns how many.

    Oldest first, so a reply's klantcontact comes after the customer's it is about.
    """
    with uow:
        session = uow.session
        missing = list(session.scalars(
            select(Klantcontact.id).where(~select(ExportJob.id).where(ExportJob.klantcontact_id == Klantcontact.id)
                                          .exists()).order_by(Klantcontact.id)))
        for start in range(0, len(missing), 500):
            enqueue(session, missing[start:start + 500], "backfill")
        uow.commit()
    return len(missing)


def schedule_repair(uow: UnitOfWork, klantcontact_id: int, *, gone: list[uuid.UUID], changed: list[uuid.UUID]
                    ) -> None:
    """Forget where the gone records were and what was sent of the changed ones, and queue the klantcontact."""
    with uow:
        session = uow.session
        if gone:
            session.execute(delete(ExportedRecord).where(ExportedRecord.local_uuid.in_(gone)))
        if changed:
            session.execute(update(ExportedRecord).where(ExportedRecord.local_uuid.in_(changed),
                                                         ExportedRecord.soort != "informatieobject")
                            .values(body_sha256=REPAIR).execution_options(synchronize_session=False))
        enqueue(session, klantcontact_id, "verify")
        uow.commit()


def retry_failed(uow: UnitOfWork, *, now: datetime | None = None, klantcontact_id: int | None = None) -> int:
    """Failed jobs (all, or one klantcontact's) due again at once, after the cause was fixed; returns how many."""
    conditions = [ExportJob.status == ExportStatus.FAILED]
    if klantcontact_id is not None:
        conditions.append(ExportJob.klantcontact_id == klantcontact_id)
    with uow:
        result = uow.session.execute(
            update(ExportJob).where(*conditions)
            .values(status=ExportStatus.RETRY, next_attempt_at=now or utcnow())
            .execution_options(synchronize_session=False)
        )
        uow.commit()
    return int(getattr(result, "rowcount", 0))


def counts(session: Session) -> dict[str, int]:
    """Jobs per status, every status present (zero when none)."""
    found = dict.fromkeys((s.value for s in ExportStatus), 0)
    for status, count in session.execute(select(ExportJob.status, func.count()).group_by(ExportJob.status)):
        found[status] = count
    return found


def export_status(uow: UnitOfWork) -> dict[str, Any]:
    """The backlog for `kcc-mail export status` and `kcc-mail status`: counts and the oldest unfinished job."""
    with uow:
        session = uow.session
        oldest = session.scalar(select(func.min(ExportJob.created_at)).where(ExportJob.status.in_(UNFINISHED)))
        return {"jobs": counts(session), "oldestUnfinishedAt": oldest.isoformat() if oldest else None}


def list_jobs(uow: UnitOfWork, *, status: str | None = None, limit: int | None = 500, offset: int = 0
              ) -> Page[dict[str, Any]]:
    if status is not None and status not in tuple(ExportStatus):
        raise ExportError(f"unknown export status {status!r}; choose one of {', '.join(ExportStatus)}")
    conditions = [ExportJob.status == status] if status is not None else []
    with uow:
        session = uow.session
        total = session.scalar(select(func.count()).select_from(ExportJob).where(*conditions)) or 0
        rows = session.execute(
            select(ExportJob, Klantcontact.referentienummer)
            .join(Klantcontact, Klantcontact.id == ExportJob.klantcontact_id)
            .where(*conditions).order_by(ExportJob.id).offset(offset).limit(limit)
        ).all()
        return Page(({
            "id": job.id, "klantcontactId": job.klantcontact_id, "referentienummer": number, "reden": job.reden,
            "status": job.status, "attempts": job.attempts, "createdAt": job.created_at.isoformat(),
            "nextAttemptAt": job.next_attempt_at.isoformat(),
            "finishedAt": job.finished_at.isoformat() if job.finished_at else None, "lastError": job.last_error,
        } for job, number in rows), total=total, offset=offset, limit=limit)
