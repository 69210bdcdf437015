"""The pseudonymizer, checked the way a data protection officer would check its output.

Instances from the synthetic generator get identifying data planted everywhere it turns up in
practice (nested sequences, private tags, SR content, file meta, overlays, free text in two
character sets). After pseudonymization the whole dataset, and the bytes it is written as, must
not hold any of it, while UIDs stay consistent and the instance stays valid DICOM.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import io
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from dicognito.anonymizer import Anonymizer
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from adit.core.demo import synthetic
from adit.core.transfer.pseudonymizer import Pseudonymizer, _date_offset_hours, _derive_seed
from adit.core.validators import validate_uid

SECRET = "project-secret-of-lung-study"
OTHER_SECRET = "project-secret-of-another-study"
PSEUDONYM = "LUNG-0042"
REPOSITORY_ROOT = Path(__file__).resolve().parents[3]


# -- Planted identifying data ----------------------------------------------------------------


@dataclass(frozen=True)
class PlantedPatient:
    """A patient whose identity is planted into an instance, in one character set."""

    character_set: str
    name: str
    # Every spelling of the patient's name that must not survive anywhere.
    name_spellings: tuple[str, ...]
    address: str
    # An alias with an extra name part, so the plain spellings come only from transliteration.
    other_names: str
    # How systems without the right character set wrote the name; only in free text.
    legacy_spellings: str


LATIN1_PATIENT = PlantedPatient(
    character_set="ISO_IR 100",
    name="Müller^Jürgen",
    name_spellings=(
        "Müller",
        "MÜLLER",
        "müller",
        "Mueller",
        "Muller",
        "MUELLER",
        "Jürgen",
        "JÜRGEN",
        "Juergen",
        "Jurgen",
    ),
    address="Bergheimer Straße 58, Heidelberg",
    other_names="Müller-Lüdenscheidt^Jürgen",
    legacy_spellings="MUELLER JUERGEN, Muller Jurgen",
)
UTF8_PATIENT = PlantedPatient(
    character_set="ISO_IR 192",
    name="Zieliński^Paweł",
    name_spellings=("Zieliński", "ZIELIŃSKI", "Zielinski", "ZIELINSKI", "Paweł", "PAWEŁ", "Pawel"),
    address="ulica Łąkowa 7, Poznań",
    other_names="Zieliński-Nowak^Paweł",
    legacy_spellings="ZIELINSKI PAWEL",
)

PATIENT_ID = "40815123"
OTHER_PATIENT_ID = "OLD-4711-X"
FOREIGN_PATIENT_ID = "EXT-99887766"
BIRTH_DATE = "19650412"
BIRTH_DATE_SPELLINGS = ("19650412", "12.04.1965", "1965-04-12")
TELEPHONE = "+49 6221 5634789"
ACCESSION_NUMBER = "ACC2024055119"
INSTITUTION = "Universitätsklinikum Heidelberg"
INSTITUTION_ADDRESS = "Im Neuenheimer Feld 672, Heidelberg"
STATION_NAME = "HD-CT-ZEBRA"
DEVICE_SERIAL = "SN-77341-QX"
SOURCE_AE_TITLE = "HD_PACS_ARCHIV"
EARLIER_TRIAL_SUBJECT = "OLDTRIAL-SUBJ-17"
REFERRING_PHYSICIAN = "Hofmann^Klaus^^Dr. med."
REPORTING_PHYSICIAN = "Vogelsang^Irmtraud"
OTHER_PEOPLE = (
    REFERRING_PHYSICIAN,
    REPORTING_PHYSICIAN,
    "Brandstätter^Ulrike",
    "Eberhardt^Tobias",
    "Lindqvist^Henrik",
    "Oberdörfer^Wilhelm",
    "Kühnel^Hildegard",
)
# Everything else planted that identifies the patient, a person, the place or the device.
OTHER_IDENTIFIERS = (
    PATIENT_ID,
    OTHER_PATIENT_ID,
    FOREIGN_PATIENT_ID,
    *BIRTH_DATE_SPELLINGS,
    "5634789",
    ACCESSION_NUMBER,
    "Universitätsklinikum",
    "Neuenheimer",
    STATION_NAME,
    DEVICE_SERIAL,
    SOURCE_AE_TITLE,
    EARLIER_TRIAL_SUBJECT,
    "KLINIKUM-HD",
    "Schornsteinfeger",
    "Oberleutnant",
    "Luftwaffe",
    "Sorbisch",
    "Praxis Dr. Schmitt",
    "Weidenbach",
    "RP-88123",
    "SPS-99123",
    "pacs.klinikum-hd.example",
    "MRL-5512-HD",
)


def _person_name_spellings(person_name: str) -> list[str]:
    family, given = person_name.split("^")[:2]
    spellings = [family, given, family.upper()]
    for original, replacement in (("ä", "ae"), ("ö", "oe"), ("ü", "ue")):
        if original in family:
            spellings.append(family.replace(original, replacement))
    return spellings


def _planted_strings(patient: PlantedPatient) -> list[str]:
    """Values planted verbatim; each must be found in the original instances."""
    planted = [patient.name_spellings[0], *OTHER_IDENTIFIERS, patient.address.split(",")[0]]
    planted += patient.other_names.replace("^", "-").split("-")
    planted += [person.split("^")[0] for person in OTHER_PEOPLE]
    return planted


def _forbidden_strings(patient: PlantedPatient, original_uids: set[str]) -> list[str]:
    """The planted values, their other spellings and the original instance UIDs."""
    forbidden = [*_planted_strings(patient), *patient.name_spellings, *original_uids]
    forbidden.append("Universitatsklinikum")
    for person in OTHER_PEOPLE:
        forbidden += _person_name_spellings(person)
    return forbidden


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = scheme
    code.CodeMeaning = meaning
    return code


def _plant_identity(ds: Dataset, patient: PlantedPatient) -> None:
    """Plants the patient's identity everywhere the Basic Profile says it may be."""
    ds.SpecificCharacterSet = patient.character_set
    ds.PatientName = patient.name
    ds.PatientID = PATIENT_ID
    ds.IssuerOfPatientID = "KLINIKUM-HD"
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientBirthTime = "0815"
    ds.PatientAddress = patient.address
    ds.PatientTelephoneNumbers = TELEPHONE
    ds.OtherPatientIDs = OTHER_PATIENT_ID
    ds.OtherPatientNames = patient.other_names
    ds.PatientBirthName = "Weidenbach^Jürgen"
    ds.PatientMotherBirthName = "Kühnel^Hildegard"
    ds.MilitaryRank = "Oberleutnant"
    ds.BranchOfService = "Luftwaffe"
    ds.EthnicGroup = "Sorbisch"
    ds.Occupation = "Schornsteinfeger"
    ds.MedicalRecordLocator = "MRL-5512-HD"
    ds.AdditionalPatientHistory = f"Vater von {patient.name.replace('^', ' ')} jr."
    ds.PatientComments = f"Privatpatient {patient.name.split('^')[0]}"
    foreign_id = Dataset()
    foreign_id.PatientID = FOREIGN_PATIENT_ID
    foreign_id.IssuerOfPatientID = "Praxis Dr. Schmitt"
    ds.OtherPatientIDsSequence = Sequence([foreign_id])
    ds.ClinicalTrialSubjectID = EARLIER_TRIAL_SUBJECT

    ds.ReferringPhysicianName = REFERRING_PHYSICIAN
    ds.ReferringPhysicianAddress = "Hauptstraße 1, Heidelberg Neuenheimer"
    ds.ReferringPhysicianTelephoneNumbers = TELEPHONE
    ds.PerformingPhysicianName = "Brandstätter^Ulrike"
    ds.OperatorsName = "Eberhardt^Tobias"
    ds.PhysiciansOfRecord = "Lindqvist^Henrik"
    ds.NameOfPhysiciansReadingStudy = REPORTING_PHYSICIAN
    ds.RequestingPhysician = "Oberdörfer^Wilhelm"

    ds.InstitutionName = INSTITUTION
    ds.InstitutionAddress = INSTITUTION_ADDRESS
    ds.InstitutionalDepartmentName = "Radiologie Universitätsklinikum"
    ds.StationName = STATION_NAME
    ds.DeviceSerialNumber = DEVICE_SERIAL
    ds.AccessionNumber = ACCESSION_NUMBER
    ds.RetrieveURL = f"https://pacs.klinikum-hd.example/wado?study={ds.StudyInstanceUID}"

    # Descriptions that are kept must lose the name; comments must go entirely.
    family = patient.name.split("^")[0]
    ds.StudyDescription = f"{ds.StudyDescription} {family.upper()}"
    ds.ImageComments = f"Pat. {patient.name.replace('^', ' ')} unruhig, geb. 12.04.1965"

    request = Dataset()
    request.AccessionNumber = ACCESSION_NUMBER
    request.PatientName = patient.name
    request.RequestedProcedureID = "RP-88123"
    request.ScheduledProcedureStepID = "SPS-99123"
    request.RequestedProcedureDescription = f"CT für {family}"
    ds.RequestAttributesSequence = Sequence([request])

    previous = Dataset()
    previous.PatientName = patient.other_names
    previous.PatientID = OTHER_PATIENT_ID
    modified = Dataset()
    modified.ModifiedAttributesSequence = Sequence([previous])
    modified.ModifyingSystem = "PACS Universitätsklinikum"
    modified.SourceOfPreviousValues = INSTITUTION
    modified.ReasonForTheAttributeModification = "COERCE"
    ds.OriginalAttributesSequence = Sequence([modified])

    referenced_patient = Dataset()
    referenced_patient.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.1.1"
    referenced_patient.ReferencedSOPInstanceUID = "1.2.276.0.7230010.3.1.4.5566778899"
    ds.ReferencedPatientSequence = Sequence([referenced_patient])
    referenced_study = Dataset()
    referenced_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    referenced_study.ReferencedSOPInstanceUID = ds.StudyInstanceUID
    ds.ReferencedStudySequence = Sequence([referenced_study])

    encoding = "latin-1" if patient.character_set == "ISO_IR 100" else "utf-8"
    block = ds.private_block(0x0009, "ACME PHI 1.0", create=True)
    block.add_new(0x01, "LO", patient.name)
    block.add_new(0x02, "UN", patient.name.encode(encoding))
    block.add_new(0x03, "UI", ds.SOPInstanceUID)
    siemens = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    siemens.add_new(0x10, "OB", b"PatientName " + patient.name.encode(encoding) + b"\0")
    # A public tag no dictionary knows (a newer standard, a vendor squatting): unreadable.
    ds.add_new(0x00109999, "UN", patient.name.encode(encoding))

    # An overlay plane with a burned-in looking description.
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000022, "LO", f"Markierung {family}")
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", bytes(8))

    ds.file_meta.SourceApplicationEntityTitle = SOURCE_AE_TITLE


