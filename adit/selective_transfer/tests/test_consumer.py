"""The live search WebSocket: what a user sees for every action and every error."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from html import unescape

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from pydicom import Dataset

from adit.core.models import DicomServer, Project, ProjectSettings, SectionLock
from adit.selective_transfer.consumers import SelectiveTransferConsumer, results_html, study_row  # noqa
from adit.selective_transfer.models import SelectiveTransferJob

from .conftest import give

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


class Page:
    """One browser tab's WebSocket, sending the form as htmx's ws extension does.

    The communicator must live in one event loop for its whole life; this one runs on a
    thread of its own while the test talks to it synchronously.
    """

    def __init__(self, user, session_key: str | None = None):
        """A tab of ``user``, logged in with a session of their own unless ``session_key``
        names one (None for an anonymous user)."""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.communicator = WebsocketCommunicator(
            SelectiveTransferConsumer.as_asgi(), "/ws/selective-transfer"
        )
        if session_key is None and user.is_authenticated:
            self.browser = Client()
            self.browser.force_login(user)
            session_key = self.browser.session.session_key
        scope = self.communicator.scope
        scope["user"] = user  # pyright: ignore[reportGeneralTypeIssues]
        scope["session"] = SessionStore(session_key)  # pyright: ignore[reportGeneralTypeIssues]

    def _run(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def connect(self):
        return self._run(self.communicator.connect())

    def send_raw(self, text: str) -> None:
        self._run(self.communicator.send_to(text_data=text))

    def send(self, action: str, **fields) -> None:
        self.send_raw(json.dumps({"action": action, **fields, "HEADERS": {"HX-Request": "true"}}))

    def receive_close(self, timeout: float = 10) -> int:
        """The close code the consumer ends the socket with."""
        output = self._run(self.communicator.receive_output(timeout), timeout + 5)
        assert output["type"] == "websocket.close", output
        return output.get("code", 1000)

    def receive(self, timeout: float = 20) -> str:
        received = self._run(self.communicator.receive_from(timeout), timeout + 5)
        assert isinstance(received, str)
        return received

    def receive_nothing(self, seconds: float) -> bool:
        return self._run(self.communicator.receive_nothing(timeout=seconds), seconds + 5)

    def receive_until(self, text: str, timeout: float = 20) -> str:
        """Fragments until one contains ``text`` (a search first sends "Searching…")."""
        received = []
        for _ in range(20):
            html = self.receive(timeout)
            received.append(html)
            if text in html:
                return html
        raise AssertionError(f"{text!r} never came; got {received}")

    def close(self) -> None:
        try:
            self._run(self.communicator.disconnect())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)


@pytest.fixture
def page(researcher):
    page = Page(researcher)
    connected, _ = page.connect()
    assert connected
    yield page
    page.close()


def _study_rows(html: str) -> int:
    return html.count('data-testid="study-row"')


def test_anonymous_connections_are_told_to_log_in_and_closed_with_4401(db, caplog):
    from django.contrib.auth.models import AnonymousUser

    page = Page(AnonymousUser())
    connected, _ = page.connect()
    assert connected  # accepted, so the close code reaches the browser (not an HTTP 403)
    assert "Log in again" in page.receive()
    assert page.receive_close() == 4401
    page.close()
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_search_by_patient_id_streams_the_studies_newest_first(
    page, source_server, orthanc1_studies
):
    patient_id = orthanc1_studies[0].patient_id
    expected = sorted(
        (study for study in orthanc1_studies if study.patient_id == patient_id),
        key=lambda study: (study.study_date, study.study_time),
        reverse=True,
    )
    page.send("search", source=source_server.pk, patient_id=patient_id)
    assert "Searching" in page.receive()
    html = page.receive_until("results-table")
    while "still searching" in html:
        html = page.receive()
    assert _study_rows(html) == len(expected)
    positions = [html.index(study.study_instance_uid) for study in expected]
    assert positions == sorted(positions)  # newest first


def test_search_by_name_as_last_comma_first(page, source_server, orthanc1_studies):
    study = orthanc1_studies[0]
    family, given = study.patient_name.split("^")[:2]
    page.send("search", source=source_server.pk, patient_name=f"{family}, {given[:2]}")
    html = page.receive_until("study-row")
    assert study.patient_id in html


def test_no_match_says_so(page, source_server):
    page.send("search", source=source_server.pk, patient_id="NOBODY-4711")
    assert "No studies found for your query." in page.receive_until("No studies")


def test_too_many_results_ask_to_refine(page, source_server, settings, monkeypatch):
    monkeypatch.setattr("adit.selective_transfer.consumers.MAX_SEARCH_RESULTS", 2)
    page.send("search", source=source_server.pk, patient_id="*")
    html = page.receive_until("refine your search")
    assert "More than 2 studies found" in html
    assert _study_rows(html) == 2


def test_unreachable_pacs_is_a_message_not_a_broken_page(page, researcher):
    from adit.core.tests.factories import grant

    dead = DicomServer.objects.create(
        name="Down", ae_title="DOWN", host="127.0.0.1", port=1, study_root_find_support=True
    )
    grant(dead, researcher.active_group, source=True)
    page.send("search", source=dead.pk, patient_id="X")
    html = page.receive_until("The search failed")
    assert "connection refused" in html


def test_invalid_form_lists_the_errors(page, source_server):
    page.send("search", source=source_server.pk, patient_id="A\\B", modality="C-T")
    html = page.receive()
    assert "form-errors" in html
    assert "backslash" in html and "Modalities are letters" in html


def test_a_source_of_another_group_is_refused(page, researcher, orthanc2):
    foreign = DicomServer.objects.create(
        name="Foreign", ae_title="FOREIGN", host="127.0.0.1", port=orthanc2.dicom_port
    )
    page.send("search", source=foreign.pk, patient_id="X")
    html = page.receive()
    assert "Select a valid choice" in html


def test_unknown_action_and_garbage_are_answered(page):
    page.send("explode")
    assert "Invalid action to process: “explode”." in page.receive()
    page.send_raw("not json")
    assert "unreadable" in page.receive()


def test_without_permission_access_is_denied(member, source_server):
    member.active_group.permissions.clear()
    page = Page(member)
    page.connect()
    page.send("search", source=source_server.pk, patient_id="X")
    assert "Access denied. You don't have the proper permission." in unescape(page.receive())
    page.close()


def test_locked_section_and_maintenance_stop_non_staff(page, source_server):
    SectionLock.objects.create(namespace="selective_transfer", reason="upgrade")
    page.send("search", source=source_server.pk, patient_id="X")
    assert "locked" in page.receive()
    SectionLock.objects.all().delete()
    settings_row = ProjectSettings.get()
    settings_row.maintenance = True
    settings_row.save()
    page.send("search", source=source_server.pk, patient_id="X")
    assert "maintenance" in page.receive()


def _two_studies_of_one_patient(studies):
    for study in studies:
        same_patient = [other for other in studies if other.patient_id == study.patient_id]
        if len(same_patient) > 1:
            return same_patient[:2]
    raise AssertionError("no patient with two studies")


def _selected(*studies) -> list[str]:
    return [f"{study.patient_id}\\{study.study_instance_uid}" for study in studies]


def test_transfer_creates_a_queued_job_with_one_task_per_study(
    page, researcher, source_server, destination_server, orthanc1_studies
):
    first, second = _two_studies_of_one_patient(orthanc1_studies)
    page.send(
        "transfer",
        source=source_server.pk,
        destination=destination_server.pk,
        pseudonym="SUBJ-1",
        trial_protocol_id="LUNG",
        selected_studies=[
            f"{first.patient_id}\\{first.study_instance_uid}",
            f"{second.patient_id}\\{second.study_instance_uid}",
        ],
    )
    html = page.receive()
    job = SelectiveTransferJob.objects.get(owner=researcher)
    assert f"Successfully submitted transfer job with ID {job.pk}" in html
    assert f"/selective-transfer/jobs/{job.pk}/" in html
    assert job.status == SelectiveTransferJob.Status.PENDING
    assert job.trial_protocol_id == "LUNG"
    tasks = list(job.tasks.order_by("pk"))
    assert [(task.patient_id, task.study_uid, task.pseudonym) for task in tasks] == [
        (first.patient_id, first.study_instance_uid, "SUBJ-1"),
        (second.patient_id, second.study_instance_uid, "SUBJ-1"),
    ]
    assert all(task.queued_job_id for task in tasks)
    researcher.refresh_from_db()
    assert researcher.preferences["selective_transfer"]["destination"] == destination_server.pk


def test_one_pseudonym_for_studies_of_two_patients_is_refused(
    page, source_server, destination_server, orthanc1_studies
):
    first = orthanc1_studies[0]
    other = next(s for s in orthanc1_studies if s.patient_id != first.patient_id)
    page.send(
        "transfer",
        source=source_server.pk,
        destination=destination_server.pk,
        pseudonym="SUBJ-1",
        selected_studies=_selected(first, other),
    )
    html = page.receive()
    assert "transfer-message" in html
    assert (
        f"The pseudonym SUBJ-1 would go to two patients, {first.patient_id} and "
        f"{other.patient_id}; a pseudonym belongs to one patient, so give each their own."
    ) in html
    assert not SelectiveTransferJob.objects.exists()


def test_another_pseudonym_for_a_patient_of_the_project_is_refused(
    page, researcher, source_server, destination_server, orthanc1_studies
):
    study = orthanc1_studies[0]
    project = Project.objects.create(name="Lung study")
    project.groups.add(researcher.active_group)
    project.claim_pseudonym(study.patient_id, "SUBJ-1")  # as an earlier transfer did

    fields = {
        "source": source_server.pk,
        "destination": destination_server.pk,
        "project": project.pk,
        "selected_studies": _selected(study),
    }
    page.send("transfer", pseudonym="SUBJ-2", **fields)
    assert (
        f"Patient {study.patient_id} already has the pseudonym SUBJ-1 in project Lung study; "
        "use SUBJ-1."
    ) in page.receive()
    assert not SelectiveTransferJob.objects.exists()

    page.send("transfer", pseudonym="SUBJ-1", **fields)
    assert "Successfully submitted" in page.receive()
    assert SelectiveTransferJob.objects.get().project == project


def test_pseudonym_is_required_without_the_permission(
    page, source_server, destination_server, orthanc1_studies
):
    study = orthanc1_studies[0]
    page.send(
        "transfer",
        source=source_server.pk,
        destination=destination_server.pk,
        selected_studies=f"{study.patient_id}\\{study.study_instance_uid}",
    )
    html = page.receive()
    assert "Pseudonym:</strong> This field is required." in html
    assert not SelectiveTransferJob.objects.exists()


def test_unpseudonymized_transfer_with_the_permission(
    page, researcher, source_server, destination_server, orthanc1_studies
):
    give(researcher, "can_transfer_unpseudonymized")
    study = orthanc1_studies[0]
    page.send(
        "transfer",
        source=source_server.pk,
        destination=destination_server.pk,
        selected_studies=f"{study.patient_id}\\{study.study_instance_uid}",
    )
    assert "Successfully submitted" in page.receive()


def test_transfer_limits(page, source_server, destination_server, destination_folder):
    page.send("transfer", source=source_server.pk, destination=destination_server.pk, pseudonym="P")
    assert "At least one study to transfer must be selected." in page.receive()

    many = [f"P{number}\\1.2.3.{number}" for number in range(11)]
    page.send(
        "transfer",
        source=source_server.pk,
        destination=destination_server.pk,
        pseudonym="P",
        selected_studies=many,
    )
    assert "Maximum 10 studies per selective transfer are allowed." in page.receive()

    page.send(
        "transfer",
        source=source_server.pk,
        destination=destination_server.pk,
        pseudonym="P",
        archive_password="secret",
        selected_studies=many[:1],
    )
    assert "An archive password only works for folder destinations." in page.receive()
    assert not SelectiveTransferJob.objects.exists()


def test_a_new_message_supersedes_a_running_search(page, source_server):
    page.send("search", source=source_server.pk, patient_id="*")
    page.send("reset")
    received = [page.receive()]
    while "Choose a DICOM source" not in received[-1]:
        received.append(page.receive())
    # Nothing of the superseded search comes after the answer to the reset.
    assert page.receive_nothing(seconds=2)


def _transfer_fields(source_server, destination_server, **fields) -> dict:
    return {
        "source": source_server.pk,
        "destination": destination_server.pk,
        "pseudonym": "SUBJ-1",
        "selected_studies": ["P1\\1.2.3"],
        **fields,
    }


@pytest.mark.parametrize(
    "fields, field_label, error",
    [
        ({"study_date": ["2024-07-24"]}, "Study date", "Expected one value, not a list."),
        ({"study_date": {"day": 24}}, "Study date", "Expected text"),
        ({"study_date": 20240724}, "Study date", "Enter a valid date."),
        ({"patient_id": ["A", "B"]}, "Patient ID", "Expected one value"),
        ({"source": {"pk": 1}}, "Source", "Expected text"),
        ({"pseudonym": "SUBJ*"}, "Pseudonym", "wildcards"),
        ({"pseudonym": "SUBJ\n"}, "Pseudonym", "control characters"),
        ({"pseudonym": "\ud800"}, "Pseudonym", "Expected text"),
        ({"selected_studies": 12345}, "Selected studies", "does not name a patient ID"),
        ({"selected_studies": [["P1", "1.2.3"]]}, "Selected studies", "Expected text"),
        ({"selected_studies": {"P1": "1.2.3"}}, "Selected studies", "Expected text"),
        ({"selected_studies": ["P1\\" + "1" * 100]}, "Selected studies", "not a valid DICOM UID"),
        ({"selected_studies": ["P" * 100 + "\\1.2.3"]}, "Selected studies", "longer than 64"),
        ({"selected_studies": ["P1\\1.2.3'+alert(1)+'"]}, "Selected studies", "not a valid"),
        ({"selected_studies": ["P1\\1.2.3\n"]}, "Selected studies", "not a valid DICOM UID"),
        ({"selected_studies": ["P\x001\\1.2.3"]}, "Selected studies", "control characters"),
        ({"selected_studies": ["1.2.3"]}, "Selected studies", "does not name a patient ID"),
        (
            {"selected_studies": [f"P1\\1.2.{number}" for number in range(101)]},
            "Selected studies",
            "At most 100 studies can be selected at once",
        ),
    ],
)
def test_malformed_fields_are_form_errors_naming_the_field_and_create_nothing(
    page, source_server, destination_server, fields, field_label, error
):
    page.send("transfer", **_transfer_fields(source_server, destination_server, **fields))
    html = unescape(page.receive())
    assert "form-errors" in html
    assert f"{field_label}:</strong> " in html
    assert error in html
    assert not SelectiveTransferJob.objects.exists()
    page.send("reset")  # the socket is still open and answers
    assert "Choose a DICOM source" in page.receive()


@pytest.mark.parametrize(
    "message",
    ["[1, 2]", '"search"', "null", "12", '{"action": ["search"]}', '{"action": {"a": 1}}'],
)
def test_messages_of_another_shape_are_answered(page, message):
    page.send_raw(message)
    html = unescape(page.receive())
    assert "unreadable" in html or "Invalid action to process" in html
    assert "[" not in html.split("Invalid action to process:")[-1]


def test_a_socket_opened_before_logout_does_nothing_after_it(
    researcher, source_server, destination_server
):
    page = Page(researcher)
    page.connect()
    page.browser.logout()
    page.send("transfer", **_transfer_fields(source_server, destination_server))
    assert "Your session has ended" in page.receive()
    assert page.receive_close() == 4401
    assert not SelectiveTransferJob.objects.exists()
    page.close()


def test_a_deactivated_user_is_closed_out(researcher, source_server):
    page = Page(researcher)
    page.connect()
    researcher.is_active = False
    researcher.save()
    page.send("search", source=source_server.pk, patient_id="X")
    assert "Your session has ended" in page.receive()
    assert page.receive_close() == 4401
    page.close()


def test_a_session_of_another_user_is_closed_out(researcher, staff_user, source_server):
    other = Client()
    other.force_login(staff_user)
    page = Page(researcher, session_key=other.session.session_key)
    page.connect()
    page.send("search", source=source_server.pk, patient_id="X")
    assert "Your session has ended" in page.receive()
    assert page.receive_close() == 4401
    page.close()


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_rows_with_ids_that_cannot_name_the_study_are_shown_but_not_selectable():
    dataset = Dataset()
    dataset.PatientID = "P1"
    dataset.PatientName = "Doe^Jane"
    dataset.StudyInstanceUID = "1.2.3'+alert(document.domain)+'"
    dataset.StudyDate = "20240724"
    row = study_row(dataset, server_id=1)
    html = results_html([row], "", "", may_download=True)
    # Shown once, as text in the row's explanation, and in no attribute.
    assert html.count("alert(document.domain)") == 1
    assert "the Study Instance UID “1.2.3&#x27;+alert(document.domain)+&#x27;” is not" in html
    assert 'name="selected_studies"' not in html
    assert 'data-testid="download-button"' not in html
    assert "Cannot be transferred or downloaded: the Study Instance UID" in html
    assert "Doe, Jane" in html


def test_a_multi_valued_patient_id_is_shown_as_dicom_writes_it(page):
    dataset = Dataset()
    dataset.PatientID = ["P1", "P2"]
    dataset.StudyInstanceUID = "1.2.3"
    row = study_row(dataset, server_id=1)
    assert row["patient_id"] == "P1\\P2"
    assert "backslash" in row["unusable"]
    assert not row["reference"] and not row["download"]


def test_a_study_ticked_twice_is_transferred_once(
    page, researcher, source_server, destination_server
):
    page.send(
        "transfer",
        **_transfer_fields(
            source_server, destination_server, selected_studies=["P1\\1.2.3", "P1\\1.2.3"]
        ),
    )
    assert "Successfully submitted" in page.receive()
    assert SelectiveTransferJob.objects.get(owner=researcher).tasks.count() == 1


def test_tasks_name_the_studies_as_the_search_showed_them_before_they_run(
    page, researcher, source_server, destination_server, orthanc1_studies
):
    study = orthanc1_studies[0]
    page.send("search", source=source_server.pk, patient_id=study.patient_id)
    html = page.receive_until("results-table")
    while "still searching" in html:
        html = page.receive()
    page.send(
        "transfer",
        source=source_server.pk,
        destination=destination_server.pk,
        pseudonym="SUBJ-9",
        selected_studies=[f"{study.patient_id}\\{study.study_instance_uid}"],
    )
    assert "Successfully submitted transfer job" in page.receive()
    (task,) = SelectiveTransferJob.objects.get(owner=researcher).tasks.all()
    assert task.study_date.strftime("%Y%m%d") == study.study_date
    assert task.study_description == study.study_description
    assert task.modalities == sorted(set(study.modalities))
