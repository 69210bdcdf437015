"""The upload page and the three requests its script makes: start, one per file, finish.

The page's script pseudonymizes every file in the browser before sending it (see
``static/upload/upload.js``); the server checks each file again and stores it. All three
requests answer JSON for the script: ``{"error": …}`` or ``{"errors": {field: [...]}}``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from adit.core.access import setup_problems
from adit.core.dicom.errors import DicomError
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.models import new_secret
from adit.core.transfer.pseudonymizer import profile_for_browsers, upload_key

from .forms import UploadForm
from .models import UploadJob
from .storing import FileRefused, store_uploaded_file

UPLOAD_PERMISSION = "upload.can_upload_data"
_REFUSED = "You may not upload data: that needs the permission upload.can_upload_data."


def _permission_denied() -> JsonResponse:
    return JsonResponse({"error": _REFUSED}, status=403)


@login_required
@require_http_methods(["GET", "POST"])
def job_create(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not user.has_perm(UPLOAD_PERMISSION):
        if request.method == "POST":
            return _permission_denied()
        return render(request, "upload/refused.html", {"message": _REFUSED}, status=403)
    if request.method == "GET":
        form = UploadForm(user=user)
        context = {
            "form": form,
            "profile": profile_for_browsers(),
            "setup_problems": setup_problems(
                user,
                "Upload",
                destinations=form.fields["destination"].queryset,  # pyright: ignore[reportAttributeAccessIssue]
            ),
        }
        return render(request, "upload/job_form.html", context)

    form = UploadForm(request.POST, user=user)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    fields = form.job_fields()
    project = fields["project"]
    secret = "" if project else new_secret()
    job = UploadJob.begin(owner=user, upload_secret=secret, **fields)
    return JsonResponse(
        {
            "job": job.pk,
            "job_url": reverse("upload:job_detail", args=[job.pk]),
            "file_url": reverse("upload:upload_file", args=[job.pk]),
            "finish_url": reverse("upload:upload_finish", args=[job.pk]),
            "key": upload_key(project.secret if project else secret),
            "pseudonym": job.pseudonym,
            "trial_protocol_id": job.trial_protocol_id,
            "trial_protocol_name": job.trial_protocol_name,
        },
        status=201,
    )


def _upload_request(view: Callable[[HttpRequest, UploadJob], JsonResponse]):
    """A POST of the page's script about one of the user's own uploads: the view gets the job
    (404 for anybody else's; 403 as JSON without the permission)."""

    @login_required
    @require_POST
    @functools.wraps(view)
    def checked(request: HttpRequest, pk: int) -> JsonResponse:
        if not request.user.has_perm(UPLOAD_PERMISSION):
            return _permission_denied()
        job = get_object_or_404(
            UploadJob.objects.select_related("owner"), pk=pk, owner=request.user
        )
        return view(request, job)

    return checked


@_upload_request
def upload_file(request: HttpRequest, job: UploadJob) -> JsonResponse:
    task = job.task
    if job.status != JobStatus.IN_PROGRESS or task.status != TaskStatus.IN_PROGRESS:
        return JsonResponse({"error": f"Upload {job.pk} was stopped."}, status=409)
    uploaded = request.FILES.get("file")
    if uploaded is None:
        return JsonResponse({"error": "No file received (form field 'file')."}, status=400)
    try:
        stored = store_uploaded_file(job, uploaded, request.POST.get("study_modalities", ""))
    except FileRefused as err:
        task.count_file("refused", note=f"Refused a file: {err}")
        return JsonResponse({"error": str(err)}, status=422)
    except DicomError as err:
        task.count_file("failed", note=f"The destination did not take a file: {err}")
        return JsonResponse({"error": str(err)}, status=502)
    if not task.count_file("stored", size=stored.size):
        return JsonResponse({"error": f"Upload {job.pk} was stopped."}, status=409)
    return JsonResponse({"stored": stored.sop_instance_uid})


@_upload_request
def upload_finish(request: HttpRequest, job: UploadJob) -> JsonResponse:
    task = job.task
    if task.status != TaskStatus.IN_PROGRESS:
        return JsonResponse({"message": task.message, "status": JobStatus(job.status).label})
    message = task.finish(stopped=request.POST.get("stopped") == "1")
    job.refresh_from_db(fields=["status"])
    return JsonResponse({"message": message, "status": JobStatus(job.status).label})
