"""The batch transfer's own queue task: the check of a job's studies before they move (the
transfers themselves are the engine's tasks)."""

from __future__ import annotations

from django.db import close_old_connections
from procrastinate import JobContext
from procrastinate.contrib.django import app
from procrastinate.job_context import AbortReason

from adit.core.jobs.queue import QUEUE


@app.task(queue=QUEUE, pass_context=True, name="adit.batch_transfer.check_studies")
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