def _plant_report_content(ds: Dataset, patient: PlantedPatient) -> None:
    """SR content naming the reporting physician, and a text item naming the patient."""
    observer = Dataset()
    observer.RelationshipType = "HAS OBS CONTEXT"
    observer.ValueType = "PNAME"
    observer.ConceptNameCodeSequence = Sequence([_code("121008", "DCM", "Person Observer Name")])
    observer.PersonName = REPORTING_PHYSICIAN
    given, family = patient.name.split("^")[1], patient.name.split("^")[0]
    note = Dataset()
    note.RelationshipType = "CONTAINS"
    note.ValueType = "TEXT"
    note.ConceptNameCodeSequence = Sequence([_code("121106", "DCM", "Comment")])
    note.TextValue = (
        f"Patient {given} {family} (geb. 12.04.1965/1965-04-12, ID {PATIENT_ID}), Vergleich "
        f"mit der Voruntersuchung {ACCESSION_NUMBER}. Befund mit Herrn {family.upper()} und "
        f"Dr. Hofmann besprochen. Vorbefund unter {patient.legacy_spellings}, Fremd-ID "
        f"{FOREIGN_PATIENT_ID}."
    )
    private_in_item = note.private_block(0x0011, "ACME REPORT", create=True)
    private_in_item.add_new(0x01, "LO", family)
    ds.ContentSequence.insert(0, observer)
    ds.ContentSequence.append(note)


