"""What the source PACS holds of a study, and which of its series go.

Transfers and the study download both start here: one C-FIND for the study, one for its
series (with their instance counts, which the fetch and the check at the destination compare
with), and the rule which series a pseudonymized copy leaves out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from django.conf import settings
from pydicom import Dataset

from adit.core.dicom.errors import DicomError
from adit.core.dicom.operator import DicomOperator, SeriesCounts
from adit.core.dicom.selection import StudySelection


class StudyNotFoundError(DicomError):
    """The PACS does not hold the study (any more)."""


class Log(Protocol):
    def info(self, text: str) -> None: ...

    def warning(self, text: str) -> None: ...


@dataclass
class StudyToTransfer:
    """What the source PACS says about the study, and which of its series go."""

    patient_id: str  # as the source has the study, which may differ from what was asked
    study_uid: str
    study_date: str
    study_time: str
    study_description: str
    modalities: list[str]  # of the series that go
    series: list[Dataset]  # those that go
    whole_study: bool  # every series goes: one fetch for the study
    # SeriesInstanceUID -> instances to fetch, for the series that go.
    counts: SeriesCounts
    sop_uid: str = ""  # only this instance
    # Modality -> instances the source holds that stay behind (excluded when pseudonymizing).
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def expected_instances(self) -> int:
        return sum(self.counts.values())

    @property
    def fetch(self) -> StudySelection | None:
        """What to fetch: the whole study in one fetch, else the series (or the instance);
        None when no series goes."""
        if not self.counts:
            return None
        series = () if self.whole_study else tuple(self.counts)
        return StudySelection(self.patient_id, self.study_uid, series, self.sop_uid)


def excluded_modalities(pseudonymized: bool) -> set[str]:
    """The modalities a copy leaves out: those of settings.EXCLUDE_MODALITIES when it is
    pseudonymized (their series may carry burnt-in names: SR text, scanned documents)."""
    return set(settings.EXCLUDE_MODALITIES) if pseudonymized else set()


def kept_series(
    series: Iterable[Dataset], excluded: set[str], log: Log | None = None
) -> tuple[list[Dataset], dict[str, int]]:
    """The series that go, and per modality how many instances stay behind."""
    kept: list[Dataset] = []
    left_out: dict[str, int] = {}
    for item in series:
        modality = str(item.get("Modality", ""))
        if modality not in excluded:
            kept.append(item)
            continue
        count = int(item.NumberOfSeriesRelatedInstances)
        left_out[modality] = left_out.get(modality, 0) + count
        if log is not None:
            log.info(
                f"Series {item.SeriesInstanceUID} ({modality}, {count} instance(s)) left "
                "out: its modality is excluded when pseudonymizing."
            )
    return kept, left_out


def find_study(
    operator: DicomOperator,
    selection: StudySelection,
    *,
    pseudonymized: bool,
    log: Log | None = None,
) -> StudyToTransfer:
    """Asks the source for the study and its series, and decides what goes.

    A study the selection names under another PatientID than the source has is still found
    (the patient may have been merged or renamed since); the log gets a warning then.

    Raises:
        StudyNotFoundError: The source holds no such study, or no such series in it.
        DicomError: The study UID is not unique, or the source cannot be asked.
    """
    study_uid = selection.study_uid
    studies = (
        list(operator.find_studies(PatientID=selection.patient_id, StudyInstanceUID=study_uid))
        if selection.patient_id
        else []
    )
    if not studies:
        studies = list(operator.find_studies(StudyInstanceUID=study_uid))
    if not studies:
        raise StudyNotFoundError(f"No study found with Study Instance UID {study_uid}.")
    if len(studies) > 1:
        raise DicomError(f"Multiple studies found with Study Instance UID {study_uid}.")
    found = studies[0]
    patient_id = str(found.get("PatientID", ""))
    if selection.patient_id and patient_id != selection.patient_id and log is not None:
        log.warning(
            f"Mismatching patient IDs: the task names {selection.patient_id}, "
            f"{operator.server.name} has the study under {patient_id}."
        )

    all_series = operator.find_counted_series(patient_id, study_uid)
    if not all_series:
        raise StudyNotFoundError(f"No study found with Study Instance UID {study_uid}.")
    by_uid = {str(item.SeriesInstanceUID): item for item in all_series}
    chosen = all_series
    if selection.series_uids:
        missing = [uid for uid in selection.series_uids if uid not in by_uid]
        if missing:
            raise StudyNotFoundError(
                f"No series found with Series Instance UID {', '.join(missing)}."
            )
        chosen = [by_uid[uid] for uid in selection.series_uids]
    kept, left_out = kept_series(chosen, excluded_modalities(pseudonymized), log)
    counts = {
        str(item.SeriesInstanceUID): int(item.NumberOfSeriesRelatedInstances) for item in kept
    }
    if selection.sop_uid and counts:
        counts = dict.fromkeys(counts, 1)
    return StudyToTransfer(
        patient_id=patient_id,
        study_uid=study_uid,
        study_date=str(found.get("StudyDate", "")),
        study_time=str(found.get("StudyTime", "")),
        study_description=str(found.get("StudyDescription", "")),
        modalities=sorted({str(item.get("Modality", "")) for item in kept} - {""}),
        series=kept,
        whole_study=len(kept) == len(all_series) and not selection.sop_uid,
        counts=counts,
        sop_uid=selection.sop_uid,
        left_out=left_out,
    )


def left_out_text(left_out: dict[str, int]) -> str:
    """What a success message says about the series left out."""
    parts = ", ".join(f"{count} {modality}" for modality, count in sorted(left_out.items()))
    return (
        f"Left out: {parts} instance(s), as the modalities {', '.join(sorted(left_out))} are "
        "excluded when pseudonymizing (setting EXCLUDE_MODALITIES)."
    )
