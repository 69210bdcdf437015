from typing import ClassVar

from django.db import models

from adit.core import validators
from adit.core.dicom.errors import DicomError
from adit.core.dicom.operator import DicomOperator
from adit.core.jobs.models import DicomJob, DicomTask
from adit.core.jobs.processing import TaskOutcome, TaskProcessor
from adit.core.jobs.statuses import TaskStatus
from adit.core.models import DicomServer


class QueryJob(DicomJob):
    purpose = models.CharField(max_length=100, blank=True, default="")

    class Meta(DicomJob.Meta):
        pass


class QueryTask(DicomTask):
    """Counts the studies of one patient at the source."""

    job = models.ForeignKey(QueryJob, on_delete=models.CASCADE, related_name="tasks")
    patient_id = models.CharField(max_length=64, validators=[validators.validate_query_value])
    result_count = models.PositiveIntegerField(blank=True, null=True)

    progress_unit: ClassVar[str] = "queries"

    def fields_of_a_fresh_run(self) -> dict:
        return {**super().fields_of_a_fresh_run(), "result_count": None}


class QueryProcessor(TaskProcessor):
    task: QueryTask

    def process(self) -> TaskOutcome:
        task = self.task
        source = task.source.concrete()
        if not isinstance(source, DicomServer):
            raise DicomError(f"The source {source.name} is not a DICOM server.")
        self.control.progress(0, 1, force=True)
        found = 0
        for _ in DicomOperator(source).find_studies(PatientID=task.patient_id):
            self.control.check()
            found += 1
        QueryTask.objects.filter(pk=task.pk).update(result_count=found)
        self.control.progress(1, 1, force=True)
        self.log.info(f"{source.name} holds {found} study(ies) of patient {task.patient_id}.")
        return TaskOutcome(TaskStatus.SUCCESS, f"{found} study(ies) found.")
