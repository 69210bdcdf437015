"""How transfer jobs are processed and shown: one helper every app with transfer jobs
(selective transfer, batch transfer) registers its kind with, so none repeats it."""

from __future__ import annotations

from collections.abc import Callable

import django_tables2 as tables
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache

from adit.core.jobs.filters import ExtraFilter
from adit.core.jobs.models import DicomTask
from adit.core.jobs.registry import JobApi, JobKind, JobLink
from adit.core.jobs.views import JobKindView
from adit.core.sections import Section
from adit.core.spreadsheets import CsvWriter
from adit.core.transfer.models import TransferJob, TransferTask
from adit.core.transfer.pipeline import TransferProcessor


# The file re-identifies patients: no browser or proxy cache may keep a copy of it.
@method_decorator(never_cache, name="dispatch")
class PseudonymsView(JobKindView):
    """The mapping of real patient IDs and study UIDs to the pseudonymized ones, for the
    people who must be able to re-identify the data of their project later."""

    http_method_names = ["get", "head"]
    columns = ("patient_id", "pseudonym", "study_uid", "pseudonymized_study_uid")

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = self.get_job()
        filename = f"{self.app.namespace}_job_{job.pk}_pseudonyms.csv"
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        writer = CsvWriter(response)
        writer.writerow(self.columns)
        rows = job.tasks.exclude(pseudonym="").order_by("pk").values_list(*self.columns)
        writer.writerows(rows)
        return response


def _has_pseudonyms(job) -> bool:
    return job.is_pseudonymized


# What the REST API shows of every transfer job and task beside the generic fields.
TRANSFER_JOB_API_FIELDS = (
    "project",
    "trial_protocol_id",
    "trial_protocol_name",
    "shift_dates",
    "encrypt_archive",
    "convert_to_nifti",
)
TRANSFER_TASK_API_FIELDS = (
    "destination",
    "patient_id",
    "study_uid",
    "series_uids",
    "pseudonym",
    "pseudonymized_study_uid",
    "study_date",
    "study_description",
    "modalities",
)


def transfer_task_columns() -> tuple[tuple[str, tables.Column], ...]:
    """What a person looks for first in a transfer's task: whose study, which one, under which
    pseudonym."""
    return (
        ("patient_id", tables.Column(verbose_name="Patient ID", default="—")),
        (
            "study",
            tables.TemplateColumn(
                verbose_name="Study",
                template_name="core/transfer/_study_cell.html",
                accessor="pk",
            ),
        ),
        ("pseudonym", tables.Column(verbose_name="Pseudonym", default="—")),
    )


def transfer_job_kind(
    job_model: type[TransferJob],
    task_model: type[TransferTask],
    section: Section | None = None,
    *,
    columns_before: tuple[tuple[str, tables.Column], ...] = (),
    columns_after: tuple[tuple[str, tables.Column], ...] = (),
    job_fields_template: str = "core/transfer/_job_fields.html",
    task_fields_template: str = "core/transfer/_task_fields.html",
    links: tuple[JobLink, ...] = (),
    task_context: Callable[[DicomTask], dict] | None = None,
    task_filter: ExtraFilter | None = None,
    api_name: str = "",
    create_serializer: type | None = None,
) -> JobKind:
    """The job kind of a TransferJob/TransferTask pair, to register in AppConfig.ready.

    An app adds its own task columns before or after the transfer's, its own links after the
    pseudonym mapping, a filter of its tasks, and may replace the field templates by ones that
    include the core's. With ``api_name`` its jobs are in the REST API there (created through
    ``create_serializer``, if given).
    """
    assert issubclass(job_model, TransferJob) and issubclass(task_model, TransferTask)
    return JobKind(
        job_model=job_model,
        task_model=task_model,
        processor=TransferProcessor,
        section=section,
        task_columns=(*columns_before, *transfer_task_columns(), *columns_after),
        job_fields_template=job_fields_template,
        task_fields_template=task_fields_template,
        task_context=task_context,
        task_filter=task_filter,
        api=JobApi(
            api_name,
            create_serializer=create_serializer,
            job_fields=TRANSFER_JOB_API_FIELDS,
            task_fields=TRANSFER_TASK_API_FIELDS,
        )
        if api_name
        else None,
        links=(
            JobLink(
                name="pseudonyms",
                path="pseudonyms.csv",
                label="Download pseudonym mapping (CSV)",
                view=PseudonymsView,
                shown_if=_has_pseudonyms,
            ),
            *links,
        ),
    )
