from django.apps import AppConfig


class SelectiveTransferConfig(AppConfig):
    name = "adit.selective_transfer"
    label = "selective_transfer"
    verbose_name = "Selective Transfer"

    def ready(self) -> None:
        from adit.core import sections
        from adit.core.jobs.processing import register_processor
        from adit.core.transfer.pipeline import TransferProcessor

        from .models import SelectiveTransferTask

        register_processor(SelectiveTransferTask, TransferProcessor)
        sections.register(
            sections.Section(
                namespace="selective_transfer",
                label="Selective Transfer",
                url_name="selective_transfer:job_create",
                order=10,
            )
        )
