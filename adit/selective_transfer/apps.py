from django.apps import AppConfig


class SelectiveTransferConfig(AppConfig):
    name = "adit.selective_transfer"
    label = "selective_transfer"
    verbose_name = "Selective Transfer"

    def ready(self) -> None:
        from adit.core.jobs import registry
        from adit.core.sections import Section
        from adit.core.transfer.api import TransferJobCreateSerializer
        from adit.core.transfer.kind import transfer_job_kind

        from .models import SelectiveTransferJob, SelectiveTransferTask

        registry.register(
            transfer_job_kind(
                SelectiveTransferJob,
                SelectiveTransferTask,
                section=Section(
                    namespace="selective_transfer",
                    label="Selective Transfer",
                    url_name="selective_transfer:job_create",
                    order=10,
                ),
                api_name="transfer-jobs",
                create_serializer=TransferJobCreateSerializer,
            )
        )
