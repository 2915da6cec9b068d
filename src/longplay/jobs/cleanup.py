"""Retention: delete what the settings say is old enough, and leftovers nobody owns.

One run, in this order:

1. **jobs** finished (completed, failed, cancelled, expired) more than
   ``job_retention`` ago, with their outputs, the inputs uploaded with them (unless
   another job names one), their event streams, their events in their flow's stream
   and scratch space; and the **flows** left with no job, with their streams (in the
   same transaction as their last jobs, or, for a flow another transaction held then,
   or one left empty by a delete, in a sweep right after);
2. **results** of jobs finished more than ``result_retention`` ago: the outputs go,
   the job stays and says ``results_expired``;
3. **uploads** older than ``upload_retention`` that no job names;
4. **scratch** folders under ``work_dir`` of jobs that are not queued or running;
5. **stray files** in the files folder that no artifact row names (a process that
   died between moving a file in and committing its row), older than
   ``upload_retention``;
6. **kept turns** of podcasts (``<data dir>/cache/turns/``) no job has used for
   ``turn_cache_retention`` (using one touches its file), and the temporary files of
   turns whose job was killed mid-write, an hour after it;
7. **viewer tokens** past their expiry;
8. **records of removed artifacts** (:mod:`longplay.jobs.gone`, written by 1 to 3 so
   that asking for one answers ``410 Gone``) older than ``job_retention``.

Nothing of a queued or running job is touched: every delete re-checks the status in
the statement that deletes. Rows go in batches of ``cleanup_batch``, one short
transaction each, at most ``cleanup_max_per_run`` of each sort per run; files are
removed after their rows are committed. A dry run counts what a run would delete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from longplay.engines.turns import PARTIAL_SUFFIX, turn_cache
from longplay.jobs import events, gone
from longplay.jobs.service import (
    delete_empty_flows,
    doomed_with_job,
    job_naming,
    keep_for_documents,
    read_by_documents,
    remove_job_files,
)
from longplay.settings import Settings, get_settings
from longplay.store import files
from longplay.store.db import affected, session_scope
from longplay.store.library import make_searchable
from longplay.store.models import (
    FINISHED,
    Artifact,
    ArtifactRole,
    Flow,
    GoneArtifact,
    Job,
    JobStatus,
    Passage,
    ViewerToken,
    utcnow,
)
from longplay.store.queries import outputs_of

log = logging.getLogger(__name__)

FINISHED_VALUES = sorted(s.value for s in FINISHED)
ACTIVE_VALUES = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
SCRATCH_MIN_AGE = 60.0
"""Seconds a scratch folder is left alone after its last change, whatever its job says."""
PARTIAL_TURN_MAX_AGE = 3600.0
"""Seconds after which a turn's temporary file is a leftover of a killed job."""


@dataclass
class CleanupReport:
    """How many things a run deleted (or, dry, would delete)."""

    jobs: int = 0
    flows: int = 0
    """Flows left with no job (each of its stages deleted, by retention or its owner)."""
    results: int = 0
    """Jobs whose outputs expired."""
    uploads: int = 0
    scratch: int = 0
    stray_files: int = 0
    turns: int = 0
    """Kept podcast turns and their leftover temporary files."""
    files: int = 0
    """Artifact files removed with the jobs, results and uploads above."""
    viewer_tokens: int = 0
    """Viewer tokens past their expiry (they read nothing already)."""
    gone_artifacts: int = 0
    """Records of artifacts removed by retention (a request for one said why), as old
    as a finished job is kept."""
    passages_made_searchable: int = 0
    """Passages an older longplay's ``index`` job stored without their searchable text
    (a worker left running in a rolling upgrade), which search found none of: given it."""
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_cleanup(*, dry_run: bool = False, settings: Settings | None = None) -> CleanupReport:
    """Apply the retention settings once; see the module's docstring for what goes."""
    settings = settings or get_settings()
    report = CleanupReport(dry_run=dry_run)
    now = utcnow()
    kept = settings.retention
    job_cutoff = now - timedelta(seconds=kept.job_retention) if kept.job_retention > 0 else None
    if job_cutoff is not None:
        _sweep_jobs(job_cutoff, settings, report)
    _sweep_flows(job_cutoff, settings, report)
    if kept.result_retention > 0:
        _sweep_results(now - timedelta(seconds=kept.result_retention), settings, report)
    if kept.upload_retention > 0:
        _sweep_uploads(now - timedelta(seconds=kept.upload_retention), settings, report)
    _sweep_scratch(settings, report)
    if kept.upload_retention > 0:
        _sweep_stray_files(kept.upload_retention, settings, report)
    _sweep_turns(settings, report)
    _sweep_viewer_tokens(now, report)
    if job_cutoff is not None:
        _sweep_gone(job_cutoff, report)
    _make_passages_searchable(settings, report)
    log.info("cleanup%s: %s", " (dry run)" if dry_run else "", report.as_dict())
    return report


