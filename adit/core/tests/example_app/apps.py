from django.apps import AppConfig


class ExampleAppConfig(AppConfig):
    """A minimal job app, installed in tests only, that exercises the core job engine."""

    name = "adit.core.tests.example_app"
    label = "example_app"
    verbose_name = "Example"

    def ready(self) -> None:
        from adit.core.processing import register_processor
        from adit.core.transfer import TransferProcessor

        from .models import ExampleTask

        register_processor(ExampleTask, TransferProcessor)