def _plant_presentation_note(ds: Dataset, patient: PlantedPatient) -> None:
    note = ds.GraphicAnnotationSequence[0].TextObjectSequence[0]
    note.UnformattedTextValue = f"Herr {patient.name.split('^')[0]}: Rundherd"


def _first_study_instances(seed: int = 11) -> list[Dataset]:
    """Every instance of the first synthetic study; it has images, an SR and a PR."""
    instances: list[Dataset] = []
    for ds in synthetic.generate_studies(seed=seed, patients=1):
        if instances and ds.StudyInstanceUID != instances[0].StudyInstanceUID:
            break
        instances.append(ds)
    assert {ds.Modality for ds in instances} >= {"SR", "PR"}
    return instances


def _planted_study(patient: PlantedPatient) -> list[Dataset]:
    instances = _first_study_instances()
    for ds in instances:
        _plant_identity(ds, patient)
        if ds.Modality == "SR":
            _plant_report_content(ds, patient)
        if ds.Modality == "PR":
            _plant_presentation_note(ds, patient)
    return instances


# -- Inspection helpers ----------------------------------------------------------------------


def _elements(ds: Dataset) -> Iterator[DataElement]:
    """Every element of the dataset, its file meta information and all nested items."""
    if hasattr(ds, "file_meta"):
        yield from ds.file_meta.iterall()
    yield from ds.iterall()


def _decoded_strings(element: DataElement) -> list[str]:
    value = element.value
    if element.VR == "SQ" or value is None:
        return []
    if isinstance(value, bytes):
        return [value.decode("latin-1"), value.decode("utf-8", errors="ignore")]
    if isinstance(value, MultiValue | list):
        return [str(item) for item in value]
    return [str(value)]


def _instance_uids(ds: Dataset) -> set[str]:
    """UIDs that identify instances (not classes, transfer syntaxes or the implementation)."""
    uids: set[str] = set()
    for element in _elements(ds):
        keyword = element.keyword or ""
        if element.VR != "UI" or keyword.endswith("ClassUID") or keyword == "TransferSyntaxUID":
            continue
        uids.update(text for text in _decoded_strings(element) if text)
    return uids


