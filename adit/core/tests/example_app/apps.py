from django.apps import AppConfig


class ExampleAppConfig(AppConfig):
    """A minimal job app, installed in tests only, that exercises the core job engine."""

    name = "adit.core.tests.example_app"
    label = "example_app"
