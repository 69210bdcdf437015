from django.apps import AppConfig


class BatchQueryConfig(AppConfig):
    name = "adit.batch_query"
    label = "batch_query"
    verbose_name = "Batch Query"

    def ready(self) -> None:
        import django_tables2 as tables

        from adit.core.jobs import registry
        from adit.core.sections import Section

        from . import api, views
        from .models import BatchQueryJob, BatchQueryTask
        from .processing import BatchQueryProcessor

        registry.register(
            registry.JobKind(
                job_model=BatchQueryJob,
                task_model=BatchQueryTask,
                processor=BatchQueryProcessor,
                section=Section(
                    namespace="batch_query",
                    label="Batch Query",
                    url_name="batch_query:job_create",
                    order=20,
                ),
                task_columns=(
                    ("line", tables.Column(verbose_name="Line")),
                    (
                        "patient_id",
                        tables.TemplateColumn(
                            "{{ record.patient_id|default:record.patient_name|default:'—' }}",
                            verbose_name="Patient",
                        ),
                    ),
                    (
                        "modalities",
                        tables.TemplateColumn(
                            "{{ value|join:', '|default:'—' }}", verbose_name="Modalities"
                        ),
                    ),
                ),
                task_context=views.task_context,
                api=registry.JobApi(
                    "batch-query-jobs",
                    create_serializer=api.CreateSerializer,
                    viewset_mixin=api.ResultRoutes,
                    job_fields=("project_name", "project_description"),
                    task_fields=(
                        "line",
                        "patient_id",
                        "patient_name",
                        "patient_birth_date",
                        "accession_number",
                        "study_date_start",
                        "study_date_end",
                        "modalities",
                        "study_description",
                        "series_description",
                        "series_numbers",
                        "pseudonym",
                    ),
                ),
                job_fields_template="batch_query/_job_fields.html",
                task_fields_template="batch_query/_task_fields.html",
                links=(
                    registry.JobLink(
                        "results", "results/", "Results", views.ResultsView, icon="bi-table"
                    ),
                    registry.JobLink(
                        "export_xlsx", "results.xlsx", "Export .xlsx", views.ExportXlsxView
                    ),
                    registry.JobLink(
                        "export_csv", "results.csv", "Export .csv", views.ExportCsvView
                    ),
                ),
            )
        )
