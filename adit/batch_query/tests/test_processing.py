"""Each line against a real Orthanc holding a population built for it: the lookup rules,
the messages users know, and results that match what the PACS holds."""

from __future__ import annotations

import datetime

import pytest

from adit.batch_query.models import BatchQueryResult
from adit.core.jobs.statuses import JobStatus, TaskStatus

from .conftest import TWIN_PATIENT_ID, run_lines

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _uids(task) -> list[str]:
    return list(BatchQueryResult.objects.filter(task=task).values_list("study_uid", flat=True))


def _studies_of(population, patient_id, modalities=(), start="", end="99999999"):
    found = [
        study
        for study in population
        if study.patient_id == patient_id
        and (not modalities or set(modalities) & set(study.modalities))
        and start <= study.study_date <= end
    ]
    return sorted(found, key=lambda study: (study.study_date, study.study_time))


def test_studies_of_a_patient_by_id_with_any_of_several_modalities_in_a_date_range(
    researcher, population_server, population
):
    patient_id = population[10].patient_id
    everything = _studies_of(population, patient_id)
    start, end = everything[0].study_date, everything[-2].study_date
    wanted = _studies_of(population, patient_id, ("CT", "MR"), start, end)
    assert wanted, "the population should give this patient CT or MR studies in the range"

    job, [task] = run_lines(
        researcher,
        population_server,
        f'PatientID,Modality,From,Until\n{patient_id},"CT, MR",{start},{end}\n',
    )

    assert (task.status, task.message) == (
        TaskStatus.SUCCESS,
        f"{len(wanted)} {'study' if len(wanted) == 1 else 'studies'} found",
    )
    assert _uids(task) == [study.study_instance_uid for study in wanted]
    first = BatchQueryResult.objects.filter(task=task).first()
    assert first is not None
    assert (first.patient_id, first.patient_name) == (patient_id, wanted[0].patient_name)
    assert first.study_date == datetime.datetime.strptime(wanted[0].study_date, "%Y%m%d").date()
    assert first.study_description == wanted[0].study_description
    assert first.modalities == list(wanted[0].modalities)
    assert first.image_count == wanted[0].instance_count
    assert first.accession_number == wanted[0].accession_number
    # One study query, the modalities matched on its answers, which also name the patient.
    assert (task.progress_done, task.progress_total) == (1, 1)
    assert job.status == JobStatus.SUCCESS


def test_a_known_patient_without_matching_studies_is_not_a_missing_patient(
    researcher, population_server, population
):
    _, [task] = run_lines(
        researcher, population_server, f"PatientID,Modality\n{population[0].patient_id},XA\n"
    )

    assert (task.status, task.message) == (TaskStatus.SUCCESS, "0 studies found")
    # The PACS answered studies of the patient (no XA among them): no patient query needed.
    assert (task.progress_done, task.progress_total) == (1, 1)

    _, [long_ago] = run_lines(
        researcher,
        population_server,
        f"PatientID,Modality,Until\n{population[0].patient_id},CT,1990-01-01\n",
    )
    assert (long_ago.status, long_ago.message) == (TaskStatus.SUCCESS, "0 studies found")
    # No study at all: a patient query told "no such study" from "no such patient".
    assert (long_ago.progress_done, long_ago.progress_total) == (2, 2)


def test_the_patient_lookup_rules_and_their_messages(researcher, population_server, population):
    study = population[0]
    family, given = study.patient_name.split("^")
    birth = datetime.datetime.strptime(study.patient_birth_date, "%Y%m%d").date()
    lines = (
        "PatientID,PatientName,PatientBirthDate,Modality\n"
        "NOBODY-0000,,,CT\n"
        f'{study.patient_id},"Nobody, Else",,CT\n'
        f"{study.patient_id},,1900-01-01,CT\n"
        f'{study.patient_id},"{family.upper()}, {given}",{birth},CT\n'
        f',"Nobody, Else",1900-01-01,CT\n'
    )

    job, tasks = run_lines(researcher, population_server, lines)

    assert [(task.status, task.message) for task in tasks[:4]] == [
        (TaskStatus.FAILURE, "No patient found with this PatientID."),
        (TaskStatus.FAILURE, "PatientName doesn't match found patient by PatientID."),
        (TaskStatus.FAILURE, "PatientBirthDate doesn't match found patient by PatientID."),
        (TaskStatus.SUCCESS, tasks[3].message),
    ]
    assert tasks[3].message.endswith("found")
    assert (tasks[4].status, tasks[4].message) == (
        TaskStatus.FAILURE,
        "No patient found with this PatientName and PatientBirthDate.",
    )
    assert job.status == JobStatus.FAILURE