def _written(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _leaks_in_elements(ds: Dataset, forbidden: list[str]) -> list[str]:
    leaks = []
    for element in _elements(ds):
        for text in _decoded_strings(element):
            folded = text.casefold()
            leaks += [
                f"{element.tag} {element.keyword or 'private'}: {text!r} contains {word!r}"
                for word in forbidden
                if word.casefold() in folded
            ]
    return leaks


def _leaks_in_bytes(data: bytes, forbidden: list[str]) -> list[str]:
    leaks = []
    for word in forbidden:
        for variant in {word, word.upper(), word.lower()}:
            for encoding in ("utf-8", "latin-1"):
                try:
                    encoded = variant.encode(encoding)
                except UnicodeEncodeError:
                    continue
                if encoded in data:
                    leaks.append(f"{variant!r} in {encoding}")
    return leaks


def _pseudonymized(instances: list[Dataset], **options) -> list[Dataset]:
    pseudonymizer = Pseudonymizer(PSEUDONYM, options.pop("secret", SECRET), **options)
    copies = [copy.deepcopy(ds) for ds in instances]
    for ds in copies:
        pseudonymizer.pseudonymize(ds)
    return copies


def _by_modality(instances: list[Dataset], modality: str) -> Dataset:
    return next(ds for ds in instances if ds.Modality == modality)


# -- No identifying data survives ------------------------------------------------------------


@pytest.mark.parametrize("patient", [LATIN1_PATIENT, UTF8_PATIENT], ids=["latin-1", "utf-8"])
def test_no_planted_identifier_survives_in_any_element_or_byte(patient: PlantedPatient):
    originals = _planted_study(patient)
    original_uids = set().union(*(_instance_uids(ds) for ds in originals))
    forbidden = _forbidden_strings(patient, original_uids)
    # The planting must have worked, or the test would prove nothing.
    found_in_originals = "\n".join(
        "\n".join(leak for leak in _leaks_in_elements(ds, forbidden)) for ds in originals
    )
    for word in _planted_strings(patient):
        assert repr(word) in found_in_originals, word

    for ds in _pseudonymized(originals):
        assert _leaks_in_elements(ds, forbidden) == [], ds.Modality
        assert _leaks_in_bytes(_written(ds), forbidden) == [], ds.Modality


@pytest.mark.parametrize("patient", [LATIN1_PATIENT, UTF8_PATIENT], ids=["latin-1", "utf-8"])
def test_identity_attributes_are_replaced_emptied_or_removed(patient: PlantedPatient):
    ds = _by_modality(_pseudonymized(_planted_study(patient)), "CT")

    assert ds.PatientName == PSEUDONYM
    assert ds.PatientID == PSEUDONYM
    assert ds.PatientBirthDate == ""
    assert ds.ReferringPhysicianName == ""
    for keyword in (
        "IssuerOfPatientID",
        "PatientBirthTime",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientBirthName",
        "PatientMotherBirthName",
        "MilitaryRank",
        "BranchOfService",
        "EthnicGroup",
        "Occupation",
        "MedicalRecordLocator",
        "AdditionalPatientHistory",
        "PatientComments",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "PerformingPhysicianName",
        "OperatorsName",
        "PhysiciansOfRecord",
        "NameOfPhysiciansReadingStudy",
        "RequestingPhysician",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "RetrieveURL",
        "ImageComments",
        "RequestAttributesSequence",
        "OriginalAttributesSequence",
        "ReferencedPatientSequence",
        "ReferencedStudySequence",
        "ClinicalTrialSubjectID",
    ):
        assert keyword not in ds, keyword
    assert ds.AccessionNumber not in ("", ACCESSION_NUMBER)
    assert ds.DeviceSerialNumber not in ("", DEVICE_SERIAL)
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    assert not any(tag.is_private for tag in (element.tag for element in _elements(ds)))
    assert not any(0x6000 <= element.tag.group <= 0x601E for element in ds)


def test_patient_characteristics_are_kept():
    original = _by_modality(_planted_study(LATIN1_PATIENT), "CT")
    ds = _pseudonymized([original])[0]

    for keyword in ("PatientAge", "PatientSex", "PatientSize", "PatientWeight"):
        assert ds[keyword].value == original[keyword].value, keyword


def test_missing_age_is_derived_before_the_birth_date_goes():
    original = _by_modality(_planted_study(LATIN1_PATIENT), "CT")
    del original.PatientAge
    ds = _pseudonymized([original])[0]

    study_date = datetime.datetime.strptime(original.StudyDate, "%Y%m%d").date()
    born = datetime.date(1965, 4, 12)
    years = study_date.year - born.year - ((study_date.month, study_date.day) < (4, 12))
    assert ds.PatientAge == f"{years:03d}Y"


def test_kept_descriptions_and_report_text_lose_only_the_identifiers():
    instances = _pseudonymized(_planted_study(LATIN1_PATIENT))
    ct, report = _by_modality(instances, "CT"), _by_modality(instances, "SR")
    originals = _first_study_instances()

    assert ct.StudyDescription == f"{_by_modality(originals, 'CT').StudyDescription} {PSEUDONYM}"
    assert ct.SeriesDescription == _by_modality(originals, "CT").SeriesDescription
    note = report.ContentSequence[-1]
    assert note.TextValue == (
        f"Patient {PSEUDONYM} (geb. ***/***, ID {PSEUDONYM}), Vergleich mit der Voruntersuchung "
        f"***. Befund mit Herrn {PSEUDONYM} und Dr. *** besprochen. Vorbefund unter "
        f"{PSEUDONYM}, {PSEUDONYM}, Fremd-ID {PSEUDONYM}."
    )
    # The report's own findings are untouched.
    original_texts = [
        item.ContentSequence[0].TextValue for item in _by_modality(originals, "SR").ContentSequence
    ]
    assert [item.ContentSequence[0].TextValue for item in report.ContentSequence[1:4]] == (
        original_texts
    )


def test_person_names_in_sr_content_are_replaced_not_dropped():
    report = _by_modality(_pseudonymized(_planted_study(LATIN1_PATIENT)), "SR")

    observer = report.ContentSequence[0]
    assert observer.ValueType == "PNAME"
    assert str(observer.PersonName) not in ("", REPORTING_PHYSICIAN)
    verifier = report.VerifyingObserverSequence[0]
    assert str(verifier.VerifyingObserverName) not in ("", REFERRING_PHYSICIAN)
    assert verifier.VerifyingOrganization == "REMOVED"


def test_presentation_state_text_note_is_scrubbed():
    pr = _by_modality(_pseudonymized(_planted_study(UTF8_PATIENT)), "PR")

    text = pr.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue
    assert text == f"Herr {PSEUDONYM}: Rundherd"


def test_every_attribute_dicognito_alone_would_change_is_still_changed():
    """The rules run first; nothing dicognito handles by keyword may slip through them."""
    keywords = (
        "AccessionNumber",
        "BranchOfService",
        "CountryOfResidence",
        "CurrentPatientLocation",
        "FillerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequestRetired",
        "FillerOrderNumberProcedure",
        "InstitutionAddress",
        "InstitutionName",
        "InstitutionalDepartmentName",
        "IssuerOfPatientID",
        "MedicalRecordLocator",
        "MilitaryRank",
        "Occupation",
        "OtherPatientIDs",
        "PatientAddress",
        "PatientID",
        "PatientReligiousPreference",
        "PatientTelephoneNumbers",
        "PerformedProcedureStepID",
        "PlacerOrderNumberImagingServiceRequest",
        "PlacerOrderNumberImagingServiceRequestRetired",
        "PlacerOrderNumberProcedure",
        "RegionOfResidence",
        "RequestedProcedureID",
        "RequestingService",
        "ResponsibleOrganization",
        "ScheduledProcedureStepID",
        "StationName",
        "StudyID",
    )
    ds = _by_modality(_first_study_instances(), "CT")
    for number, keyword in enumerate(keywords):
        setattr(ds, keyword, f"SECRET{number:03d}")

    Pseudonymizer(PSEUDONYM, SECRET).pseudonymize(ds)

    for number, keyword in enumerate(keywords):
        assert ds.get(keyword) != f"SECRET{number:03d}", keyword


def test_standard_uids_are_not_remapped():
    ds = _by_modality(_first_study_instances(), "CT")
    ds.SynchronizationFrameOfReferenceUID = "1.2.840.10008.15.1.1"
    Pseudonymizer(PSEUDONYM, SECRET).pseudonymize(ds)

    assert ds.SynchronizationFrameOfReferenceUID == "1.2.840.10008.15.1.1"
    assert ds.SOPClassUID == CTImageStorage
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


# -- UIDs ------------------------------------------------------------------------------------


def _uid_mapping(originals: list[Dataset], results: list[Dataset], keyword: str) -> dict:
    mapping: dict[str, set[str]] = {}
    for original, result in zip(originals, results, strict=True):
        mapping.setdefault(original[keyword].value, set()).add(result[keyword].value)
    return mapping


def test_uids_are_consistent_within_studies_and_distinct_between_them():
    originals = list(synthetic.generate_studies(seed=21, patients=3))
    results = _pseudonymized(originals)

    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        mapping = _uid_mapping(originals, results, keyword)
        assert all(len(new) == 1 for new in mapping.values()), keyword
        new_uids = [next(iter(new)) for new in mapping.values()]
        assert len(set(new_uids)) == len(new_uids), keyword
        assert not set(new_uids) & set(mapping), keyword
        assert all(len(uid) <= 64 and UID(uid).is_valid for uid in new_uids)
    images = [(o, r) for o, r in zip(originals, results, strict=True) if o.Modality != "SR"]
    frames = _uid_mapping(
        [o for o, _ in images if "FrameOfReferenceUID" in o],
        [r for _, r in images if "FrameOfReferenceUID" in r],
        "FrameOfReferenceUID",
    )
    assert all(len(new) == 1 for new in frames.values())
    for ds in results:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID


def test_references_point_to_the_new_uids_of_the_referenced_instances():
    originals = list(synthetic.generate_studies(seed=21, patients=3))
    results = _pseudonymized(originals)
    new_sop = {o.SOPInstanceUID: r.SOPInstanceUID for o, r in zip(originals, results, strict=True)}
    new_series = {
        o.SeriesInstanceUID: r.SeriesInstanceUID for o, r in zip(originals, results, strict=True)
    }
    new_study = {
        o.StudyInstanceUID: r.StudyInstanceUID for o, r in zip(originals, results, strict=True)
    }

    checked = 0
    for original, result in zip(originals, results, strict=True):
        if original.Modality == "PR":
            for old_series, series in zip(
                original.ReferencedSeriesSequence, result.ReferencedSeriesSequence, strict=True
            ):
                assert series.SeriesInstanceUID == new_series[old_series.SeriesInstanceUID]
                old_image = old_series.ReferencedImageSequence[0]
                image = series.ReferencedImageSequence[0]
                assert image.ReferencedSOPInstanceUID == new_sop[old_image.ReferencedSOPInstanceUID]
                assert image.ReferencedSOPClassUID == old_image.ReferencedSOPClassUID
            annotated = result.GraphicAnnotationSequence[0].ReferencedImageSequence[0]
            assert annotated.ReferencedSOPInstanceUID in new_sop.values()
            checked += 1
        if original.Modality == "SR":
            old_study = original.CurrentRequestedProcedureEvidenceSequence[0]
            study = result.CurrentRequestedProcedureEvidenceSequence[0]
            assert study.StudyInstanceUID == new_study[old_study.StudyInstanceUID]
            for old_series, series in zip(
                old_study.ReferencedSeriesSequence, study.ReferencedSeriesSequence, strict=True
            ):
                assert series.SeriesInstanceUID == new_series[old_series.SeriesInstanceUID]
                assert [ref.ReferencedSOPInstanceUID for ref in series.ReferencedSOPSequence] == [
                    new_sop[ref.ReferencedSOPInstanceUID]
                    for ref in old_series.ReferencedSOPSequence
                ]
            checked += 1
    assert checked >= 4


def test_two_jobs_of_one_project_give_the_same_uids_and_accession_numbers():
    originals = _first_study_instances()
    first_job = _pseudonymized(originals)
    second_job = _pseudonymized(originals)
    other_project = _pseudonymized(originals, secret=OTHER_SECRET)

    for first, second, other in zip(first_job, second_job, other_project, strict=True):
        assert _instance_uids(first) == _instance_uids(second)
        assert first.AccessionNumber == second.AccessionNumber
        assert not _instance_uids(first) & _instance_uids(other)
        assert first.AccessionNumber != other.AccessionNumber
    assert len({ds.AccessionNumber for ds in first_job}) == 1


ORGANISATION_ROOT = "1.2.826.0.1.3680043.10.9"  # 24 characters, the longest root allowed


def _new_uids(results: list[Dataset]) -> set[str]:
    return set().union(*(_instance_uids(ds) for ds in results))


def test_new_uids_are_uuid_derived_under_2_25():
    originals = list(synthetic.generate_studies(seed=21, patients=2))
    new_uids = _new_uids(_pseudonymized(originals))

    assert new_uids
    for new_uid in new_uids:
        assert new_uid.startswith("2.25."), new_uid
        validate_uid(new_uid)
        assert UID(new_uid).is_valid
        number = new_uid.removeprefix("2.25.")
        assert number == str(int(number)), "a component must not have leading zeros"
        as_uuid = uuid.UUID(int=int(number))  # refuses numbers of more than 128 bits
        assert (as_uuid.version, as_uuid.variant) == (8, uuid.RFC_4122)


def test_new_uids_are_the_same_for_a_project_and_differ_between_projects():
    originals = list(synthetic.generate_studies(seed=21, patients=2))
    first_job = _new_uids(_pseudonymized(originals))

    assert _new_uids(_pseudonymized(originals)) == first_job
    assert not _new_uids(_pseudonymized(originals, secret=OTHER_SECRET)) & first_job
    assert not _new_uids(_pseudonymized(originals)) & _new_uids(originals)


def test_an_organisation_root_from_the_setting_starts_every_new_uid(settings):
    originals = list(synthetic.generate_studies(seed=21, patients=2))
    settings.PSEUDONYMIZATION_UID_ROOT = ORGANISATION_ROOT
    new_uids = _new_uids(_pseudonymized(originals))

    for new_uid in new_uids:
        assert new_uid.startswith(ORGANISATION_ROOT + "."), new_uid
        validate_uid(new_uid)
    assert max(len(new_uid) for new_uid in new_uids) <= 64
    assert _new_uids(_pseudonymized(originals)) == new_uids
    assert not _new_uids(_pseudonymized(originals, secret=OTHER_SECRET)) & new_uids


def test_an_empty_root_means_2_25_whatever_the_setting(settings):
    settings.PSEUDONYMIZATION_UID_ROOT = ORGANISATION_ROOT
    ds = _first_study_instances()[0]
    Pseudonymizer(PSEUDONYM, SECRET, uid_root="").pseudonymize(ds)

    assert ds.SOPInstanceUID.startswith("2.25.")


@pytest.mark.parametrize(
    ("uid_root", "message"),
    [
        ("1.2.826.0.1.3680043.10.99", "at most 24 characters"),
        ("1.2.826.", "not a UID root"),
        ("1.02.3", "not a UID root"),
        ("3.1.2", "not a UID root"),
        ("1", "not a UID root"),
        ("1.2.840.10008.7", "reserves for its own UIDs"),
    ],
)
def test_a_bad_uid_root_is_refused(uid_root: str, message: str):
    with pytest.raises(ValueError, match=message):
        Pseudonymizer(PSEUDONYM, SECRET, uid_root=uid_root)


_SUBPROCESS_SCRIPT = """
import hashlib, io, sys
import pydicom
from adit.core.demo import synthetic
from adit.core.transfer.pseudonymizer import Pseudonymizer

pseudonymizer = Pseudonymizer("LUNG-0042", sys.argv[1], shift_dates=True)
digest = hashlib.sha256()
uids = []
for ds in synthetic.generate_studies(seed=3, patients=2, rows=16, columns=16):
    pseudonymizer.pseudonymize(ds)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    digest.update(buffer.getvalue())
    uids.append(ds.SOPInstanceUID)
print(digest.hexdigest())
print(",".join(uids))
"""


def _run_in_fresh_process(secret: str, hash_seed: str) -> list[str]:
    environment = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPOSITORY_ROOT)}
    completed = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS_SCRIPT, secret],
        cwd=REPOSITORY_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return completed.stdout.split()


