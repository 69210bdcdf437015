from django.db import models

from adit.core.transfer.models import TransferJob, TransferTask


class ExampleJob(TransferJob):
    class Meta(TransferJob.Meta):
        pass


class ExampleTask(TransferTask):
    job = models.ForeignKey(ExampleJob, on_delete=models.CASCADE, related_name="tasks")
