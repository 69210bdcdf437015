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
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.exceptions import ValidationError
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
from pydicom import Dataset
from pydicom.multival import MultiValue

from adit.core import validators
from adit.core.access import NodeNotUsable, usable_server
from adit.core.dicom.errors import DicomError
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.query import as_list
from adit.core.models import DicomServer, ProjectSettings, PseudonymConflict, SectionLock
from adit.core.websockets import session_user

from .forms import (
    MAX_SEARCH_RESULTS,
    SelectiveTransferForm,
    StudyReference,
    patient_id_problem,
    study_uid_problem,
)
from .models import StudyShown, create_transfer_job

logger = logging.getLogger(__name__)

UNAUTHENTICATED = 4401
HINT = "Choose a DICOM source and destination, then type your search and press Enter."
# Results are sent at most this often while a search streams (each send re-renders the table).
SEND_INTERVAL = 0.3


class SelectiveTransferConsumer(AsyncWebsocketConsumer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Set before connect() can end: disconnect() runs whatever connect() did.
        self.user: Any = None  # the user model of settings.AUTH_USER_MODEL, once connected
        self.search_stopped: threading.Event | None = None
        self.search_task: asyncio.Task | None = None
        # What the searches showed of each study, for the tasks of a transfer to name them.
        self.shown: dict[tuple[str, str], StudyShown] = {}

    async def connect(self) -> None:
        # Accepted first: a socket closed before that is refused with HTTP 403 instead of
        # the close code that tells the page why.
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self._end_session()
            return
        self.user = user

    async def disconnect(self, code: int) -> None:
        self._stop_search()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        self._stop_search()
        if self.user is None:
            return  # refused in connect(), closing already
        try:
            await self._handle(text_data)
        except Exception:
            # The last line of defense: a client's message must never end the socket with
            # an internal error (1011) and no word to the user.
            logger.exception("Selective transfer message failed")
            await self._message("Something went wrong; the error is logged.", "danger")

    async def _handle(self, text_data: str | None) -> None:
        try:
            data = json.loads(text_data or "")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            await self._message("The page sent something unreadable; reload it.", "danger")
            return
        user = await self._session_user()
        if user is None or user.pk != self.user.pk:
            await self._end_session()
            return
        self.user = user  # as it is now: groups and permissions may have changed
        refusal = await self._refusal()
        if refusal:
            await self._message(refusal, "danger")
            return
        action = data.get("action", "")
        if action == "search":
            await self._search(data)
        elif action == "transfer":
            await self._transfer(data)
        elif action == "reset":
            await self._send(results_html([], HINT, "info"))
        elif isinstance(action, str):
            await self._message(f"Invalid action to process: {validators.shown(action)}.", "danger")
        else:
            await self._message("Invalid action to process: the action is not a text.", "danger")

    async def _end_session(self) -> None:
        await self._message(
            "Your session has ended (you logged out, or it expired). Log in again and reload "
            "this page.",
            "warning",
        )
        await self.close(code=UNAUTHENTICATED)

    # -- checks -----------------------------------------------------------------------------

    @database_sync_to_async
    def _session_user(self):
        return session_user(self.scope)

    @database_sync_to_async
    def _refusal(self) -> str:
        user = self.user
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
        form = SelectiveTransferForm.from_message(data, user=self.user)
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
        try:
            server, may_download = await self._search_source(form)
        except NodeNotUsable as err:  # access taken away since the form was checked
            await self._send(results_html([], err.message, "danger"))
            return
        stopped = threading.Event()
        self.search_stopped = stopped
        self.shown = {}  # a transfer picks from the rows of the latest search
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

        # Kept so the running search is not garbage-collected mid-way.
        self.search_task = asyncio.create_task(
            asyncio.to_thread(
                run_search, server, form.search_filters(), may_download, stopped,
                send_from_thread, self.shown,
            )
        )  # fmt: skip

    @database_sync_to_async
    def _search_source(self, form: SelectiveTransferForm) -> tuple[DicomServer, bool]:
        server = usable_server(self.user, "source", pk=form.cleaned_data["source"].pk)
        return server, form.may_download

    def _stop_search(self) -> None:
        if self.search_stopped is not None:
            self.search_stopped.set()
            self.search_stopped = None

    # -- transfer ---------------------------------------------------------------------------

    async def _transfer(self, data: dict) -> None:
        form, valid = await self._bound_form(data)
        await self._send(await self._create_job(form, valid))

    @database_sync_to_async
    def _create_job(self, form: SelectiveTransferForm, valid: bool) -> str:
        if not valid:
            return form_errors_html(form)
        try:
            form.check_transfer()
        except ValidationError as err:
            return message_html(err.messages[0], "danger", "transfer-message")
        if form.errors:
            return form_errors_html(form)
        data = form.cleaned_data
        try:
            job = create_transfer_job(
                self.user,
                data["source"],
                data["selected_studies"],
                form.transfer_choices(),
                shown=self.shown,
            )
        except PseudonymConflict as conflict:
            return message_html(conflict.message, "danger", "transfer-message")
        self.user.remember_preferences("selective_transfer", form.preferences())
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
    shown: dict[tuple[str, str], StudyShown] | None = None,
) -> None:
    """Queries the PACS and sends the growing result table, newest study first; ``shown``
    gets what each transferable row showed of its study."""
    studies: list[dict] = []
    last_sent = time.monotonic()
    try:
        for dataset in DicomOperator(server).find_studies(limit=MAX_SEARCH_RESULTS + 1, **filters):
            if stopped.is_set():
                return
            row = study_row(dataset, server.pk)
            studies.append(row)
            if shown is not None and row["reference"]:
                shown[(row["patient_id"], row["study_uid"])] = StudyShown(
                    row["study_date"],
                    row["description"],
                    tuple(as_list(dataset.get("ModalitiesInStudy"))),
                )
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
    """One row of the results, shown as the PACS sent it. A row whose patient ID or UID cannot
    name the study again (in a query, a task, a download) says why and offers no actions."""
    name = _text(dataset.get("PatientName"))
    family, _, given = name.partition("^")
    patient_id = _text(dataset.get("PatientID"))
    study_uid = _text(dataset.get("StudyInstanceUID"))
    study_date = _text(dataset.get("StudyDate"))
    study_time = _text(dataset.get("StudyTime"))
    row = {
        "patient_id": patient_id,
        "patient_name": f"{family}, {given.replace('^', ' ')}".strip(", ") if name else "",
        "birth_date": _date(_text(dataset.get("PatientBirthDate"))),
        "study_date": study_date,
        "study_time": study_time.split(".")[0],
        "study_date_display": _date(study_date),
        "study_time_display": _time(study_time),
        "modalities": ", ".join(as_list(dataset.get("ModalitiesInStudy"))),
        "description": _text(dataset.get("StudyDescription")),
        "instances": _text(dataset.get("NumberOfStudyRelatedInstances")),
        "study_uid": study_uid,
        "reference": "",
        "download": "",
        "unusable": "",
    }
    problem = patient_id_problem(patient_id) or study_uid_problem(study_uid)
    if problem:
        row["unusable"] = f"Cannot be transferred or downloaded: {problem}."
    else:
        row["reference"] = str(StudyReference(patient_id, study_uid))
        # What the row's download button posts (see download.DownloadForm).
        row["download"] = json.dumps(
            {"source": server_id, "patient_id": patient_id, "study_uid": study_uid}
        )
    return row


def _text(value) -> str:
    """An attribute's value as text; a multi-value joined as DICOM writes it, not as a list."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, MultiValue):
        return "\\".join(str(item) for item in value)
    return str(value)


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
