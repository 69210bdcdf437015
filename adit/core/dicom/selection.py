"""What of a study to retrieve: all of it, some of its series, or one instance."""

from __future__ import annotations

from dataclasses import dataclass

from adit.core import validators


@dataclass(frozen=True)
class StudySelection:
    """A study, or some of its series, or one of its instances, at one PACS.

    The transfer pipeline, the study download, the explorer's previews and the DICOMweb API
    all name what they retrieve with this value, so that every fetch takes the same shape.

    Attributes:
        patient_id: The PatientID the PACS has the study under ("" if unknown; PACS that
            need it for patient-root retrieves then cannot be asked).
        study_uid: The StudyInstanceUID.
        series_uids: Only these series, in this order; empty: the whole study.
        sop_uid: Only this instance (of the one series in ``series_uids``).
    """

    patient_id: str
    study_uid: str
    series_uids: tuple[str, ...] = ()
    sop_uid: str = ""

    def __post_init__(self) -> None:
        # The values end up in C-FIND/C-MOVE identifiers and in DICOMweb URLs: a UID that is
        # no UID must never get that far.
        validators.validate_uid(self.study_uid)
        for uid in self.series_uids:
            validators.validate_uid(uid)
        if self.sop_uid:
            validators.validate_uid(self.sop_uid)
            if len(self.series_uids) != 1:
                raise ValueError("An instance is selected within exactly one series.")
        if len(set(self.series_uids)) != len(self.series_uids):
            raise ValueError("A series is selected twice.")

    @property
    def whole_study(self) -> bool:
        return not self.series_uids

    @property
    def level(self) -> str:
        """The retrieve level of this selection: STUDY, SERIES or IMAGE."""
        if self.sop_uid:
            return "IMAGE"
        return "SERIES" if self.series_uids else "STUDY"