STOPPING = threading.Event()
"""Set by a process that is stopping (beat's): a run ends after the batch it is in,
rows and files together, and the next run goes on from there. A stop that waited for
a whole run kept beat's lease for as long, and one killed meanwhile left files."""


def _batches(
    settings: Settings, pick: Callable[[Session, str, int], Sequence[str]]
) -> Iterator[tuple[Session, Sequence[str]]]:
    """Keyset pages of candidate ids (``pick(session, after, limit)``, ordered by id),
    one transaction each, until a short page, ``cleanup_max_per_run`` candidates or
    :data:`STOPPING`."""
    after, seen = "", 0
    most, batch = settings.retention.cleanup_max_per_run, settings.retention.cleanup_batch
    while seen < most and not STOPPING.is_set():
        limit = min(batch, most - seen)
        with session_scope() as session:
            ids = pick(session, after, limit)
            if not ids:
                return
            yield session, ids
        seen += len(ids)
        after = ids[-1]
        if len(ids) < limit:
            return


# -- 1. old jobs ---------------------------------------------------------------------


def _sweep_jobs(cutoff: datetime, settings: Settings, report: CleanupReport) -> None:
    def pick(session: Session, after: str, limit: int) -> list[str]:
        return list(
            session.scalars(
                select(Job.id)
                .where(_finished_before(cutoff), Job.id > after)
                .order_by(Job.id)
                .limit(limit)
            )
        )

    for session, ids in _batches(settings, pick):
        if report.dry_run:
            report.jobs += len(ids)
            continue
        # Locked before the check of which jobs name them, as service.delete_job does.
        owned = list(
            session.scalars(select(Artifact).where(Artifact.job_id.in_(ids)).with_for_update())
        )
        flow_of: dict[str, str | None] = {
            job_id: flow_id
            for job_id, flow_id in session.execute(
                delete(Job)
                .where(Job.id.in_(ids), _finished_before(cutoff))
                .returning(Job.id, Job.flow_id)
                .execution_options(synchronize_session=False)
            )
        }
        deleted = set(flow_of)
        doomed = doomed_with_job(session, [a for a in owned if a.job_id in deleted])
        if doomed:
            session.execute(
                delete(Artifact)
                .where(Artifact.id.in_([a.id for a in doomed]))
                .execution_options(synchronize_session=False)
            )
            gone.remember(session, doomed, "job")
        # A flow whose last jobs these were goes with them; one another transaction
        # holds now is left to the flows' sweep.
        emptied = delete_empty_flows(session, [f for f in flow_of.values() if f], wait=False)
        session.commit()
        for job_id, flow_id in flow_of.items():
            _remove_job_files(
                job_id,
                [a for a in doomed if a.job_id == job_id],
                settings,
                flow_id=flow_id,
                flow_deleted=flow_id in emptied,
            )
        report.jobs += len(deleted)
        report.flows += len(emptied)
        report.files += len(doomed)


def _finished_before(cutoff: datetime) -> Any:
    return Job.status.in_(FINISHED_VALUES) & (Job.finished_at < cutoff)


def _remove_job_files(
    job_id: str,
    artifacts: Sequence[Artifact],
    settings: Settings,
    *,
    flow_id: str | None,
    flow_deleted: bool,
) -> None:
    shutil.rmtree(settings.work_dir / job_id, ignore_errors=True)
    try:
        remove_job_files(job_id, artifacts, flow_id=flow_id, flow_deleted=flow_deleted)
    except redis.RedisError as exc:  # the stream expires by itself
        log.warning("job %s: could not delete its events: %s", job_id, exc)


# -- 1b. flows left with no job ----------------------------------------------------------


def _sweep_flows(job_cutoff: datetime | None, settings: Settings, report: CleanupReport) -> None:
    """Delete the flows with no job left: those whose last jobs' transaction found them
    held by another, and those whose owner deleted every stage before a delete removed
    an emptied flow itself. A dry run counts, as well, the flows whose every job the
    jobs' sweep would delete."""

    def pick(session: Session, after: str, limit: int) -> list[str]:
        kept: Any = Job.flow_id == Flow.id
        if report.dry_run and job_cutoff is not None:  # the jobs the jobs' sweep keeps
            kept &= or_(
                ~Job.status.in_(FINISHED_VALUES),
                Job.finished_at.is_(None),
                Job.finished_at >= job_cutoff,
            )
        return list(
            session.scalars(
                select(Flow.id)
                .where(~exists().where(kept), Flow.id > after)
                .order_by(Flow.id)
                .limit(limit)
            )
        )

    for session, ids in _batches(settings, pick):
        if report.dry_run:
            report.flows += len(ids)
            continue
        emptied = delete_empty_flows(session, ids, wait=False)
        session.commit()
        for flow_id in sorted(emptied):
            try:
                events.forget_flow(flow_id)
            except redis.RedisError as exc:  # the stream expires by itself
                log.warning("flow %s: could not delete its event stream: %s", flow_id, exc)
        report.flows += len(emptied)


