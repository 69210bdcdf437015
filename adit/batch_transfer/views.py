"""The batch transfer pages: the form, the two steps of a checked job (start, corrected file)
and the export of each line's outcome. The job pages themselves are the engine's."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from adit.core.access import setup_problems
from adit.core.jobs.models import ActionNotAllowed
from adit.core.jobs.registry import kind_of
from adit.core.jobs.statuses import JobStatus
from adit.core.jobs.tables import app_url
from adit.core.jobs.views import JobKindView
from adit.core.models import PseudonymConflict
from adit.core.sheet_reader import MAX_FILE_BYTES
from adit.core.spreadsheets import table_download

from .forms import BatchTransferJobForm, CorrectedFileForm
from .models import BatchTransferJob
from .outcome import OUTCOME_COLUMNS, outcome_rows

ADD_PERMISSION = "batch_transfer.add_batchtransferjob"


@require_http_methods(["GET", "POST"])
@permission_required(ADD_PERMISSION, raise_exception=True)
def job_create(request: HttpRequest) -> HttpResponse:
    user = request.user
    preferences = user.preferences_of("batch_transfer")  # pyright: ignore[reportAttributeAccessIssue]
    if request.method == "POST":
        form = BatchTransferJobForm(request.POST, request.FILES, user=user)
        if form.is_valid():
            try:
                job = form.create_job()
            except ValidationError as refused:  # a pseudonym conflict, a project name taken
                form.add_error(None, refused)
            else:
                user.remember_preferences("batch_transfer", form.preferences())  # pyright: ignore[reportAttributeAccessIssue]
                messages.success(request, _created_message(job, form))
                return redirect("batch_transfer:job_detail", pk=job.pk)
    else:
        form = BatchTransferJobForm(initial={"check_first": True, **preferences}, user=user)
    context = {
        "form": form,
        "max_megabytes": MAX_FILE_BYTES // 2**20,
        "setup_problems": setup_problems(
            user,
            "Batch Transfer",
            sources=form.fields["source"].queryset,  # pyright: ignore[reportAttributeAccessIssue]
            destinations=form.fields["destination"].queryset,  # pyright: ignore[reportAttributeAccessIssue]
        ),
    }
    return render(request, "batch_transfer/job_form.html", context)


def _created_message(job: BatchTransferJob, form) -> str:
    studies = len(form.batch.studies)
    message = f"Batch transfer job {job.pk} with {studies} stud{'y' if studies == 1 else 'ies'}"
    message += (
        ": they are being checked at the source." if job.is_being_checked else " was created."
    )
    if skipped := len(form.batch.skipped_lines):
        lines = f"{skipped} line{' was' if skipped == 1 else 's were'}"
        message += (
            f" {lines} skipped: lines of a batch query export that found no study (or failed)."
        )
    return message


@method_decorator(permission_required(ADD_PERMISSION, raise_exception=True), name="dispatch")
class _JobStepView(JobKindView):
    """A step of a job being checked (POST only), by whoever may open the job and create
    batch transfers."""

    http_method_names = ["post"]

    def job(self) -> BatchTransferJob:
        job = self.get_job()
        assert isinstance(job, BatchTransferJob)
        return job

    def not_allowed(self, job: BatchTransferJob, message: str) -> HttpResponse:
        context = {"message": message, "back_url": app_url("job_detail", job)}
        return render(self.request, "core/jobs/action_not_allowed.html", context, status=400)


class StartView(_JobStepView):
    """Starts the transfer of the studies the check found."""

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = self.job()
        try:
            count = job.start_transfers()
        except ActionNotAllowed as err:
            return self.not_allowed(job, str(err))
        studies = f"{count} stud{'y' if count == 1 else 'ies'}"
        if job.status == JobStatus.UNVERIFIED:  # staff must verify the jobs of non-staff
            messages.success(request, f"The transfer of {studies} starts once staff verify it.")
        else:
            messages.success(request, f"The transfer of {studies} was started.")
        return redirect(app_url("job_detail", job))


class RecheckView(_JobStepView):
    """Checks again the studies that could not be checked (the PACS was down, say)."""

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = self.job()
        try:
            count = job.recheck_errors()
        except ActionNotAllowed as err:
            return self.not_allowed(job, str(err))
        messages.success(
            request, f"{count} stud{'y is' if count == 1 else 'ies are'} checked again."
        )
        return redirect(app_url("job_detail", job))


class CorrectedFileView(_JobStepView):
    """Replaces a checked job's file; what was checked before is not asked for again."""

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = self.job()
        # The file is the owner's, also when staff upload it: their rights apply to its lines.
        form = CorrectedFileForm(request.POST, request.FILES, user=job.owner)
        if form.is_valid():
            assert form.batch is not None
            try:
                to_check = job.replace_studies(form.batch.studies, form.batch.skipped_lines)
            except ActionNotAllowed as err:
                return self.not_allowed(job, str(err))
            except PseudonymConflict as conflict:
                form.add_error(None, conflict.message)
            else:
                studies = len(form.batch.studies)
                messages.success(
                    request,
                    f"The corrected file names {studies} stud{'y' if studies == 1 else 'ies'}; "
                    f"{to_check} of them are checked now, the others were checked before.",
                )
                return redirect(app_url("job_detail", job))
        context = {**self.base_context(), "job": job, "form": form}
        return render(request, "batch_transfer/corrected_file.html", context, status=400)


# Names patients beside their pseudonyms: no browser or proxy cache may keep a copy.
@method_decorator(never_cache, name="dispatch")
class OutcomeView(JobKindView):
    """Each line of the batch file with what became of it (``suffix`` "xlsx" or "csv")."""

    http_method_names = ["get", "head"]
    suffix = "xlsx"

    def get(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        job = self.get_job()
        assert isinstance(job, BatchTransferJob)
        filename = f"batch_transfer_job_{job.pk}_outcome.{self.suffix}"
        return table_download(self.suffix, filename, OUTCOME_COLUMNS, outcome_rows(job))


class OutcomeCsvView(OutcomeView):
    suffix = "csv"


def step_view(view: type[_JobStepView]):
    return view.as_view(kind=kind_of(BatchTransferJob))
