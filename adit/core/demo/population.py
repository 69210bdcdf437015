"""A population of patients with many small studies, for what works on the query level
(batch query, its benchmark): several patients, several studies each, across modalities and
years, with the odd multi-modality study, series numbers and descriptions to match.

Each series holds one small image (or report), so a PACS holds thousands of studies in
seconds; the attributes a query looks at are as a real PACS would answer them.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Iterator

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from adit.core.demo.synthetic import SeriesSummary, StudySummary

_STORAGE = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "SR": "1.2.840.10008.5.1.4.1.1.88.11",
}
# Study description -> its series (modality, description).
_STUDY_KINDS = {
    "CT Thorax": [("CT", "Topogramm"), ("CT", "Thorax 1.0 B70f"), ("CT", "Thorax 5.0 Br40")],
    "CT Abdomen": [("CT", "Topogramm"), ("CT", "Abdomen 3.0 Br36"), ("SR", "Dose Report")],
    "MR Kopf": [("MR", "t1_se_tra"), ("MR", "t2_tse_tra"), ("MR", "flair_tra")],
    "MR Knie rechts": [("MR", "pd_tse_fs_cor"), ("MR", "t1_tse_sag")],
    "Roentgen Thorax": [("CR", "Thorax pa"), ("CR", "Thorax lat")],
    "Sono Abdomen": [("US", "Abdomen")],
}
_FAMILY_NAMES = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker"]
_GIVEN_NAMES = ["Anna", "Lukas", "Marie", "Felix", "Sophie", "Jonas", "Lea", "Paul", "Mia"]


def describe_population(
    patients: int, studies_per_patient: int, seed: int = 7
) -> list[StudySummary]:
    """What ``generate_population`` with the same arguments makes, study by study."""
    rng = random.Random(seed)
    studies: list[StudySummary] = []
    for number in range(patients):
        # Leading zeros on purpose: they must survive every spreadsheet on the way.
        patient_id = f"{seed:02d}{number:06d}"
        name = f"{rng.choice(_FAMILY_NAMES)}^{rng.choice(_GIVEN_NAMES)}"
        birth = datetime.date(1940, 1, 1) + datetime.timedelta(days=rng.randrange(60 * 365))
        for index in range(studies_per_patient):
            description = rng.choice(list(_STUDY_KINDS))
            day = datetime.date(2018, 1, 1) + datetime.timedelta(days=rng.randrange(7 * 365))
            time = datetime.time(rng.randrange(7, 19), rng.randrange(60), rng.randrange(60))
            study_uid = _uid(seed, number, index)
            series = tuple(
                SeriesSummary(
                    series_instance_uid=_uid(seed, number, index, series_number),
                    modality=modality,
                    series_number=series_number,
                    series_description=series_description,
                    sop_class_uid=_STORAGE[modality],
                    sop_instance_uids=(_uid(seed, number, index, series_number, 1),),
                )
                for series_number, (modality, series_description) in enumerate(
                    _STUDY_KINDS[description], start=1
                )
            )
            studies.append(
                StudySummary(
                    patient_id=patient_id,
                    patient_name=name,
                    patient_birth_date=birth.strftime("%Y%m%d"),
                    patient_sex=rng.choice("FM"),
                    study_instance_uid=study_uid,
                    accession_number=f"A{seed:02d}{number:05d}{index:02d}",
                    study_date=day.strftime("%Y%m%d"),
                    study_time=time.strftime("%H%M%S"),
                    study_description=description,
                    series=series,
                )
            )
    return studies


def generate_population(
    patients: int, studies_per_patient: int, seed: int = 7
) -> Iterator[Dataset]:
    """The instances of ``describe_population``: one 8x8 image (or a report) per series."""
    for study in describe_population(patients, studies_per_patient, seed):
        for series in study.series:
            yield _instance(study, series)


def _uid(*parts: int) -> str:
    return generate_uid(prefix="2.25.", entropy_srcs=["adit-population-v1", *map(str, parts)])


def _instance(study: StudySummary, series: SeriesSummary) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(series.sop_class_uid)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(series.sop_instance_uids[0])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = series.sop_class_uid
    ds.SOPInstanceUID = series.sop_instance_uids[0]
    ds.PatientID = study.patient_id
    ds.PatientName = study.patient_name
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.AccessionNumber = study.accession_number
    ds.StudyDescription = study.study_description
    ds.StudyID = "1"
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.SeriesNumber = series.series_number
    ds.SeriesDescription = series.series_description
    ds.Modality = series.modality
    ds.InstanceNumber = 1
    if series.modality == "SR":
        ds.ValueType = "CONTAINER"
        ds.ContinuityOfContent = "SEPARATE"
        ds.CompletionFlag = "COMPLETE"
        ds.VerificationFlag = "UNVERIFIED"
        return ds
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(64))
    return ds
