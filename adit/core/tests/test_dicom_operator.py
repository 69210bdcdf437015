"""DicomOperator against real Orthanc servers, over DIMSE and DICOMweb.

The servers are DicomServer rows as staff would configure them; which protocol the operator may
use comes from their flags, exactly as in production.
"""

from __future__ import annotations

import datetime
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from pydicom import Dataset

from adit.core.demo.orthanc import OrthancServer, free_ports
from adit.core.demo.synthetic import StudySummary, describe_studies, generate_studies
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.file_channel import ChannelAuthenticationError
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.query import Level, Query
from adit.core.models import DicomServer
from tests.orthanc_fixtures import DCMTK_ENV, dcmtk

pytestmark = pytest.mark.integration

DIMSE_FLAGS = {
    "get": {"study_root_find_support": True, "study_root_get_support": True},
    "move": {"study_root_find_support": True, "study_root_move_support": True},
    "patient_root": {"patient_root_find_support": True, "patient_root_get_support": True},
}


def dimse_server(orthanc: OrthancServer, kind: str = "get", **overrides) -> DicomServer:
    fields = {
        "name": orthanc.ae_title,
        "ae_title": orthanc.ae_title,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "store_scp_support": True,
        **DIMSE_FLAGS[kind],
    }
    return DicomServer(**(fields | overrides))


def dicomweb_server(orthanc: OrthancServer) -> DicomServer:
    return DicomServer(
        name=f"{orthanc.ae_title} web",
        ae_title=f"{orthanc.ae_title}W",
        dicomweb_root_url=orthanc.dicomweb_root,
        dicomweb_qido_support=True,
        dicomweb_wado_support=True,
        dicomweb_stow_support=True,
    )


@pytest.fixture(params=["dimse", "dicomweb"])
def source(request, orthanc1) -> DicomServer:
    return dimse_server(orthanc1) if request.param == "dimse" else dicomweb_server(orthanc1)


def _by_patient(studies: list[StudySummary], patient_id: str) -> set[str]:
    return {study.study_instance_uid for study in studies if study.patient_id == patient_id}