def test_a_name_and_birth_date_shared_by_two_patients_is_a_warning(
    researcher, population_server, population
):
    study = population[0]
    family, given = study.patient_name.split("^")
    birth = datetime.datetime.strptime(study.patient_birth_date, "%Y%m%d").date()

    _, [task] = run_lines(
        researcher,
        population_server,
        "PatientName,PatientBirthDate,Modality\n"
        f'"{family}, {given}",{birth:%d.%m.%Y},"CT, MR, CR, US"\n',
    )

    patients = set(BatchQueryResult.objects.filter(task=task).values_list("patient_id", flat=True))
    assert patients == {study.patient_id, TWIN_PATIENT_ID}
    assert task.status == TaskStatus.WARNING
    assert task.message.endswith(
        "Indistinct patients: studies of multiple patients were found for this query."
    )


def test_series_by_description_or_number(researcher, population_server, population):
    patient_id = population[0].patient_id
    studies = _studies_of(population, patient_id)
    lines = (
        "PatientID,Modality,SeriesDescription,SeriesNumber\n"
        f'{patient_id},"CT,MR,CR,US",,1\n'
        f"{patient_id},CT,*Br4?,\n"
    )

    _, [by_number, by_description] = run_lines(researcher, population_server, lines)

    first_series = [study.series[0] for study in studies]
    assert by_number.message == f"{len(first_series)} series found"
    results = BatchQueryResult.objects.filter(task=by_number)
    assert [result.series_uid for result in results] == [
        series.series_instance_uid for series in first_series
    ]
    assert {result.series_number for result in results} == {1}
    wanted = [
        series
        for study in studies
        for series in study.series
        if series.modality == "CT" and series.series_description.endswith(("Br40",))
    ]
    found = BatchQueryResult.objects.filter(task=by_description)
    assert [(r.series_uid, r.series_description) for r in found] == [
        (series.series_instance_uid, series.series_description) for series in wanted
    ]
    assert all(result.modalities == ["CT"] for result in found)


def test_an_accession_number_finds_its_study_without_a_modality(
    researcher, population_server, population
):
    study = population[23]

    _, [task] = run_lines(
        researcher,
        population_server,
        f"PatientID,AccessionNumber\n{study.patient_id},{study.accession_number}\n",
    )

    assert task.message == "1 study found"
    assert _uids(task) == [study.study_instance_uid]


def test_a_line_run_again_replaces_its_results(researcher, population_server, population):
    study = population[5]
    job, [task] = run_lines(
        researcher,
        population_server,
        f"PatientID,AccessionNumber\n{study.patient_id},{study.accession_number}\n",
    )
    job.restart()
    from adit.core.jobs.processing import run_task

    run_task(None, task._meta.label_lower, task.pk)

    assert _uids(task) == [study.study_instance_uid]


def test_a_failed_run_leaves_no_results_of_an_earlier_one(
    researcher, population_server, population
):
    from adit.core.jobs.processing import run_task

    study = population[5]
    job, [task] = run_lines(
        researcher,
        population_server,
        f"PatientID,AccessionNumber\n{study.patient_id},{study.accession_number}\n",
    )
    assert _uids(task) == [study.study_instance_uid]
    population_server.study_root_find_support = False  # it can no longer be searched
    population_server.save()
    job.restart()

    run_task(None, task._meta.label_lower, task.pk)

    task.refresh_from_db()
    assert task.status == TaskStatus.FAILURE
    assert "cannot be searched" in task.message
    assert _uids(task) == []


def test_a_pacs_that_leaves_out_modalities_in_study_is_asked_per_modality():
    """A real Orthanc always answers ModalitiesInStudy, so this PACS is faked."""
    from pydicom import Dataset

    from adit.batch_query.models import BatchQueryTask
    from adit.batch_query.processing import BatchQueryProcessor

    def study(uid: str, modalities: str = "") -> Dataset:
        dataset = Dataset()
        dataset.PatientID, dataset.StudyInstanceUID, dataset.StudyDate = "P1", uid, "20240101"
        if modalities:
            dataset.ModalitiesInStudy = modalities
        return dataset

    asked: list[dict] = []

    def find(level, **filters):
        asked.append(filters)
        if "ModalitiesInStudy" not in filters:
            return [study("1.2.1"), study("1.2.2"), study("1.2.3")]
        return {"CT": [study("1.2.1")], "MR": [study("1.2.3"), study("1.2.1")]}[
            filters["ModalitiesInStudy"]
        ]

    processor = BatchQueryProcessor.__new__(BatchQueryProcessor)
    processor.task = BatchQueryTask(patient_id="P1", modalities=["CT", "MR"])
    processor.source = type("Server", (), {"name": "Fake PACS"})()  # pyright: ignore[reportAttributeAccessIssue]
    processor._find = find  # pyright: ignore[reportAttributeAccessIssue]

    found = processor._studies(["P1"])

    assert [str(item.StudyInstanceUID) for item in found] == ["1.2.1", "1.2.3"]
    assert [query.get("ModalitiesInStudy") for query in asked] == [None, "CT", "MR"]
