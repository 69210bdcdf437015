from django.db import models

from adit.core.models import DicomJob, DicomTask


class ExampleJob(DicomJob):
    class Meta(DicomJob.Meta):
        pass


class ExampleTask(DicomTask):
    job = models.ForeignKey(ExampleJob, on_delete=models.CASCADE, related_name="tasks")