def _findscu_study_count(orthanc: OrthancServer, tmp_path: Path, *keys: str) -> int:
    subprocess.run(
        [
            dcmtk("findscu"),
            "-S",
            "-aet",
            "ADITTEST",
            "-aec",
            orthanc.ae_title,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID",
            *[part for key in keys for part in ("-k", key)],
            "-X",
            "-od",
            str(tmp_path),
            "127.0.0.1",
            str(orthanc.dicom_port),
        ],
        env=DCMTK_ENV,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return len(list(tmp_path.glob("rsp*.dcm")))


# -- queries ------------------------------------------------------------------------------


def test_find_studies_of_a_patient(source, orthanc1, orthanc1_studies, tmp_path):
    patient_id = orthanc1_studies[1].patient_id
    found = list(DicomOperator(source).find_studies(PatientID=patient_id))
    assert {str(study.StudyInstanceUID) for study in found} == _by_patient(
        orthanc1_studies, patient_id
    )
    assert {study.PatientID for study in found} == {patient_id}
    assert _findscu_study_count(orthanc1, tmp_path, f"PatientID={patient_id}") == len(found)


def test_one_series_of_a_study_by_its_uid_within_a_limit(source, orthanc1_studies):
    study = max(orthanc1_studies, key=lambda study: len(study.series))
    assert len(study.series) > 2
    operator = DicomOperator(source)
    for series in study.series:  # some are beyond the first two answers of a whole list
        wanted = series.series_instance_uid
        query = Query.create(
            Level.SERIES, StudyInstanceUID=study.study_instance_uid, SeriesInstanceUID=wanted
        )
        found = list(operator.find(query, limit=2))
        assert [str(item.SeriesInstanceUID) for item in found] == [wanted]


def test_find_studies_by_name_wildcard_with_non_ascii_letters(source, orthanc1_studies):
    found = list(DicomOperator(source).find_studies(PatientName="jäger*"))
    assert {str(study.PatientName) for study in found} == {"Jäger^Günther"}
    assert len(found) == 2


def test_find_studies_in_a_date_range(source, orthanc1_studies):
    start, end = datetime.date(2021, 1, 1), datetime.date(2023, 12, 31)
    expected = {
        study.study_instance_uid
        for study in orthanc1_studies
        if start <= datetime.datetime.strptime(study.study_date, "%Y%m%d").date() <= end
    }
    found = DicomOperator(source).find_studies(StudyDate=(start, end))
    assert {str(study.StudyInstanceUID) for study in found} == expected
    assert expected  # the range is not empty by accident


def test_modalities_filter_keeps_studies_with_any_of_them(source, orthanc1_studies):
    found = DicomOperator(source).find_studies(ModalitiesInStudy=["MR", "PR"])
    expected = {
        study.study_instance_uid
        for study in orthanc1_studies
        if {"MR", "PR"} & set(study.modalities)
    }
    assert {str(study.StudyInstanceUID) for study in found} == expected
    assert len(expected) < len(orthanc1_studies)


def test_result_limit_stops_the_query(source, orthanc1_studies):
    found = list(DicomOperator(source).find_studies(limit=3, AccessionNumber="A0042*"))
    assert len(found) == 3


def test_find_series_and_images(source, orthanc1_studies):
    study = orthanc1_studies[0]
    operator = DicomOperator(source)
    series = list(operator.find_series(study.study_instance_uid))
    assert {str(item.SeriesInstanceUID) for item in series} == {
        item.series_instance_uid for item in study.series
    }
    first = study.series[0]
    images = list(operator.find_images(study.study_instance_uid, first.series_instance_uid))
    assert sorted(str(image.SOPInstanceUID) for image in images) == sorted(first.sop_instance_uids)


def test_patient_root_only_server_needs_an_exact_patient_id(orthanc1, orthanc1_studies):
    operator = DicomOperator(dimse_server(orthanc1, "patient_root"))
    study = orthanc1_studies[0]
    found = list(operator.find_studies(PatientID=study.patient_id))
    assert study.study_instance_uid in {str(item.StudyInstanceUID) for item in found}
    with pytest.raises(DicomError, match="only supports patient root queries"):
        list(operator.find_studies(PatientName="*"))


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"PatientID": "12\\34"}, "backslash"),
        ({"StudyInstanceUID": "1.2.abc"}, "digits and dots"),
        ({"StudyDate": "2024-13-01"}, "not a date"),
        ({"StudyDate": (datetime.date(2024, 2, 1), datetime.date(2024, 1, 1))}, "starts after"),
        ({"SeriesInstanceUID": "1.2"}, "not a query key at STUDY level"),
        ({"ModalitiesInStudy": "CT\x00"}, "control characters"),
    ],
)
def test_malformed_query_values_are_refused_before_anything_is_sent(filters, message):
    server = DicomServer(name="Nowhere", ae_title="NOWHERE", host="127.0.0.1", port=9)
    with pytest.raises(ValidationError, match=message):
        list(DicomOperator(server).find_studies(**filters))


# -- fetching -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["C-GET", "WADO-RS"])
def test_fetch_study_delivers_each_instance_once(protocol, orthanc1, orthanc1_studies):
    server = dimse_server(orthanc1) if protocol == "C-GET" else dicomweb_server(orthanc1)
    study = orthanc1_studies[2]
    received: list[Dataset] = []
    count = DicomOperator(server).fetch_study(
        study.patient_id, study.study_instance_uid, received.append
    )
    uids = [str(dataset.SOPInstanceUID) for dataset in received]
    expected = sorted(uid for series in study.series for uid in series.sop_instance_uids)
    assert sorted(uids) == expected
    assert count == len(expected)
    assert {dataset.PatientID for dataset in received} == {study.patient_id}
    assert all("PixelData" in dataset for dataset in received if dataset.Modality == "CT")


@pytest.mark.parametrize("protocol", ["C-GET", "WADO-RS"])
def test_fetch_series_delivers_only_that_series(protocol, orthanc1, orthanc1_studies):
    server = dimse_server(orthanc1) if protocol == "C-GET" else dicomweb_server(orthanc1)
    study = orthanc1_studies[0]
    series = study.series[0]
    received: list[Dataset] = []
    DicomOperator(server).fetch_series(
        study.patient_id, study.study_instance_uid, series.series_instance_uid, received.append
    )
    assert sorted(str(item.SOPInstanceUID) for item in received) == sorted(series.sop_instance_uids)


def test_exception_in_the_callback_stops_the_fetch_and_is_raised(orthanc1, orthanc1_studies):
    study = orthanc1_studies[0]
    received: list[Dataset] = []

    def fail_on_third(dataset: Dataset) -> None:
        received.append(dataset)
        if len(received) == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        DicomOperator(dimse_server(orthanc1)).fetch_study(
            study.patient_id, study.study_instance_uid, fail_on_third
        )
    assert len(received) == 3


