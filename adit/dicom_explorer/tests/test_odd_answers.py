"""Answers a real Orthanc never gives, from a PACS made here with pynetdicom: one UID that
names two studies, series or instances, and more answers than the explorer reads when it
filters them itself. Each is a message on the page, never a wrong page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.urls import reverse
from pydicom import Dataset
from pydicom.uid import CTImageStorage

from adit.core.models import DicomServer
from adit.core.tests.factories import grant
from adit.core.tests.fake_pacs import FakePacs

pytestmark = pytest.mark.django_db

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.2"
SOP_UID = "1.2.826.0.1.3680043.8.498.3"


def answer(level: str, **values) -> Dataset:
    dataset = Dataset()
    dataset.QueryRetrieveLevel = level
    dataset.PatientID = "P1"
    dataset.PatientName = "Odd^Answer"
    dataset.StudyInstanceUID = STUDY_UID
    dataset.StudyDate = "20240101"
    if level in ("SERIES", "IMAGE"):
        dataset.SeriesInstanceUID = SERIES_UID
        dataset.Modality = "CT"
    if level == "IMAGE":
        dataset.SOPInstanceUID = SOP_UID
        dataset.SOPClassUID = CTImageStorage
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    return dataset


class OddPacs:
    """A study-root C-FIND SCP that answers each level with the datasets a test gives it."""

    def __init__(self) -> None:
        self.answers: dict[str, list[Dataset]] = {}

    def handle_find(self, event):
        level = str(event.identifier.get("QueryRetrieveLevel", ""))
        for dataset in self.answers.get(level, []):
            if event.is_cancelled:
                return
            yield 0xFF00, dataset


@pytest.fixture
def odd_pacs(explorer_user) -> Iterator[tuple[OddPacs, DicomServer]]:
    pacs = OddPacs()
    with FakePacs("ODDPACS", find=pacs.handle_find) as fake:
        server = fake.server("Odd PACS", study_root_find_support=True)
        grant(server, explorer_user.active_group, source=True)
        yield pacs, server


def _url(name: str, *args) -> str:
    return reverse(f"dicom_explorer:{name}", args=args)


@pytest.mark.parametrize(
    "level, page, message",
    [
        ("STUDY", "study_detail", f"Multiple studies found with Study Instance UID {STUDY_UID}."),
        (
            "SERIES",
            "series_detail",
            f"Multiple series found with Series Instance UID {SERIES_UID}.",
        ),
        (
            "IMAGE",
            "instance_detail",
            f"Multiple instances found with SOP Instance UID {SOP_UID}.",
        ),
    ],
)
def test_one_uid_naming_two_studies_series_or_instances_is_said(
    logged_in, odd_pacs, level, page, message
):
    pacs, server = odd_pacs
    pacs.answers = {name: [answer(name)] for name in ("STUDY", "SERIES", "IMAGE")}
    pacs.answers[level].append(answer(level, StudyDescription="The other one"))
    uids = {
        "study_detail": (STUDY_UID,),
        "series_detail": (STUDY_UID, SERIES_UID),
        "instance_detail": (STUDY_UID, SERIES_UID, SOP_UID),
    }[page]

    response = logged_in.get(_url(page, server.pk, *uids))

    assert response.status_code == 409
    assert message in response.content.decode()


def test_a_list_cut_after_the_explorers_own_filtering_says_there_may_be_more(
    logged_in, odd_pacs, monkeypatch
):
    """A PACS without patient-level queries: the patient list comes from studies, and a
    person's page reads a bounded number of them."""
    monkeypatch.setattr("adit.dicom_explorer.queries.MAX_RESULTS", 3)
    pacs, server = odd_pacs
    # 8 patients with 20 studies each: the 40 answers read (4 results × 10) hold 2 patients.
    pacs.answers = {
        "STUDY": [
            answer("STUDY", PatientID=f"P{patient}", StudyInstanceUID=f"1.2.{patient}.{study}")
            for patient in range(8)
            for study in range(20)
        ]
    }
    page = logged_in.get(_url("patient_list", server.pk)).content.decode()
    assert page.count('data-testid="patient-row"') == 2
    assert 'data-testid="more-results"' in page

    # All answers read: no notice, whatever the filtering dropped.
    pacs.answers["STUDY"] = pacs.answers["STUDY"][:30]
    page = logged_in.get(_url("patient_list", server.pk)).content.decode()
    assert page.count('data-testid="patient-row"') == 2
    assert 'data-testid="more-results"' not in page
