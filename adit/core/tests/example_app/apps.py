from django.apps import AppConfig


class ExampleAppConfig(AppConfig):
    """A minimal job app, installed in tests only, that exercises the core job engine."""

    name = "adit.core.tests.example_app"
    label = "example_app"
    verbose_name = "Example"

    def ready(self) -> None:
        from adit.core.jobs.processing import register_processor
        from adit.core.tests.example_app.models import ExampleTask
        from adit.core.transfer.pipeline import TransferProcessor

        register_processor(ExampleTask, TransferProcessor)