def test_server_without_fetch_service_says_what_to_enable(orthanc1, orthanc1_studies):
    server = dimse_server(orthanc1, "get", study_root_get_support=False)
    study = orthanc1_studies[0]
    with pytest.raises(DicomError, match="enable WADO-RS, C-GET or C-MOVE"):
        DicomOperator(server).fetch_study(study.patient_id, study.study_instance_uid, print)


# -- storing ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["C-STORE", "STOW-RS"])
def test_store_puts_every_instance_into_the_destination(protocol, empty_orthanc2):
    server = (
        dimse_server(empty_orthanc2) if protocol == "C-STORE" else dicomweb_server(empty_orthanc2)
    )
    datasets = list(generate_studies(seed=7, patients=1))
    result = DicomOperator(server).store(iter(datasets))
    assert (result.stored, result.converted, result.refused) == (len(datasets), {}, [])
    for study_uid in {str(dataset.StudyInstanceUID) for dataset in datasets}:
        expected = sorted(
            str(dataset.SOPInstanceUID)
            for dataset in datasets
            if str(dataset.StudyInstanceUID) == study_uid
        )
        assert empty_orthanc2.study_instance_uids(study_uid) == expected


# -- errors a user meets ------------------------------------------------------------------


def test_closed_port_gives_connection_refused_quickly():
    (port,) = free_ports(1)
    server = DicomServer(
        name="Old PACS",
        ae_title="OLDPACS",
        host="127.0.0.1",
        port=port,
        study_root_find_support=True,
    )
    started = time.monotonic()
    with pytest.raises(RetriableDicomError, match="connection refused"):
        list(DicomOperator(server).find_studies(PatientID="1"))
    assert time.monotonic() - started < 15


def test_check_connection_reports_round_trip_or_reason(orthanc1):
    check = DicomOperator(dimse_server(orthanc1)).check_connection()
    assert check.ok, check.message
    assert check.protocol == "C-ECHO"
    web = DicomOperator(dicomweb_server(orthanc1)).check_connection()
    assert web.ok, web.message
    assert web.protocol == "QIDO-RS"

    (port,) = free_ports(1)
    broken = DicomServer(name="Gone", ae_title="GONE", host="127.0.0.1", port=port)
    failed = DicomOperator(broken).check_connection()
    assert not failed.ok
    assert "connection refused" in failed.message


@pytest.fixture(scope="module")
def strict_orthanc(tmp_path_factory, orthanc1_studies):
    """An Orthanc that checks the called AE title and refuses C-GET (a C-MOVE-only PACS)."""
    server = OrthancServer(
        "STRICT",
        storage_dir=tmp_path_factory.mktemp("strict"),
        check_called_aet=True,
        allow_get=False,
    )
    server.start()
    try:
        server.upload(generate_studies(seed=42, patients=1))
        yield server
    finally:
        server.stop()


def test_wrong_called_ae_title_is_rejected_with_explanation(strict_orthanc):
    server = dimse_server(strict_orthanc, ae_title="NOTSTRICT")
    with pytest.raises(DicomError, match="rejected the association") as raised:
        list(DicomOperator(server).find_studies(PatientID="1"))
    assert not isinstance(raised.value, RetriableDicomError)
    assert "NOTSTRICT" in str(raised.value)


def test_pacs_killed_mid_fetch_gives_retriable_error_without_hanging(tmp_path):
    orthanc = OrthancServer("DOOMED", storage_dir=tmp_path / "doomed")
    orthanc.start()
    try:
        datasets = list(generate_studies(seed=3, patients=1))
        orthanc.upload(datasets)
        study = datasets[0]
        received: list[Dataset] = []

        def kill_after_first(dataset: Dataset) -> None:
            received.append(dataset)
            if len(received) == 1:
                assert orthanc.pid is not None
                subprocess.run(["kill", "-9", str(orthanc.pid)], check=True)

        server = dimse_server(orthanc)
        started = time.monotonic()
        with pytest.raises(RetriableDicomError):
            DicomOperator(server).fetch_study(
                str(study.PatientID), str(study.StudyInstanceUID), kill_after_first
            )
        assert time.monotonic() - started < 60
    finally:
        orthanc.stop()


# -- C-MOVE through ADIT's receiver ---------------------------------------------------------


def test_c_move_only_pacs_delivers_the_study_through_the_receiver(
    strict_orthanc, receiving, tmp_path
):
    strict_orthanc.add_modality("ADIT", "ADIT", "127.0.0.1", receiving.store_address[1])
    server = dimse_server(strict_orthanc, "move")
    study = next(iter(generate_studies(seed=42, patients=1)))
    expected = strict_orthanc.study_instance_uids(str(study.StudyInstanceUID))
    received: list[Dataset] = []
    count = DicomOperator(server).fetch_study(
        str(study.PatientID), str(study.StudyInstanceUID), received.append
    )
    assert sorted(str(item.SOPInstanceUID) for item in received) == expected
    assert count == len(expected)


