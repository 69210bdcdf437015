from django.apps import AppConfig


class BatchTransferConfig(AppConfig):
    name = "adit.batch_transfer"
    label = "batch_transfer"
    verbose_name = "Batch Transfer"

    def ready(self) -> None:
        import django_tables2 as tables

        from adit.core.jobs import registry
        from adit.core.jobs.filters import ExtraFilter
        from adit.core.sections import Section
        from adit.core.transfer.kind import transfer_job_kind

        from . import api, views
        from .models import BatchTransferJob, BatchTransferTask, CheckResult

        registry.register(
            transfer_job_kind(
                BatchTransferJob,
                BatchTransferTask,
                section=Section(
                    namespace="batch_transfer",
                    label="Batch Transfer",
                    url_name="batch_transfer:job_create",
                    order=30,
                ),
                columns_before=(
                    (
                        "lines",
                        tables.TemplateColumn(
                            "{{ value|join:', '|truncatechars:20 }}", verbose_name="Lines"
                        ),
                    ),
                ),
                columns_after=(
                    (
                        "check_result",
                        tables.TemplateColumn(
                            template_name="batch_transfer/_check_cell.html",
                            verbose_name="At the source",
                        ),
                    ),
                ),
                task_filter=ExtraFilter(
                    "check_result",
                    "At the source",
                    [(result.value, result.label) for result in CheckResult if result.value],
                ),
                job_fields_template="batch_transfer/_job_fields.html",
                task_fields_template="batch_transfer/_task_fields.html",
                links=(
                    registry.JobLink(
                        "outcome_xlsx", "outcome.xlsx", "Export per line (.xlsx)", views.OutcomeView
                    ),
                    registry.JobLink(
                        "outcome_csv",
                        "outcome.csv",
                        "Export per line (.csv)",
                        views.OutcomeCsvView,
                    ),
                ),
                api_name="batch-transfer-jobs",
                create_serializer=api.CreateSerializer,
            )
        )
