from django.apps import AppConfig


class QueryAppConfig(AppConfig):
    """A job app that is not a transfer, installed in tests only: each task counts a patient's
    studies at its source with one C-FIND. It shows that the job layer serves any kind."""

    name = "adit.core.tests.query_app"
    label = "example_queries"
    verbose_name = "Study Queries"

    def ready(self) -> None:
        import django_tables2 as tables

        from adit.core.jobs import registry
        from adit.core.tests.query_app.models import QueryJob, QueryProcessor, QueryTask

        registry.register(
            registry.JobKind(
                job_model=QueryJob,
                task_model=QueryTask,
                processor=QueryProcessor,
                task_columns=(
                    ("patient_id", tables.Column(verbose_name="Query")),
                    ("result_count", tables.Column(verbose_name="Studies found", default="—")),
                ),
                job_fields_template="example_queries/_job_fields.html",
                task_fields_template="example_queries/_task_fields.html",
            )
        )
