"""Batch query: one task per line of the user's batch file, and the studies or series each
line found."""

from __future__ import annotations

import datetime
from typing import ClassVar

from django.contrib.postgres.fields import ArrayField
from django.db import models, transaction

from adit.core.jobs.models import DicomJob, DicomTask


class BatchQueryJob(DicomJob):
    """A batch file's lines, each queried at one source; the results feed a batch transfer."""

    project_name = models.CharField(max_length=150)
    project_description = models.TextField(max_length=2000, blank=True, default="")

    class Meta(DicomJob.Meta):
        pass

    @classmethod
    def create_with_tasks(
        cls, *, owner, source, tasks: list[BatchQueryTask], **fields
    ) -> BatchQueryJob:
        """Saves the job with its tasks (unsaved, one per line) and queues it, unless staff
        must verify it first."""
        with transaction.atomic():
            job = cls.objects.create(owner=owner, **fields)
            for task in tasks:
                task.job = job
                task.source = source
            BatchQueryTask.objects.bulk_create(tasks, batch_size=500)
            job.start_processing()
        return job

    @property
    def source(self):
        """The server every line was queried at."""
        task = self.tasks.select_related("source").first()
        return task.source if task else None

    def series_queried(self) -> bool:
        """Whether any line asked for series (so the export has series columns)."""
        return self.tasks.filter(series_query=True).exists()

    def pseudonyms_given(self) -> bool:
        """Whether any line named a pseudonym (so the export starts with that column)."""
        return self.tasks.exclude(pseudonym="").exists()


class BatchQueryTask(DicomTask):
    """One line of the batch file: whom and what to look for."""

    job = models.ForeignKey(BatchQueryJob, on_delete=models.CASCADE, related_name="tasks")
    line = models.PositiveIntegerField(help_text="The line of the batch file (1 is the header).")
    patient_id = models.CharField(max_length=64, blank=True, default="")
    patient_name = models.CharField(max_length=324, blank=True, default="")
    patient_birth_date = models.DateField(blank=True, null=True)
    accession_number = models.CharField(max_length=32, blank=True, default="")
    study_date_start = models.DateField(blank=True, null=True)
    study_date_end = models.DateField(blank=True, null=True)
    modalities = ArrayField(models.CharField(max_length=16), blank=True, default=list)
    study_description = models.CharField(max_length=64, blank=True, default="")
    series_description = models.CharField(max_length=64, blank=True, default="")
    series_numbers = ArrayField(models.PositiveIntegerField(), blank=True, default=list)
    # Series-level results are asked for by a series description or series numbers.
    series_query = models.BooleanField(default=False)
    pseudonym = models.CharField(max_length=64, blank=True, default="")

    progress_unit: ClassVar[str] = "queries"

    class Meta(DicomTask.Meta):
        indexes = [models.Index(fields=["job", "line"], name="batchquerytask_job_line")]


class BatchQueryResult(models.Model):
    """A study (or, for a series query, a series) that a line found, as the PACS described it.

    Text comes from the PACS unchecked except that UIDs are valid; it is shown escaped and
    exported neutralized.
    """

    job = models.ForeignKey(BatchQueryJob, on_delete=models.CASCADE, related_name="results")
    task = models.ForeignKey(BatchQueryTask, on_delete=models.CASCADE, related_name="results")
    patient_id = models.TextField(blank=True, default="")
    patient_name = models.TextField(blank=True, default="")
    patient_birth_date = models.DateField(blank=True, null=True)
    accession_number = models.TextField(blank=True, default="")
    study_uid = models.CharField(max_length=64)
    study_date = models.DateField(blank=True, null=True)
    study_time = models.TimeField(blank=True, null=True)
    study_description = models.TextField(blank=True, default="")
    modalities = ArrayField(models.TextField(), blank=True, default=list)
    image_count = models.PositiveIntegerField(blank=True, null=True)
    series_uid = models.CharField(max_length=64, blank=True, default="")
    series_description = models.TextField(blank=True, default="")
    series_number = models.IntegerField(blank=True, null=True)
    pseudonym = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["task__line", "pk"]
        indexes = [models.Index(fields=["job", "task"], name="batchqueryresult_job_task")]

    def __str__(self) -> str:
        return f"{self.study_uid} ({self.patient_id})"

    @property
    def study_moment(self) -> datetime.datetime | datetime.date | None:
        if self.study_date and self.study_time:
            return datetime.datetime.combine(self.study_date, self.study_time)
        return self.study_date