# -- 2. expired results ----------------------------------------------------------------


def _sweep_results(cutoff: datetime, settings: Settings, report: CleanupReport) -> None:
    def pick(session: Session, after: str, limit: int) -> list[str]:
        return list(
            session.scalars(
                select(Job.id)
                .join(Artifact, Artifact.job_id == Job.id)
                .where(
                    _finished_before(cutoff),
                    Artifact.role == ArtifactRole.OUTPUT.value,
                    Job.id > after,
                )
                .group_by(Job.id)
                .order_by(Job.id)
                .limit(limit)
            )
        )

    for session, ids in _batches(settings, pick):
        if report.dry_run:
            report.results += len(ids)
            continue
        removed: list[Artifact] = []
        for job in list(session.scalars(select(Job).where(Job.id.in_(ids)))):
            if not _expire_results(session, job, cutoff):
                continue
            owned = outputs_of(session, job.id)
            kept = keep_for_documents(session, owned)
            outputs = [a for a in owned if a.id not in kept]
            for artifact in outputs:
                session.delete(artifact)
            gone.remember(session, outputs, "results")
            removed += outputs
            report.results += 1
        session.commit()
        for artifact in removed:
            files.remove(artifact)
        report.files += len(removed)


def _expire_results(session: Session, job: Job, cutoff: datetime) -> bool:
    """Mark the job's results expired if it is still finished before ``cutoff``.

    Its checkpoint goes too: a retried failed job starts again from the first step.
    """
    expired_at = utcnow().isoformat()
    result = {**(job.result or {}), "outputs": [], "results_expired": True}
    result["results_expired_at"] = expired_at
    details = {**(job.step_details or {}), "results_expired": True}
    moved = session.execute(
        update(Job)
        .where(Job.id == job.id, _finished_before(cutoff))
        .values(result=result, step_details=details, checkpoint={})
        .execution_options(synchronize_session=False)
    )
    return bool(affected(moved))


# -- 3. uploads no job names ------------------------------------------------------------


def _sweep_uploads(cutoff: datetime, settings: Settings, report: CleanupReport) -> None:
    def unattached(after: str) -> Any:
        return (
            (Artifact.role == ArtifactRole.INPUT.value)
            & Artifact.job_id.is_(None)
            & (Artifact.created_at < cutoff)
            & (Artifact.id > after)
        )

    def pick(session: Session, after: str, limit: int) -> list[str]:
        return list(
            session.scalars(
                select(Artifact.id).where(unattached(after)).order_by(Artifact.id).limit(limit)
            )
        )

    for session, ids in _batches(settings, pick):
        # An upload a submission is naming right now is locked by it: left for next time.
        candidates = list(
            session.scalars(
                select(Artifact).where(Artifact.id.in_(ids)).with_for_update(skip_locked=True)
            )
        )
        read = read_by_documents(session, candidates)
        orphans = [a for a in candidates if a.id not in read and job_naming(session, a) is None]
        if report.dry_run:
            report.uploads += len(orphans)
            continue
        if not orphans:
            continue
        deleted = set(
            session.scalars(
                delete(Artifact)
                .where(Artifact.id.in_([a.id for a in orphans]), unattached(""))
                .returning(Artifact.id)
                .execution_options(synchronize_session=False)
            )
        )
        orphans = [a for a in orphans if a.id in deleted]
        gone.remember(session, orphans, "upload")
        session.commit()
        for artifact in orphans:
            files.remove(artifact)
        report.uploads += len(orphans)
        report.files += len(orphans)


# -- 4. scratch folders -------------------------------------------------------------------


