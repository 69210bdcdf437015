"""Housekeeping tasks that keep the queue and the channel layer healthy."""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from procrastinate import App, JobContext
from procrastinate.contrib.django import app

# The engine's task lives with the engine; importing it here lets the worker discover it.
from adit.core.jobs.processing import clean_up_stuck_tasks, process_dicom_task  # noqa: F401

logger = logging.getLogger(__name__)


async def retry_stalled_jobs(procrastinate_app: App) -> int:
    """Puts jobs of workers that stopped sending heartbeats (killed, crashed) back in the queue.

    Returns how many jobs were retried.
    """
    manager = procrastinate_app.job_manager
    stalled = list(
        await manager.get_stalled_jobs(seconds_since_heartbeat=settings.STALLED_WORKER_SECONDS)
    )
    for job in stalled:
        logger.warning("Retrying job %s (%s) of a worker that stopped", job.id, job.task_name)
        await manager.retry_job(job)
    await manager.prune_stalled_workers(seconds_since_heartbeat=settings.STALLED_WORKER_SECONDS)
    return len(stalled)


@app.periodic(cron="* * * * *", periodic_id="retry_stalled_jobs")
@app.task(queue="default", queueing_lock="retry_stalled_jobs", pass_context=True)
async def retry_stalled_jobs_periodically(context: JobContext, timestamp: int) -> None:
    await retry_stalled_jobs(context.app)
    for line in await sync_to_async(clean_up_stuck_tasks)():
        logger.warning(line)


@app.periodic(cron=settings.DISK_SPACE_CHECK_CRON, periodic_id="check_disk_space")
@app.task(queue="default", queueing_lock="check_disk_space")
def check_disk_space(timestamp: int) -> list[str]:
    """E-mails the admins about folder destinations grown past their warn size."""
    from adit.core.mail import send_low_disk_space_mail
    from adit.core.models import DicomFolder

    over = []
    for folder in DicomFolder.objects.exclude(warn_size=None):
        used = folder.used_bytes() / 1e9
        if folder.warn_size is not None and used > folder.warn_size:
            quota = folder.quota if folder.quota else "?"
            over.append(
                f"{folder.name} ({folder.path}): {used:.1f} GB of {quota} GB used "
                f"(warn size {folder.warn_size} GB)."
            )
    if over:
        send_low_disk_space_mail(over)
    return over


@app.periodic(cron="17 * * * *", periodic_id="delete_old_queue_jobs")
@app.task(queue="default", queueing_lock="delete_old_queue_jobs", pass_context=True)
async def delete_old_queue_jobs(context: JobContext, timestamp: int) -> None:
    """Keeps the queue table small; finished queue jobs are kept a week for inspection."""
    await context.app.job_manager.delete_old_jobs(
        nb_hours=24 * 7, include_failed=True, include_cancelled=True, include_aborted=True
    )


@app.periodic(cron="*/10 * * * *", periodic_id="delete_expired_channel_messages")
@app.task(queue="default", queueing_lock="delete_expired_channel_messages")
def delete_expired_channel_messages(timestamp: int) -> None:
    """channels_postgres leaves delivered messages and dead memberships in its tables."""
    with connections["default"].cursor() as cursor:
        cursor.execute("DELETE FROM channels_postgres_message WHERE expire < now()")
        cursor.execute("DELETE FROM channels_postgres_groupchannel WHERE expire < now()")
