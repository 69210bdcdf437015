"""How an instance is changed on its way: pseudonymized, or stamped with the trial; and
whether it goes at all. Transfers and the study download change instances only here."""

from __future__ import annotations

from pydicom import Dataset

from adit.core.dicom.files import forget_received
from adit.core.dicom.operator import SeriesCounts
from adit.core.transfer.pseudonymizer import Pseudonymizer

SeriesKey = tuple[str, str, str]  # PatientID, StudyInstanceUID, SeriesInstanceUID


def series_key(dataset: Dataset) -> SeriesKey:
    return (
        str(dataset.get("PatientID", "")),
        str(dataset.StudyInstanceUID),
        str(dataset.SeriesInstanceUID),
    )


class InstanceModifier:
    """Pseudonymizes or stamps one instance in place; says whether it goes on.

    It remembers where each of the source's series lands (pseudonymization gives it new UIDs)
    and what it left out, so the check at the destination can compare with the source.
    """

    def __init__(
        self,
        pseudonymizer: Pseudonymizer | None = None,
        *,
        excluded_modalities: set[str] | frozenset[str] = frozenset(),
        trial_protocol_id: str = "",
        trial_protocol_name: str = "",
    ):
        self.pseudonymizer = pseudonymizer
        self.excluded = excluded_modalities
        self.trial_protocol_id = trial_protocol_id
        self.trial_protocol_name = trial_protocol_name
        self.study_uid_at_destination = ""
        self.series_at_destination: dict[str, SeriesKey] = {}
        self.dropped: dict[str, int] = {}  # source series UID -> instances left out

    @property
    def changes_instances(self) -> bool:
        return bool(self.pseudonymizer or self.trial_protocol_id or self.trial_protocol_name)

    def __call__(self, dataset: Dataset) -> bool:
        source_series = str(dataset.get("SeriesInstanceUID", ""))
        if str(dataset.get("Modality", "")) in self.excluded:
            # Only series of kept modalities are fetched: this instance's own Modality
            # disagreed with its series'.
            self.dropped[source_series] = self.dropped.get(source_series, 0) + 1
            return False
        if self.changes_instances:
            # Never sent as it arrived, whatever the comparison with its bytes would find.
            forget_received(dataset)
        if self.pseudonymizer is not None:
            self.pseudonymizer.pseudonymize(dataset)
        else:
            if self.trial_protocol_id:
                dataset.ClinicalTrialProtocolID = self.trial_protocol_id
            if self.trial_protocol_name:
                dataset.ClinicalTrialProtocolName = self.trial_protocol_name
        self.study_uid_at_destination = str(dataset.StudyInstanceUID)
        if source_series not in self.series_at_destination:
            self.series_at_destination[source_series] = series_key(dataset)
        return True

    def expected_at_destination(self, counts: SeriesCounts) -> dict[SeriesKey, int]:
        """How many instances each series must have at the destination: as many as the source
        holds, less those left out on purpose."""
        expected: dict[SeriesKey, int] = {}
        for uid, count in counts.items():
            key = self.series_at_destination.get(uid)
            if key is not None:
                expected[key] = count - self.dropped.get(uid, 0)
        return expected
