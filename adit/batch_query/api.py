"""Batch query jobs in the REST API: created with the page's form from JSON rows or a batch
file, and their results as the results page and the export show them.

    POST /api/batch-query-jobs/                       a new job (see adit.core.api.batch)
    GET  /api/batch-query-jobs/<id>/results/          the rows of the export, page by page
                                                      (?line=, ?status=SUCCESS,FAILURE)
    GET  /api/batch-query-jobs/<id>/results.xlsx/     the export as on the page (also .csv)
"""

from __future__ import annotations

from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response

from adit.core.api.batch import batch_create_serializer
from adit.core.api.jobs import JobViewSet
from adit.core.jobs.statuses import TaskStatus

from .export import Export
from .forms import BatchQueryJobForm
from .models import BatchQueryJob
from .results import ResultRow, result_rows

CreateSerializer = batch_create_serializer(BatchQueryJobForm, "BatchQueryJobCreate")

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class ResultRoutes(JobViewSet):
    """Batch query jobs: each line of a batch file queried at one source; their results as
    rows and as the export files. (The kind's own routes, added to its job viewset.)"""

    def results_job(self) -> BatchQueryJob:
        # Not get_object(): the job list's filters (?status= of the job) must not apply here.
        return get_object_or_404(self.kind.visible_jobs(self.request.user), pk=self.kwargs["pk"])

    @extend_schema(
        parameters=[
            OpenApiParameter("line", int, description="Only the rows of this line."),
            OpenApiParameter(
                "status", str, description="Comma-separated task status names, e.g. FAILURE."
            ),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    @action(detail=True, methods=["get"])
    def results(self, request: Request, pk: str | None = None) -> Response:
        """Every row of the export (one per study or series found, one for each line that
        found nothing or failed), with the export's columns as keys, and the export's
        links."""
        job = self.results_job()
        rows = result_rows(job, line=_line(request.query_params.get("line")))
        statuses = _statuses(request.query_params.get("status"))
        if statuses:
            rows = rows.filter(status__in=statuses)
        export = Export(job, all_columns=True)
        page = self.paginate_queryset(rows)  # pyright: ignore[reportArgumentType]
        assert page is not None, "the job viewsets paginate"
        results = [
            dict(zip(export.header, export.row_values(ResultRow.from_values(values)), strict=True))
            for values in page
        ]
        page_data = self.get_paginated_response(results).data
        assert isinstance(page_data, dict)
        exports = {
            suffix: self.reverse_action(f"results-{suffix}", args=[job.pk])
            for suffix in ("xlsx", "csv")
        }
        return Response({"exports": exports, **page_data})

    @extend_schema(
        operation_id="batch_query_jobs_results_xlsx",
        responses={(200, XLSX_TYPE): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], url_path=r"results\.xlsx", url_name="results-xlsx")
    def results_xlsx(self, request: Request, pk: str | None = None) -> HttpResponseBase:
        """The export as an Excel workbook, as the job page's link gives it."""
        return Export(self.results_job()).download("xlsx")

    @extend_schema(
        operation_id="batch_query_jobs_results_csv",
        responses={(200, "text/csv"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], url_path=r"results\.csv", url_name="results-csv")
    def results_csv(self, request: Request, pk: str | None = None) -> HttpResponseBase:
        """The export as a CSV file, as the job page's link gives it."""
        return Export(self.results_job()).download("csv")


def _line(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) < 9):
        raise ValidationError({"line": ["A line number, e.g. 2 (1 is the header)."]})
    return int(text)


def _statuses(text: str | None) -> list[str]:
    if not text:
        return []
    names = [name.strip().upper() for name in text.split(",")]
    unknown = [name for name in names if name not in TaskStatus.names]
    if unknown:
        choices = ", ".join(TaskStatus.names)
        raise ValidationError(
            {"status": [f"Unknown status {', '.join(unknown)}; one of {choices}."]}
        )
    return [TaskStatus[name] for name in names]