def test_output_is_byte_identical_across_processes_with_different_hash_seeds():
    first = _run_in_fresh_process(SECRET, "1")
    second = _run_in_fresh_process(SECRET, "4242")
    other_project = _run_in_fresh_process(OTHER_SECRET, "1")

    assert first == second
    digest = hashlib.sha256()
    uids = []
    pseudonymizer = Pseudonymizer(PSEUDONYM, SECRET, shift_dates=True)
    for ds in synthetic.generate_studies(seed=3, patients=2, rows=16, columns=16):
        pseudonymizer.pseudonymize(ds)
        digest.update(_written(ds))
        uids.append(ds.SOPInstanceUID)
    assert first == [digest.hexdigest(), ",".join(uids)]
    assert other_project[0] != first[0]
    assert not set(other_project[1].split(",")) & set(uids)


# -- Dates -----------------------------------------------------------------------------------

_STUDY_DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
_STUDY_TIMES = ("StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime")


def _with_acquisition_time(instances: list[Dataset]) -> list[Dataset]:
    for ds in instances:
        ds.AcquisitionDate = ds.StudyDate
        ds.AcquisitionTime = ds.SeriesTime
        ds.AcquisitionDateTime = ds.StudyDate + ds.SeriesTime
    return instances


def test_dates_and_times_are_kept_by_default():
    originals = _with_acquisition_time(_planted_study(LATIN1_PATIENT))
    results = _pseudonymized(originals)

    for original, ds in zip(originals, results, strict=True):
        for keyword in (*_STUDY_DATES, *_STUDY_TIMES, "AcquisitionDateTime"):
            assert ds[keyword].value == original[keyword].value, keyword
        assert ds.PatientBirthDate == ""
        assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
    report = _by_modality(results, "SR")
    original_report = _by_modality(originals, "SR")
    assert (
        report.VerifyingObserverSequence[0].VerificationDateTime
        == original_report.VerifyingObserverSequence[0].VerificationDateTime
    )