def _fetch_at_once(
    server: DicomServer,
    patient_id: str,
    study_uid: str,
    *series_uids: str,
    all_running: threading.Event,
):
    """Fetches the study (series UID "") or each series on a thread of its own, all at once;
    returns the SOPInstanceUIDs each fetch received, in the order given. Each fetch takes its
    first instance only once ``all_running`` is set, so none can end before the others run."""
    received: list[list[str]] = [[] for _ in series_uids]
    errors: list[BaseException] = []
    start = threading.Barrier(len(series_uids), timeout=30)

    def fetch(index: int, series_uid: str) -> None:
        operator = DicomOperator(server)

        def take(dataset: Dataset) -> None:
            assert all_running.wait(timeout=30)
            received[index].append(str(dataset.SOPInstanceUID))

        try:
            start.wait()
            if series_uid:
                operator.fetch_series(patient_id, study_uid, series_uid, take)
            else:
                operator.fetch_study(patient_id, study_uid, take)
        except BaseException as err:
            errors.append(err)

    threads = [
        threading.Thread(target=fetch, args=(index, uid)) for index, uid in enumerate(series_uids)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return [sorted(uids) for uids in received]


@pytest.mark.parametrize("overlap", ["same study", "two series", "study and a series"])
def test_overlapping_c_moves_of_one_study_each_receive_every_instance(
    overlap, strict_orthanc, receiving, monkeypatch
):
    strict_orthanc.add_modality("ADIT", "ADIT", "127.0.0.1", receiving.store_address[1])
    registry = receiving.registry
    both_subscribed = threading.Event()
    add = registry.add

    def add_and_look(subscriber) -> None:
        add(subscriber)
        if len(registry) == 2:
            both_subscribed.set()

    monkeypatch.setattr(registry, "add", add_and_look)
    server = dimse_server(strict_orthanc, "move")
    (study,) = describe_studies(seed=42, patients=1)
    series = {item.series_instance_uid: sorted(item.sop_instance_uids) for item in study.series}
    whole = sorted(uid for uids in series.values() for uid in uids)
    first, second = list(series)[:2]
    wanted = {
        "same study": ("", ""),
        "two series": (first, second),
        "study and a series": ("", first),
    }[overlap]

    got = _fetch_at_once(
        server,
        study.patient_id,
        study.study_instance_uid,
        *wanted,
        all_running=both_subscribed,
    )

    assert got == [series[uid] if uid else whole for uid in wanted]


def test_c_get_is_not_used_for_a_c_move_only_pacs(strict_orthanc):
    """The strict Orthanc refuses C-GET; a server flagged C-GET would fail visibly."""
    server = dimse_server(strict_orthanc, "get")
    study = next(iter(generate_studies(seed=42, patients=1)))
    with pytest.raises(RetriableDicomError):
        DicomOperator(server).fetch_study(
            str(study.PatientID), str(study.StudyInstanceUID), lambda dataset: None
        )


def test_two_concurrent_c_moves_receive_only_their_own_instances(
    orthanc1, orthanc1_studies, receiving
):
    first, second = orthanc1_studies[0], orthanc1_studies[3]
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def fetch(study: StudySummary) -> None:
        received: list[str] = []
        try:
            DicomOperator(dimse_server(orthanc1, "move")).fetch_study(
                study.patient_id,
                study.study_instance_uid,
                lambda dataset: received.append(str(dataset.SOPInstanceUID)),
            )
        except BaseException as err:
            errors.append(err)
        results[study.study_instance_uid] = received

    threads = [threading.Thread(target=fetch, args=(study,)) for study in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    for study in (first, second):
        expected = sorted(uid for series in study.series for uid in series.sop_instance_uids)
        assert sorted(results[study.study_instance_uid]) == expected


def test_a_pacs_calling_with_another_ae_title_is_named_as_the_cause(
    orthanc1, orthanc1_studies, receiving
):
    """ADIT knows ORTHANC1 as OLDNAME; ORTHANC1 stores what it moves as ORTHANC1, so the
    receiver refuses it. The user must learn that, not just that instances went missing."""
    server = dimse_server(orthanc1, "move", ae_title="OLDNAME")
    study = orthanc1_studies[1]
    with pytest.raises(DicomError) as raised:
        DicomOperator(server).fetch_study(
            study.patient_id, study.study_instance_uid, lambda dataset: None
        )
    assert not isinstance(raised.value, RetriableDicomError)  # retrying cannot help
    message = str(raised.value)
    assert "ADIT's receiver refused them" in message
    assert re.search(r"\(\d+ from ORTHANC1\)", message)
    assert "another AE title than the OLDNAME under which ORTHANC1 is registered" in message


def test_missing_instances_are_named_not_passed_over(orthanc1, orthanc1_studies, receiving):
    """ORTHANC1 moves to a modality whose port nobody listens on: nothing can arrive."""
    orthanc1.add_modality("ADIT", "ADIT", "127.0.0.1", free_ports(1)[0])
    try:
        study = orthanc1_studies[1]
        with pytest.raises(
            RetriableDicomError,
            match=r"only 0 of the \d+ instance\(s\) it holds arrived, \d+ missing",
        ):
            DicomOperator(dimse_server(orthanc1, "move")).fetch_study(
                study.patient_id, study.study_instance_uid, lambda dataset: None
            )
    finally:
        orthanc1.add_modality("ADIT", "ADIT", "127.0.0.1", receiving.store_address[1])


def test_receiver_not_running_is_reported(orthanc1, orthanc1_studies, settings):
    settings.FILE_CHANNEL_PORT = free_ports(1)[0]
    study = orthanc1_studies[0]
    with pytest.raises(RetriableDicomError, match="receiver is not reachable"):
        DicomOperator(dimse_server(orthanc1, "move")).fetch_study(
            study.patient_id, study.study_instance_uid, lambda dataset: None
        )


def test_worker_with_another_file_channel_secret_is_refused(
    orthanc1, orthanc1_studies, receiving, settings
):
    settings.FILE_CHANNEL_SECRET = "not-the-secret-the-receiver-was-started-with"
    study = orthanc1_studies[0]
    received: list = []
    with pytest.raises(ChannelAuthenticationError, match="Set the same FILE_CHANNEL_SECRET"):
        DicomOperator(dimse_server(orthanc1, "move")).fetch_study(
            study.patient_id, study.study_instance_uid, received.append
        )
    assert received == []


def test_patient_root_only_server_fetches_with_the_patient_id(orthanc1, orthanc1_studies):
    study = orthanc1_studies[4]
    received: list[str] = []
    DicomOperator(dimse_server(orthanc1, "patient_root")).fetch_study(
        study.patient_id,
        study.study_instance_uid,
        lambda dataset: received.append(str(dataset.SOPInstanceUID)),
    )
    assert sorted(received) == sorted(
        uid for series in study.series for uid in series.sop_instance_uids
    )


def test_completeness_is_judged_series_by_series():
    """Extra instances of one series must not hide missing ones of another."""
    from adit.core.dicom.operator import _Arrivals

    arrivals = _Arrivals(lambda dataset: None)
    for number in range(3):
        dataset = Dataset()
        dataset.SOPInstanceUID = f"1.2.3.{number}"
        dataset.SeriesInstanceUID = "1.2.1"
        arrivals.deliver(dataset)

    assert arrivals.total == 3
    assert arrivals.is_short({"1.2.1": 2, "1.2.2": 1})
    assert not arrivals.is_short({"1.2.1": 3})
    assert "series 1.2.2: 0 of 1" in arrivals.shortfall({"1.2.1": 2, "1.2.2": 1})


def test_counts_a_pacs_answers_are_read_only_when_they_are_numbers():
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    from adit.core.dicom.query import count_of

    tag = Tag("NumberOfSeriesRelatedInstances")
    for value, count in ((b"12", 12), (b" 7", 7), (b"", None), (b"x ", None), (b"-1", None)):
        dataset = Dataset()  # as the PACS answered, before pydicom reads the value
        dataset[tag] = RawDataElement(tag, "IS", len(value), value, 0, False, True)
        assert count_of(dataset, "NumberOfSeriesRelatedInstances") == count, value
    assert count_of(Dataset(), "NumberOfSeriesRelatedInstances") is None


def test_a_c_get_asks_the_pacs_which_sop_classes_the_study_holds(orthanc1, orthanc1_studies):
    study = next(s for s in orthanc1_studies if "SR" in s.modalities)
    operator = DicomOperator(dimse_server(orthanc1))
    classes = operator._study_sop_classes(study.patient_id, study.study_instance_uid)
    assert classes is not None and "1.2.840.10008.5.1.4.1.1.88.11" in classes  # Basic Text SR
