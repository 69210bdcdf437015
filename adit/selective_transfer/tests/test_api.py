"""Selective transfer jobs through the REST API: ``/api/transfer-jobs/`` (the rules of the body
are tested once, in the core, with the example app)."""

from __future__ import annotations

import pytest

from adit.core.models import SectionLock
from adit.core.tests.factories import DicomServerFactory, grant
from adit.selective_transfer.models import SelectiveTransferJob
from adit.token_authentication.models import Token

BODY = {
    "source": "Clinical PACS",
    "destination": "Research PACS",
    "studies": [{"study_uid": "1.2.3", "patient_id": "4711"}],
    "pseudonym": "SUBJ-1",
}


@pytest.fixture
def token(researcher) -> str:
    grant(DicomServerFactory(name="Clinical PACS"), researcher.active_group, source=True)
    grant(DicomServerFactory(name="Research PACS"), researcher.active_group, destination=True)
    _, plain = Token.objects.create_token(researcher, "script")
    return plain


def _post(client, token: str):
    return client.post(
        "/api/transfer-jobs/",
        BODY,
        content_type="application/json",
        headers={"Authorization": f"Token {token}"},
    )


@pytest.mark.django_db
def test_a_script_creates_a_selective_transfer_job(client, researcher, token):
    response = _post(client, token)

    assert response.status_code == 201, response.json()
    job = SelectiveTransferJob.objects.get()
    assert (response.json()["id"], job.owner) == (job.pk, researcher)
    (task,) = job.tasks.all()
    assert (task.source.name, task.destination.name) == ("Clinical PACS", "Research PACS")
    assert (task.patient_id, task.study_uid, task.pseudonym) == ("4711", "1.2.3", "SUBJ-1")
    assert response.json()["tasks"][0]["id"] == task.pk


@pytest.mark.django_db
def test_no_job_is_created_while_staff_lock_selective_transfer(client, token):
    SectionLock.objects.create(namespace="selective_transfer", reason="PACS migration")

    response = _post(client, token)

    assert response.status_code == 503
    assert response.json() == {
        "detail": "Selective Transfer is locked by staff for now. Please try again later. "
        "Reason: PACS migration"
    }
    assert not SelectiveTransferJob.objects.exists()
