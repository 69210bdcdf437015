"""No worker processes an upload; this processor only answers a task queued by mistake."""

from adit.core.jobs.processing import TaskOutcome, TaskProcessor
from adit.core.jobs.statuses import TaskStatus


class UploadProcessor(TaskProcessor):
    def process(self) -> TaskOutcome:
        return TaskOutcome(
            TaskStatus.FAILURE,
            "An upload is sent by the browser it was started in; upload the files again.",
        )