def _shift(original: Dataset, result: Dataset, date: str, time: str) -> datetime.timedelta:
    def moment(ds: Dataset) -> datetime.datetime:
        return datetime.datetime.strptime(ds[date].value + ds[time].value, "%Y%m%d%H%M%S")

    return moment(result) - moment(original)


def test_shifted_dates_move_by_one_offset_for_every_instance_and_job():
    originals = _with_acquisition_time(list(synthetic.generate_studies(seed=21, patients=3)))
    first_job = _pseudonymized(originals, shift_dates=True)
    second_job = _pseudonymized(originals, shift_dates=True)

    shifts = {
        _shift(original, result, date, time)
        for job in (first_job, second_job)
        for original, result in zip(originals, job, strict=True)
        for date, time in zip(_STUDY_DATES, _STUDY_TIMES, strict=True)
    }
    assert len(shifts) == 1
    (shift,) = shifts
    assert datetime.timedelta(days=-730) <= shift <= datetime.timedelta(days=-62)
    for original, ds in zip(originals, first_job, strict=True):
        assert ds.StudyDate != original.StudyDate
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        moved = datetime.datetime.strptime(original.AcquisitionDateTime, "%Y%m%d%H%M%S") + shift
        assert ds.AcquisitionDateTime == moved.strftime("%Y%m%d%H%M%S")


