"""A server's "max. associations", counted where it matters: at the PACS. A proxy in front of a
real Orthanc's DICOM port counts the connections ADIT opens at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from pydicom import Dataset

from adit.core.demo.connection_counter import ConnectionCounter
from adit.core.demo.orthanc import OrthancServer
from adit.core.demo.synthetic import describe_ct_series, generate_ct_series
from adit.core.dicom.operator import DicomOperator
from adit.core.jobs.statuses import TaskStatus
from adit.core.tests.factories import run_transfer, server_for
from adit.core.tests.test_dicom_operator import dimse_server

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def counted_orthanc1(orthanc1: OrthancServer) -> Iterator[ConnectionCounter]:
    with ConnectionCounter(("127.0.0.1", orthanc1.dicom_port)) as counter:
        yield counter


def _behind(counter: ConnectionCounter, orthanc: OrthancServer, kind: str, limit: int):
    """A saved server for the Orthanc, reached through the counter."""
    server = dimse_server(orthanc, kind, port=counter.port, max_associations=limit)
    server.save()
    return server


def test_eight_threads_of_queries_never_open_more_than_two_associations(
    orthanc1, orthanc1_studies, counted_orthanc1
):
    server = _behind(counted_orthanc1, orthanc1, "get", limit=2)
    patients = sorted({study.patient_id for study in orthanc1_studies})
    expected = {
        patient: {s.study_instance_uid for s in orthanc1_studies if s.patient_id == patient}
        for patient in patients
    }
    answers: list[bool] = []
    errors: list[BaseException] = []

    def ask(operator: DicomOperator, thread: int) -> None:
        for round_ in range(3):
            patient = patients[(thread + round_) % len(patients)]
            found = operator.find_studies(PatientID=patient)
            answers.append({str(item.StudyInstanceUID) for item in found} == expected[patient])

    def query(thread: int) -> None:
        operator = DicomOperator(server)
        try:
            if thread % 2:  # one association for the three queries
                with operator.query_session():
                    ask(operator, thread)
            else:  # an association for each
                ask(operator, thread)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=query, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert answers == [True] * 24
    assert counted_orthanc1.total == 4 + 4 * 3
    assert counted_orthanc1.most_at_once == 2


@pytest.mark.parametrize("kind", ["get", "move"])
def test_at_a_limit_of_one_a_fetch_does_not_wait_for_itself(
    kind, orthanc1, orthanc1_studies, counted_orthanc1, receiving
):
    """A fetch asks the PACS several things (counts, SOP classes, the instances to expect)
    before it retrieves: each on an association of its own, one after the other."""
    server = _behind(counted_orthanc1, orthanc1, kind, limit=1)
    study = orthanc1_studies[0]
    received: list[Dataset] = []
    count = DicomOperator(server).fetch_study(
        study.patient_id, study.study_instance_uid, received.append
    )
    assert count == study.instance_count
    expected = {uid for series in study.series for uid in series.sop_instance_uids}
    assert {str(dataset.SOPInstanceUID) for dataset in received} == expected
    assert counted_orthanc1.total > 1
    assert counted_orthanc1.most_at_once == 1


def test_a_query_inside_the_loop_over_a_session_query_uses_the_same_association(
    orthanc1, orthanc1_studies, counted_orthanc1
):
    server = _behind(counted_orthanc1, orthanc1, "get", limit=1)
    study = orthanc1_studies[0]
    operator = DicomOperator(server)
    with operator.query_session() as session:
        images = {
            str(item.SeriesInstanceUID): len(
                list(operator.find_images(study.study_instance_uid, str(item.SeriesInstanceUID)))
            )
            for item in operator.find_series(study.study_instance_uid)
        }
    assert images == {series.series_instance_uid: series.instance_count for series in study.series}
    assert session.associations_opened == 1
    assert (counted_orthanc1.total, counted_orthanc1.most_at_once) == (1, 1)


@pytest.fixture
def orthanc2_with_a_study(empty_orthanc2: OrthancServer):
    empty_orthanc2.upload(generate_ct_series(12, rows=32, columns=32, seed=3))
    return empty_orthanc2, describe_ct_series(12, seed=3)


def test_a_transfer_within_one_server_takes_both_its_associations_at_once(
    member, orthanc2_with_a_study
):
    orthanc2, study = orthanc2_with_a_study
    with ConnectionCounter(("127.0.0.1", orthanc2.dicom_port)) as counter:
        server = server_for(orthanc2, port=counter.port, max_associations=2)
        task = run_transfer(
            member, server, server, study.patient_id, study.study_instance_uid, pseudonym="P1"
        )
    assert task.status == TaskStatus.SUCCESS, task.message
    assert counter.most_at_once == 2  # the fetch and the store


def test_a_transfer_within_a_server_that_allows_one_association_fails_at_once(
    member, orthanc2_with_a_study
):
    orthanc2, study = orthanc2_with_a_study
    server = server_for(orthanc2, max_associations=1)
    task = run_transfer(
        member, server, server, study.patient_id, study.study_instance_uid, pseudonym="P1"
    )
    assert task.status == TaskStatus.FAILURE
    assert "needs 2 associations to ORTHANC2 at the same time" in task.message
