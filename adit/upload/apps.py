from django.apps import AppConfig


class UploadConfig(AppConfig):
    name = "adit.upload"
    label = "upload"
    verbose_name = "Upload"

    def ready(self) -> None:
        import django_tables2 as tables

        from adit.core.jobs import registry
        from adit.core.sections import Section

        from .models import UploadJob, UploadTask
        from .processing import UploadProcessor

        registry.register(
            registry.JobKind(
                job_model=UploadJob,
                task_model=UploadTask,
                processor=UploadProcessor,
                section=Section(
                    namespace="upload",
                    label="Upload",
                    url_name="upload:job_create",
                    order=50,
                ),
                task_columns=(
                    ("source", tables.Column(verbose_name="Destination")),
                    ("files_stored", tables.Column(verbose_name="Stored")),
                    ("files_refused", tables.Column(verbose_name="Refused")),
                    ("files_failed", tables.Column(verbose_name="Not taken")),
                ),
                job_fields_template="upload/_job_fields.html",
            )
        )