def test_date_shift_matches_dicognitos_own_for_the_project_seed():
    """Guards the copied offset formula against a dicognito upgrade that changes it."""
    ds = _by_modality(_first_study_instances(), "CT")
    by_dicognito = copy.deepcopy(ds)
    Anonymizer(seed=_derive_seed(SECRET)).anonymize(by_dicognito)
    Pseudonymizer(PSEUDONYM, SECRET, shift_dates=True).pseudonymize(ds)

    assert (ds.StudyDate, ds.StudyTime) == (by_dicognito.StudyDate, by_dicognito.StudyTime)
    # The same seed: dicognito's replacements agree (UIDs are ADIT's own since 2.25 roots).
    assert ds.AccessionNumber and ds.AccessionNumber == by_dicognito.AccessionNumber
    assert -730 * 24 <= _date_offset_hours(_derive_seed(SECRET)) <= -62 * 24


def test_a_malformed_date_is_emptied_instead_of_aborting_the_shift():
    ds = _by_modality(_first_study_instances(), "CT")
    with pytest.warns(UserWarning, match="Invalid value for VR DA"):
        ds.SeriesDate = "2024XX01"
    Pseudonymizer(PSEUDONYM, SECRET, shift_dates=True).pseudonymize(ds)

    assert ds.SeriesDate == ""
    assert ds.SeriesTime == ""
    assert ds.StudyDate != ""


# -- De-identification record and trial attributes -------------------------------------------


def _codes(ds: Dataset) -> list[tuple[str, str]]:
    return [
        (item.CodeValue, item.CodingSchemeDesignator)
        for item in ds.DeidentificationMethodCodeSequence
    ]


def test_deidentification_record_names_the_profile_and_options():
    ds = _pseudonymized(_first_study_instances()[:1])[0]

    assert ds.PatientIdentityRemoved == "YES"
    method = " ".join(ds.DeidentificationMethod)
    assert "ADIT" in method
    assert "dicognito 0.19.0" in method
    assert "Dates kept" in method
    assert _codes(ds) == [
        ("113100", "DCM"),
        ("113104", "DCM"),
        ("113105", "DCM"),
        ("113106", "DCM"),
        ("113108", "DCM"),
    ]
    assert ds.DeidentificationMethodCodeSequence[0].CodeMeaning == (
        "Basic Application Confidentiality Profile"
    )


def test_deidentification_record_with_shifted_dates_and_kept_private_tags():
    ds = _pseudonymized(
        _first_study_instances()[:1], shift_dates=True, keep_private_tags=[(0x0019, 0x1001)]
    )[0]

    assert "Dates shifted" in ds.DeidentificationMethod
    codes = [value for value, _ in _codes(ds)]
    assert "113107" in codes
    assert "113106" not in codes
    assert "113111" in codes
    assert "113110" not in codes  # UIDs are replaced, never retained


def test_an_earlier_deidentification_record_is_replaced():
    ds = _by_modality(_first_study_instances(), "CT")
    ds.PatientIdentityRemoved = "NO"
    ds.DeidentificationMethod = "Some other tool"
    ds.DeidentificationMethodCodeSequence = Sequence([_code("113110", "DCM", "Retain UIDs")])
    Pseudonymizer(PSEUDONYM, SECRET).pseudonymize(ds)

    assert ds.PatientIdentityRemoved == "YES"
    assert "Some other tool" not in ds.DeidentificationMethod
    assert ("113110", "DCM") not in _codes(ds)


def test_trial_attributes_and_patient_comments_are_written():
    ds = _pseudonymized(
        _planted_study(LATIN1_PATIENT),
        trial_protocol_id="LUNG-SCREEN-2",
        trial_protocol_name="Lungenscreening Phase 2",
    )[0]

    assert ds.ClinicalTrialProtocolID == "LUNG-SCREEN-2"
    assert ds.ClinicalTrialProtocolName == "Lungenscreening Phase 2"
    assert ds.PatientComments == (
        f"Project:LUNG-SCREEN-2 Subject:{PSEUDONYM} "
        f"Session:{PSEUDONYM}_{ds.StudyDate}-{ds.StudyTime}"
    )
    assert "ClinicalTrialSubjectID" not in ds


def test_without_trial_id_patient_comments_are_removed():
    ds = _pseudonymized(_planted_study(LATIN1_PATIENT), trial_protocol_name="Nur ein Name")[0]

    assert "PatientComments" not in ds
    assert "ClinicalTrialProtocolID" not in ds
    assert ds.ClinicalTrialProtocolName == "Nur ein Name"


def test_session_uses_the_shifted_study_date_when_dates_are_shifted():
    original = _first_study_instances()[0]
    ds = _pseudonymized([original], shift_dates=True, trial_protocol_id="T1")[0]

    assert original.StudyDate not in ds.PatientComments
    assert f"_{ds.StudyDate}-{ds.StudyTime}" in ds.PatientComments


@pytest.mark.parametrize(
    ("pseudonym", "message"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("P" * 65, "at most 64 characters"),
        (" LUNG-42", "must not start or end with spaces"),
        ("LUNG-42 ", "must not start or end with spaces"),
        ("LUNG\\42", "backslash"),
        ("LUNG\n42", "control"),
        ("LUNG\x0042", "control"),
        ("LUNG\x1b42", "control"),
    ],
)
def test_bad_pseudonyms_are_refused(pseudonym: str, message: str):
    with pytest.raises(ValueError, match=message):
        Pseudonymizer(pseudonym, SECRET)


def test_longest_allowed_pseudonym_is_accepted():
    ds = _first_study_instances()[0]
    Pseudonymizer("P" * 64, SECRET).pseudonymize(ds)

    assert ds.PatientID == "P" * 64


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"trial_protocol_id": "A\\B"}, "trial protocol ID must not contain a backslash"),
        ({"trial_protocol_name": "N" * 65}, "trial protocol name must be at most 64"),
        ({"trial_protocol_id": "  "}, "trial protocol ID must not consist of spaces"),
        ({"keep_private_tags": [(0x0010, 0x1010)]}, "not a private data element"),
        ({"keep_private_tags": [(0x0009, 0x0010)]}, "not a private data element"),
    ],
)
def test_bad_options_are_refused(options: dict, message: str):
    with pytest.raises(ValueError, match=message):
        Pseudonymizer(PSEUDONYM, SECRET, **options)


