"""The batch query pages: the form, the sample files, the results and their export."""

from __future__ import annotations

from itertools import islice

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from adit.core.access import setup_problems
from adit.core.jobs.filters import PAGE_SIZES, StatusFilterForm, page_size
from adit.core.jobs.statuses import TaskStatus
from adit.core.jobs.views import JobKindView
from adit.core.sheet_reader import MAX_FILE_BYTES
from adit.core.spreadsheets import table_download

from .batch_file import COLUMNS, max_lines_for
from .export import Export
from .forms import BatchQueryJobForm
from .models import BatchQueryJob
from .results import ResultRow, result_rows, rows

ADD_PERMISSION = "batch_query.add_batchqueryjob"

# The sample file: a line for each way of asking, as the help describes them.
SAMPLE_ROWS = (
    {"PatientID": "0012345", "Modality": "CT", "From": "2023-01-01", "Until": "2023-12-31"},
    {"PatientName": "Doe, Jane", "PatientBirthDate": "1971-04-03", "Modality": "MR, CT"},
    {"PatientID": "0012346", "AccessionNumber": "A1234567", "Pseudonym": "STUDY01-0002"},
    {"PatientID": "0012347", "Modality": "CT", "SeriesDescription": "*Thorax*"},
    {"PatientID": "0012348", "Modality": "MR", "SeriesNumber": "1, 2", "Pseudonym": "P4"},
)


@require_http_methods(["GET", "POST"])
@permission_required(ADD_PERMISSION, raise_exception=True)
def job_create(request: HttpRequest) -> HttpResponse:
    user = request.user
    preferences = user.preferences_of("batch_query")  # pyright: ignore[reportAttributeAccessIssue]
    if request.method == "POST":
        form = BatchQueryJobForm(request.POST, request.FILES, user=user)
        if form.is_valid():
            job = form.create_job()
            user.remember_preferences("batch_query", form.preferences())  # pyright: ignore[reportAttributeAccessIssue]
            messages.success(request, f"Batch query job {job.pk} with {len(form.tasks)} lines.")
            return redirect("batch_query:job_detail", pk=job.pk)
    else:
        form = BatchQueryJobForm(initial=preferences, user=user)
    context = {
        "form": form,
        "columns": COLUMNS,
        "max_lines": max_lines_for(user),
        "max_megabytes": MAX_FILE_BYTES // 2**20,
        "setup_problems": setup_problems(
            user,
            "Batch Query",
            sources=form.fields["source"].queryset,  # pyright: ignore[reportAttributeAccessIssue]
        ),
    }
    return render(request, "batch_query/job_form.html", context)


@permission_required(ADD_PERMISSION, raise_exception=True)
def sample_file(request: HttpRequest, suffix: str) -> HttpResponseBase:
    header = [column.name for column in COLUMNS]
    lines = [[row.get(name, "") for name in header] for row in SAMPLE_ROWS]
    return table_download(suffix, f"batch_query_sample.{suffix}", header, lines)


def task_context(task) -> dict:
    """What the task page shows beside the generic fields: the rows of the line."""
    return {"task_rows": list(islice(rows(task.job, line=task.line), MAX_TASK_ROWS))}


# A line that found thousands of series shows the first ones; the results page has all.
MAX_TASK_ROWS = 500


class ResultsView(JobKindView):
    """Every row of the export, page by page: what each line found, or why nothing."""

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = self.get_job()
        assert isinstance(job, BatchQueryJob)
        filter_form = StatusFilterForm(request, TaskStatus.choices)
        status = filter_form.cleaned_data["status"] if filter_form.is_valid() else ""
        line_text = request.GET.get("line", "").strip()
        digits = line_text.isascii() and line_text.isdigit() and len(line_text) < 9
        line = int(line_text) if digits else None
        per_page = page_size(request)
        paginator = Paginator(result_rows(job, line=line, status=status), per_page)
        page = paginator.get_page(request.GET.get("page"))
        query = request.GET.copy()
        query.pop("page", None)
        context = {
            **self.base_context(),
            "job": job,
            "rows": [ResultRow.from_values(values) for values in page.object_list],
            "page": page,
            "filter_form": filter_form,
            "line": line_text,
            "per_page": per_page,
            "page_sizes": PAGE_SIZES,
            "query": query.urlencode(),
            "with_series": job.series_queried(),
            "with_pseudonym": job.pseudonyms_given(),
            "job_url": reverse("batch_query:job_detail", args=[job.pk]),
        }
        return render(request, "batch_query/results.html", context)


class ExportView(JobKindView):
    """The rows of the results page as a spreadsheet (``suffix`` "xlsx" or "csv")."""

    suffix = "xlsx"

    def get(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        job = self.get_job()
        assert isinstance(job, BatchQueryJob)
        return Export(job).download(self.suffix)


class ExportXlsxView(ExportView):
    suffix = "xlsx"


class ExportCsvView(ExportView):
    suffix = "csv"
