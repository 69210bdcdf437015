from django.apps import AppConfig


class ExampleAppConfig(AppConfig):
    """A minimal transfer job app, installed in tests only, that exercises the core job engine."""

    name = "adit.core.tests.example_app"
    label = "example_app"
    verbose_name = "Example"

    def ready(self) -> None:
        from adit.core.jobs import registry
        from adit.core.tests.example_app.models import ExampleJob, ExampleTask
        from adit.core.transfer.api import TransferJobCreateSerializer
        from adit.core.transfer.kind import transfer_job_kind

        registry.register(
            transfer_job_kind(
                ExampleJob,
                ExampleTask,
                api_name="example-jobs",
                create_serializer=TransferJobCreateSerializer,
            )
        )