def test_an_empty_project_secret_is_refused():
    with pytest.raises(ValueError, match="project secret must not be empty"):
        Pseudonymizer(PSEUDONYM, "")


# -- Private tags, character sets, file meta -------------------------------------------------


def test_only_listed_private_tags_are_kept_with_their_creator_and_scrubbed():
    ds = _by_modality(_planted_study(LATIN1_PATIENT), "CT")
    safe = ds.private_block(0x0019, "ACME SAFE", create=True)
    safe.add_new(0x01, "DS", "2.5")
    safe.add_new(0x02, "LO", "Kernel B31f für Müller")
    safe.add_new(0x03, "LO", "not listed")
    safe.add_new(0x04, "UN", b"\x01\x02")  # as read from an implicit VR file
    Pseudonymizer(
        PSEUDONYM,
        SECRET,
        keep_private_tags=[(0x0019, 0x1001), (0x0019, 0x1002), (0x0019, 0x1004)],
    ).pseudonymize(ds)

    private = {element.tag: element.value for element in ds if element.tag.is_private}
    assert private == {
        0x00190010: "ACME SAFE",
        0x00191001: "2.5",
        0x00191002: f"Kernel B31f für {PSEUDONYM}",
        0x00191004: b"\x01\x02",
    }


def test_a_non_ascii_pseudonym_switches_an_ascii_dataset_to_utf8():
    ds = _by_modality(_first_study_instances(), "CT")
    ds.PatientName = "Smith^John"
    del ds.SpecificCharacterSet
    Pseudonymizer("Studie-Łódź-7", SECRET).pseudonymize(ds)

    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert pydicom.dcmread(io.BytesIO(_written(ds))).PatientName == "Studie-Łódź-7"


def test_a_latin1_pseudonym_keeps_a_latin1_dataset_latin1():
    ds = _by_modality(_planted_study(LATIN1_PATIENT), "CT")
    Pseudonymizer("Studie-Köln-7", SECRET).pseudonymize(ds)

    assert ds.SpecificCharacterSet == "ISO_IR 100"
    assert pydicom.dcmread(io.BytesIO(_written(ds))).PatientID == "Studie-Köln-7"


def test_file_meta_follows_the_new_sop_instance_uid_even_if_it_disagreed_before():
    ds = _by_modality(_first_study_instances(), "CT")
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    Pseudonymizer(PSEUDONYM, SECRET).pseudonymize(ds)

    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_an_instance_without_file_meta_is_pseudonymized_and_gets_none():
    ds = _by_modality(_first_study_instances(), "CT")
    del ds.file_meta
    original_uid = ds.SOPInstanceUID
    Pseudonymizer(PSEUDONYM, SECRET).pseudonymize(ds)

    assert not hasattr(ds, "file_meta")
    assert ds.SOPInstanceUID != original_uid


# -- Validity --------------------------------------------------------------------------------


@pytest.mark.parametrize("patient", [LATIN1_PATIENT, UTF8_PATIENT], ids=["latin-1", "utf-8"])
def test_pseudonymized_instances_stay_valid_dicom(patient: PlantedPatient):
    originals = _planted_study(patient)
    for original, ds in zip(originals, _pseudonymized(originals), strict=True):
        written = _written(ds)
        read_back = pydicom.dcmread(io.BytesIO(written))

        assert written[128:132] == b"DICM"
        assert read_back.file_meta.MediaStorageSOPInstanceUID == read_back.SOPInstanceUID
        assert read_back.PatientName == PSEUDONYM
        assert read_back.SpecificCharacterSet == patient.character_set
        if "PixelData" in original:
            assert read_back.PixelData == original.PixelData
            assert (read_back.pixel_array == original.pixel_array).all()


def test_a_file_read_from_disk_is_pseudonymized_like_one_in_memory(tmp_path: Path):
    """Instances arrive as files or network bytes, with values still raw until touched."""
    ds = _by_modality(_planted_study(UTF8_PATIENT), "SR")
    path = tmp_path / "report.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    from_disk = pydicom.dcmread(path)
    pseudonymizer = Pseudonymizer(PSEUDONYM, SECRET)
    pseudonymizer.pseudonymize(from_disk)
    pseudonymizer.pseudonymize(ds)

    assert _written(from_disk) == _written(ds)


def test_generated_uid_roots_do_not_leak_through_private_uid_values():
    ds = _by_modality(_first_study_instances(), "CT")
    block = ds.private_block(0x0021, "ACME UIDS", create=True)
    private_uid = generate_uid()
    block.add_new(0x01, "UI", private_uid)
    Pseudonymizer(PSEUDONYM, SECRET, keep_private_tags=[(0x0021, 0x1001)]).pseudonymize(ds)

    assert ds[0x00211001].value not in ("", private_uid)


def test_an_item_shared_by_two_sequences_is_pseudonymized_once():
    """In-memory datasets may share item objects; a second pass would remap UIDs twice."""
    ds = _by_modality(_first_study_instances(), "PR")
    shared = ds.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
    ds.GraphicAnnotationSequence[0].ReferencedImageSequence = Sequence([shared])
    shared.add_new(0x00080012, "DA", ds.StudyDate)  # InstanceCreationDate, to be shifted once
    unshared = copy.deepcopy(ds)
    unshared.GraphicAnnotationSequence[0].ReferencedImageSequence = Sequence(
        [copy.deepcopy(shared)]
    )
    pseudonymizer = Pseudonymizer(PSEUDONYM, SECRET, shift_dates=True)
    pseudonymizer.pseudonymize(ds)
    pseudonymizer.pseudonymize(unshared)

    assert _written(ds) == _written(unshared)
