"""The live search of selective transfer, over a WebSocket.

The page's form sends its fields as JSON (htmx's ws extension) with an ``action``: ``search``,
``transfer`` or ``reset``. Answers are HTML fragments whose ids tell htmx where they go. A
search runs on a thread and streams its results while the PACS still answers; any new message
supersedes a running search, which then stops at its next result.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.exceptions import ValidationError
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
from pydicom import Dataset

from adit.core.dicom.errors import DicomError
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.query import as_list
from adit.core.models import DicomServer, ProjectSettings, PseudonymConflict, SectionLock

from .forms import MAX_SEARCH_RESULTS, SelectiveTransferForm
from .models import create_transfer_job

logger = logging.getLogger(__name__)

UNAUTHENTICATED = 4401
HINT = "Choose a DICOM source and destination, then type your search and press Enter."
# Results are sent at most this often while a search streams (each send re-renders the table).
SEND_INTERVAL = 0.3


class SelectiveTransferConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=UNAUTHENTICATED)
            return
        self.user = user
        self.search_stopped: threading.Event | None = None
        await self.accept()

    async def disconnect(self, code: int) -> None:
        self._stop_search()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        self._stop_search()
        try:
            data = json.loads(text_data or "")
            assert isinstance(data, dict)
        except (ValueError, AssertionError):
            await self._message("The page sent something unreadable; reload it.", "danger")
            return
        action = data.get("action", "")
        refusal = await self._refusal()
        if refusal:
            await self._message(refusal, "danger")
            return
        if action == "search":
            await self._search(data)
        elif action == "transfer":
            await self._transfer(data)
        elif action == "reset":
            await self._send(results_html([], HINT, "info"))
        else:
            await self._message(f"Invalid action to process: {action!r}.", "danger")

    # -- checks -----------------------------------------------------------------------------

    @database_sync_to_async
    def _refusal(self) -> str:
        user = self.user
        user.refresh_from_db()
        if not user.is_active:
            return "Your account is inactive."
        if not user.is_staff:
            if ProjectSettings.get().maintenance:
                return "ADIT is in maintenance mode. Please try again later."
            if SectionLock.objects.filter(namespace="selective_transfer").exists():
                return "Selective Transfer is locked by the administrators for now."
        if not user.has_perm("selective_transfer.add_selectivetransferjob"):
            return "Access denied. You don't have the proper permission."
        return ""

    @database_sync_to_async
    def _bound_form(self, data: dict) -> tuple[SelectiveTransferForm, bool]:
        form = SelectiveTransferForm(data, user=self.user)
        return form, form.is_valid()

    # -- search -----------------------------------------------------------------------------

    async def _search(self, data: dict) -> None:
        form, valid = await self._bound_form(data)
        if not valid:
            await self._send(form_errors_html(form))
            return
        if not form.has_search_terms:
            await self._message("Type at least one search term.", "warning")
            return
        stopped = threading.Event()
        self.search_stopped = stopped
        await self._send(results_html([], "Searching…", "info", searching=True))
        loop = asyncio.get_running_loop()

        async def send_unless_superseded(html: str) -> None:
            # Checked on the event loop, where the next message is handled: a result of this
            # search can never follow the answer to a later message.
            if not stopped.is_set():
                await self._send(html)

        def send_from_thread(html: str) -> None:
            if not stopped.is_set():
                future = asyncio.run_coroutine_threadsafe(send_unless_superseded(html), loop)
                future.result(timeout=30)

        server, may_download = await self._search_source(form)
        # Kept so the running search is not garbage-collected mid-way.
        self.search_task = asyncio.create_task(
            asyncio.to_thread(
                run_search, server, form.search_filters(), may_download, stopped,
                send_from_thread,
            )
        )  # fmt: skip

    @database_sync_to_async
    def _search_source(self, form: SelectiveTransferForm) -> tuple[DicomServer, bool]:
        server = form.cleaned_data["source"].concrete()
        assert isinstance(server, DicomServer)  # the form offers servers only
        return server, form.may_download

    def _stop_search(self) -> None:
        if self.search_stopped is not None:
            self.search_stopped.set()
            self.search_stopped = None

    # -- transfer ---------------------------------------------------------------------------

    async def _transfer(self, data: dict) -> None:
        selected = data.get("selected_studies", [])
        if isinstance(selected, str):
            selected = [selected]
        form, valid = await self._bound_form(data)
        reply = await self._create_job(form, valid, selected)
        await self._send(reply)

    @database_sync_to_async
    def _create_job(self, form: SelectiveTransferForm, valid: bool, selected: list[str]) -> str:
        studies = []
        for value in selected:
            patient_id, _, study_uid = str(value).partition("\\")
            if not study_uid:
                return message_html(
                    f"Invalid study selection: {value!r}.", "danger", "transfer-message"
                )
            studies.append((patient_id, study_uid))
        if valid:
            try:
                form.check_transfer(len(studies))
            except ValidationError as err:
                return message_html(err.messages[0], "danger", "transfer-message")
        if not valid or form.errors:
            return form_errors_html(form)
        data = form.cleaned_data
        try:
            job = create_transfer_job(
                self.user,
                data["source"],
                data["destination"],
                studies,
                pseudonym=data.get("pseudonym", ""),
                **form.job_fields(),
            )
        except PseudonymConflict as conflict:
            return message_html(conflict.message, "danger", "transfer-message")
        self.user.preferences = {**self.user.preferences, "selective_transfer": form.preferences()}
        self.user.save(update_fields=["preferences"])
        url = reverse("selective_transfer:job_detail", args=[job.pk])
        text = format_html(
            'Successfully submitted transfer job with ID {} — <a href="{}" '
            'data-testid="job-link">follow its progress</a>.',
            job.pk,
            url,
        )
        return message_html(text, "success", "transfer-message")

    # -- sending ----------------------------------------------------------------------------

    async def _message(self, text: str, level: str) -> None:
        await self._send(message_html(text, level))

    async def _send(self, html: str) -> None:
        await self.send(text_data=html)


def run_search(
    server,
    filters: dict,
    may_download: bool,
    stopped: threading.Event,
    send: Callable[[str], None],
) -> None:
    """Queries the PACS and sends the growing result table, newest study first."""
    studies: list[dict] = []
    last_sent = time.monotonic()
    try:
        for dataset in DicomOperator(server).find_studies(limit=MAX_SEARCH_RESULTS + 1, **filters):
            if stopped.is_set():
                return
            studies.append(study_row(dataset, server.pk))
            if time.monotonic() - last_sent > SEND_INTERVAL:
                send(results_html(studies, "", "", searching=True, may_download=may_download))
                last_sent = time.monotonic()
    except (DicomError, ValidationError) as err:
        text = err.messages[0] if isinstance(err, ValidationError) else str(err)
        send(results_html(studies, f"The search failed: {text}", "danger"))
        return
    except Exception:
        logger.exception("Search on %s failed", server)
        send(results_html(studies, "Something went wrong; the error is logged.", "danger"))
        return
    if stopped.is_set():
        return
    if not studies:
        send(results_html([], "No studies found for your query.", "info"))
    elif len(studies) > MAX_SEARCH_RESULTS:
        send(
            results_html(
                studies[:MAX_SEARCH_RESULTS],
                f"More than {MAX_SEARCH_RESULTS} studies found; refine your search to see them "
                "all.",
                "warning",
                may_download=may_download,
            )
        )
    else:
        send(results_html(studies, "", "", may_download=may_download))


def study_row(dataset: Dataset, server_id: int) -> dict:
    modalities = ", ".join(as_list(dataset.get("ModalitiesInStudy")))
    name = str(dataset.get("PatientName", "") or "")
    family, _, given = name.partition("^")
    return {
        "server_id": server_id,
        "patient_id": str(dataset.get("PatientID", "")),
        "patient_name": f"{family}, {given.replace('^', ' ')}".strip(", ") if name else "",
        "birth_date": _date(str(dataset.get("PatientBirthDate", "") or "")),
        "study_date": str(dataset.get("StudyDate", "") or ""),
        "study_time": str(dataset.get("StudyTime", "") or "").split(".")[0],
        "study_date_display": _date(str(dataset.get("StudyDate", "") or "")),
        "study_time_display": _time(str(dataset.get("StudyTime", "") or "")),
        "modalities": modalities,
        "description": str(dataset.get("StudyDescription", "") or ""),
        "instances": dataset.get("NumberOfStudyRelatedInstances", ""),
        "study_uid": str(dataset.StudyInstanceUID),
    }


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 else value


def _time(value: str) -> str:
    return f"{value[:2]}:{value[2:4]}" if len(value) >= 4 else value


def results_html(
    studies: list[dict],
    message: str,
    level: str,
    *,
    searching: bool = False,
    may_download: bool = False,
) -> str:
    ordered = sorted(
        studies, key=lambda study: (study["study_date"], study["study_time"]), reverse=True
    )
    return render_to_string(
        "selective_transfer/_results.html",
        {
            "studies": ordered,
            "message": message,
            "level": level,
            "searching": searching,
            "may_download": may_download,
        },
    )


def message_html(text: str, level: str, target: str = "form-errors") -> str:
    """An alert in the page: above the results (``form-errors``) or by the transfer button."""
    return render_to_string(
        "selective_transfer/_message.html", {"text": text, "level": level, "target": target}
    )


def form_errors_html(form: SelectiveTransferForm) -> str:
    return render_to_string("selective_transfer/_form_errors.html", {"form": form})
