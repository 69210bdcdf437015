"""The batch transfer's own queue tasks: the check of a job's studies before they move (the
transfers themselves are the engine's tasks), and the watch that no check is left behind."""

from __future__ import annotations

import logging

from django.db import close_old_connections
from procrastinate import JobContext, RetryStrategy
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob
from procrastinate.job_context import AbortReason

from adit.core.jobs.queue import QUEUE

logger = logging.getLogger(__name__)

CHECK_TASK_NAME = "adit.batch_transfer.check_studies"


# A check that fails as a whole (the database gone for a moment, say) is tried again; what
# it checked before is kept.
@app.task(
    queue=QUEUE,
    pass_context=True,
    name=CHECK_TASK_NAME,
    retry=RetryStrategy(max_attempts=3, wait=30),
)
def check_studies(context: JobContext, job_id: int, check_round: int) -> str:
    """Checks the job's studies at the source. When the worker is killed meanwhile, the
    queue runs this again (as it does the engine's tasks), and what was checked is skipped."""
    from . import checking

    def worker_stopping() -> bool:
        return context.abort_reason() == AbortReason.SHUTDOWN

    close_old_connections()
    try:
        checked = checking.check_studies(job_id, check_round, should_stop=worker_stopping)
    except checking.CheckStopped:
        check_studies.configure(priority=context.job.priority).defer(
            job_id=job_id, check_round=check_round
        )
        return "the worker stops; the next one goes on with the check"
    finally:
        close_old_connections()
    return f"{checked} studies checked"


@app.periodic(cron="*/5 * * * *", periodic_id="resume_lost_checks")
@app.task(queue="default", queueing_lock="resume_lost_checks")
def resume_lost_checks(timestamp: int) -> list[int]:
    """Queues the check again of every job still "Checking" whose check is in the queue no
    more (it failed for good, or its entry was deleted); returns their IDs."""
    from .models import BatchTransferJob, Phase

    entries = ProcrastinateJob.objects.filter(
        task_name=CHECK_TASK_NAME, status__in=("todo", "doing")
    ).values_list("args", flat=True)
    waiting = {args.get("job_id") for args in entries}
    lost = [
        job
        for job in BatchTransferJob.objects.filter(phase=Phase.CHECKING)
        if job.pk not in waiting
    ]
    for job in lost:
        logger.warning("The check of batch transfer job %s was lost; it is queued again", job.pk)
        job.queue_check()
    return [job.pk for job in lost]