def _sweep_scratch(settings: Settings, report: CleanupReport) -> None:
    if not settings.work_dir.is_dir():
        return
    stale = time.time() - SCRATCH_MIN_AGE
    folders = [
        entry.name
        for entry in os.scandir(settings.work_dir)
        if entry.is_dir(follow_symlinks=False) and _modified_before(entry.path, stale)
    ]
    for start in range(0, len(folders), settings.retention.cleanup_batch):
        names = folders[start : start + settings.retention.cleanup_batch]
        with session_scope() as session:
            active = set(
                session.scalars(
                    select(Job.id).where(Job.id.in_(names), Job.status.in_(ACTIVE_VALUES))
                )
            )
        for name in names:
            if name in active:
                continue
            if not report.dry_run:
                shutil.rmtree(settings.work_dir / name, ignore_errors=True)
            report.scratch += 1


def _modified_before(path: str, stale: float) -> bool:
    try:
        return os.stat(path, follow_symlinks=False).st_mtime < stale
    except FileNotFoundError:
        return False


# -- 5. stray files ---------------------------------------------------------------------


def _sweep_stray_files(min_age: float, settings: Settings, report: CleanupReport) -> None:
    root = settings.files_dir
    if not root.is_dir():
        return
    stale = time.time() - min_age
    incoming = root / ".incoming"
    strays: list[Path] = []
    if incoming.is_dir():  # uploads whose request died while they streamed in
        strays += [
            Path(e.path)
            for e in os.scandir(incoming)
            if e.is_file(follow_symlinks=False) and _modified_before(e.path, stale)
        ]
    names = [
        e.name
        for e in os.scandir(root)
        if e.is_file(follow_symlinks=False)
        and not e.name.startswith(".")
        and _modified_before(e.path, stale)
    ]
    for start in range(0, len(names), settings.retention.cleanup_batch):
        batch = names[start : start + settings.retention.cleanup_batch]
        with session_scope() as session:
            known = set(session.scalars(select(Artifact.path).where(Artifact.path.in_(batch))))
        strays += [root / name for name in batch if name not in known]
    for path in strays[: settings.retention.cleanup_max_per_run]:
        if not report.dry_run:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        report.stray_files += 1


# -- 6. kept turns -----------------------------------------------------------------------


def _sweep_viewer_tokens(now: datetime, report: CleanupReport) -> None:
    """Delete the viewer tokens that have expired: a row each, and nothing else."""
    expired = ViewerToken.expires_at <= now
    report.viewer_tokens = _delete_rows(ViewerToken, expired, dry_run=report.dry_run)


def _sweep_gone(cutoff: datetime, report: CleanupReport) -> None:
    """Forget the artifacts removed before ``cutoff``: a request for one is a plain 404
    again, as one for a job that old is."""
    old = GoneArtifact.removed_at < cutoff
    report.gone_artifacts = _delete_rows(GoneArtifact, old, dry_run=report.dry_run)


def _delete_rows(model: type[ViewerToken | GoneArtifact], where: Any, *, dry_run: bool) -> int:
    """Delete the rows of ``model`` that ``where`` picks, in one statement (a dry run
    counts them); how many."""
    with session_scope() as session:
        if dry_run:
            counted = session.scalar(select(func.count()).select_from(model).where(where))
            return int(counted or 0)
        deleted = session.execute(
            delete(model).where(where).execution_options(synchronize_session=False)
        )
        return affected(deleted)


def _make_passages_searchable(settings: Settings, report: CleanupReport) -> None:
    """Not retention, but its round: passages stored without their searchable text are
    given it (:func:`~longplay.store.library.make_searchable`), a batch at a time."""
    batch, most = settings.retention.cleanup_batch, settings.retention.cleanup_max_per_run
    if report.dry_run:
        with session_scope() as session:
            unsearchable = select(Passage.seq).where(Passage.search_text.is_(None)).limit(most)
            counted = session.scalar(select(func.count()).select_from(unsearchable.subquery()))
        report.passages_made_searchable = int(counted or 0)
        return
    while report.passages_made_searchable < most and not STOPPING.is_set():
        with session_scope() as session:
            done = make_searchable(session, min(batch, most - report.passages_made_searchable))
        report.passages_made_searchable += done
        if done < batch:
            return


def _sweep_turns(settings: Settings, report: CleanupReport) -> None:
    folder = turn_cache(settings.data_dir)
    if not folder.is_dir():
        return
    now = time.time()
    unused = now - settings.retention.turn_cache_retention
    abandoned = now - PARTIAL_TURN_MAX_AGE
    keep_forever = settings.retention.turn_cache_retention == 0
    doomed: list[str] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            if entry.name.endswith(PARTIAL_SUFFIX):
                stale = abandoned
            elif keep_forever:
                continue
            else:
                stale = unused
            if _modified_before(entry.path, stale):
                doomed.append(entry.path)
            if len(doomed) >= settings.retention.cleanup_max_per_run:
                break
    for path in doomed:
        if not report.dry_run:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        report.turns += 1
