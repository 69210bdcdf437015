"""Many C-FINDs over one association, against a real Orthanc that closes idle associations
after a second and that the test restarts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from adit.core.demo.synthetic import describe_studies, generate_studies
from adit.core.dicom.dimse import DimseConnector
from adit.core.dicom.operator import DicomOperator
from adit.core.tests.test_dicom_operator import dimse_server
from tests.orthanc_fixtures import OrthancServer

pytestmark = pytest.mark.integration

IDLE_TIMEOUT = 1


class _ImpatientOrthanc(OrthancServer):
    """An Orthanc that closes an association after IDLE_TIMEOUT seconds without a request."""

    def _configuration(self) -> dict[str, Any]:
        return {**super()._configuration(), "DicomScpTimeout": IDLE_TIMEOUT}


@pytest.fixture(scope="module")
def impatient_orthanc(tmp_path_factory) -> Iterator[OrthancServer]:
    server = _ImpatientOrthanc("IMPATIENT", storage_dir=tmp_path_factory.mktemp("impatient"))
    with server:
        server.upload(generate_studies(seed=5, patients=1))
        yield server


@pytest.fixture
def associations(monkeypatch) -> list[object]:
    """Every association a DimseConnector opens, as it opens it."""
    opened: list[object] = []
    associate = DimseConnector.associate

    def recording_associate(self, *args, **kwargs):
        opened.append(args)
        return associate(self, *args, **kwargs)

    monkeypatch.setattr(DimseConnector, "associate", recording_associate)
    return opened


def test_fifty_queries_go_over_one_association(impatient_orthanc, associations):
    study = describe_studies(seed=5, patients=1)[0]
    operator = DicomOperator(dimse_server(impatient_orthanc))
    with operator.query_session() as session:
        for number in range(50):
            if number % 2:
                found = list(operator.find_studies(PatientID=study.patient_id))
                assert [str(item.StudyInstanceUID) for item in found] == [study.study_instance_uid]
            else:
                found = list(operator.find_series(study.study_instance_uid))
                assert len(found) == len(study.series)
    assert session.associations_opened == 1
    assert len(associations) == 1
    # Without a session every query has an association of its own.
    list(operator.find_studies(PatientID=study.patient_id))
    assert len(associations) == 2


def test_a_query_after_the_pacs_closed_the_association_still_answers(
    impatient_orthanc, associations
):
    study = describe_studies(seed=5, patients=1)[0]
    operator = DicomOperator(dimse_server(impatient_orthanc))

    def studies() -> list[str]:
        found = operator.find_studies(PatientID=study.patient_id)
        return [str(item.StudyInstanceUID) for item in found]

    with operator.query_session() as session:
        assert studies() == [study.study_instance_uid]
        time.sleep(IDLE_TIMEOUT + 1.5)  # Orthanc closes the idle association
        assert studies() == [study.study_instance_uid]
        assert session.associations_opened == 2

        impatient_orthanc.kill()
        impatient_orthanc.start()
        assert studies() == [study.study_instance_uid]
        assert session.associations_opened == 3
        assert studies() == [study.study_instance_uid]
        assert session.associations_opened == 3
    assert len(associations) == 3


def test_a_query_left_early_does_not_leave_its_answers_to_the_next(impatient_orthanc, associations):
    """A consumer that stops reading (or a limit) leaves answers on the way; the next query
    must get only its own."""
    study = describe_studies(seed=5, patients=1)[0]
    operator = DicomOperator(dimse_server(impatient_orthanc))
    with operator.query_session():
        series = operator.find_series(study.study_instance_uid)
        next(series)
        series.close()
        found = list(operator.find_studies(PatientID=study.patient_id))
        assert [str(item.StudyInstanceUID) for item in found] == [study.study_instance_uid]
        nested = [
            len(list(operator.find_images(study.study_instance_uid, str(item.SeriesInstanceUID))))
            for item in operator.find_series(study.study_instance_uid)
        ]
        assert nested == [len(item.sop_instance_uids) for item in study.series]
