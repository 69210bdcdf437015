"""ADIT's pseudonymizer: one DICOM instance at a time, to the PS3.15 Basic Profile.

Every app that hands out pseudonymized data (transfers, downloads, DICOMweb) builds one
``Pseudonymizer`` per job and passes each retrieved instance through ``pseudonymize`` before
storing it. The work is split between dicognito and this module:

* dicognito replaces person names, accession numbers and study IDs with values derived from an
  MD5 of a seed and the original value. The seed is an HMAC of the project secret, so the same
  original always gets the same replacement within a project, in every job and every process,
  and a different one in another project.
* UIDs are replaced here, the same way keyed by the seed, but under a root that is meant for
  generated UIDs: ``2.25.`` and a UUID-shaped 128-bit number (PS3.5 B.2), or the
  organisation's root from the PSEUDONYMIZATION_UID_ROOT setting (dicognito's bare ``2.``
  lies under the joint ISO/ITU arc, which nobody assigned to it). Class UIDs, transfer syntaxes
  and the standard's own UIDs are kept.
* This module applies the attribute table ``_RULES`` (a condensed PS3.15 Table E.1-1 for the
  attributes that occur in practice) in the same walk over the dataset, file meta information
  and every nested sequence item included. It removes private attributes, overlays and curves,
  keeps dates unless asked to shift them, empties the birth date, and afterwards scrubs the
  patient's known identifiers (names in several spellings, IDs, accession number, birth date,
  address) out of every free text that is kept: descriptions, SR text items, PR text notes.
* Finally it writes the pseudonym, the clinical trial attributes and the de-identification
  record (Patient Identity Removed, De-identification Method and its code sequence).

What is claimed in DeidentificationMethodCodeSequence (CID 7050) and why:

* 113100 Basic Application Confidentiality Profile.
* 113106 Retain Longitudinal Temporal Information Full Dates Option when dates are kept, or
  113107 ... Modified Dates Option when they are shifted. The patient's birth date is emptied
  in both cases: neither option retains it, and the age is kept instead.
* 113108 Retain Patient Characteristics Option: age, sex, size and weight are kept (age is
  derived from the birth date when missing); ethnic group, pregnancy and smoking status are not.
* 113105 Clean Descriptors Option: study, series, protocol and procedure descriptions are kept
  but scrubbed. Free-text comment attributes are removed instead, since nobody controls them.
* 113104 Clean Structured Content Option: SR content is kept; person names in it are replaced
  and its text values scrubbed.
* 113111 Retain Safe Private Option, only when the caller lists private tags to keep.

Scrubbing replaces what is known to identify: the names, IDs and dates found in the instance
itself. A free text that names someone who appears nowhere else in the instance (a relative, a
colleague) is not caught; that residual risk is why comment attributes are removed outright.
Burned-in pixel annotations are not touched either; the caller excludes such modalities.
"""

from __future__ import annotations

import base64
import datetime
import enum
import functools
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

import dicognito
from dicognito.anonymizer import Anonymizer
from dicognito.datetimeanonymizer import DateTimeAnonymizer
from dicognito.element_anonymizer import ElementAnonymizer
from dicognito.randomizer import Randomizer
from django.conf import settings
from django.core.exceptions import ValidationError
from pydicom._dicom_dict import DicomDictionary
from pydicom.charset import python_encoding
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from adit.core.dicom.files import forget_received
from adit.core.validators import MAX_UID_LENGTH, validate_uid_root

MAX_PSEUDONYM_LENGTH = 64

# Changing the label changes every pseudonymized UID of every project; never change it.
_SEED_LABEL = b"adit-pseudonymizer-seed-v1"
# Keys the new UIDs apart from the other keyed hashes of the seed; never change it either.
_UID_LABEL = b"adit-pseudonymizer-uid-v1\x00"
# PS3.5 B.2: a UID made of a UUID is 2.25 and the UUID as one decimal number.
_UUID_UID_ROOT = "2.25"
# Replaces identifiers of people other than the patient inside kept free text.
_REDACTION_MARK = "***"
# Fills Type 1 attributes the Basic Profile replaces with a dummy ("D") and dicognito ignores.
_DUMMY_TEXT = "REMOVED"
# Shorter identifiers ("12", "Li") are too likely to match ordinary words and numbers.
_MIN_NAME_PART_LENGTH = 2
_MIN_IDENTIFIER_LENGTH = 3

_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC"})
_MAX_TEXT_LENGTHS = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10240}
# Value representations dicognito has no rule for, by VR or by keyword; skipping its handler
# chain for them keeps the walk fast (pixel data, numbers, code strings).
_VRS_DICOGNITO_IGNORES = frozenset(
    {"AE", "AS", "AT", "CS", "DS", "FD", "FL", "IS", "OB", "OD", "OF", "OL", "OV", "OW"}
    | {"SL", "SS", "SV", "UL", "US", "UV"}
)
_STANDARD_UID_ROOT = "1.2.840.10008."
_TRANSFER_SYNTAX_UID_TAG = tag_for_keyword("TransferSyntaxUID")


class _Action(enum.Enum):
    """What happens to an attribute; the letters are those of PS3.15 Table E.1-1."""

    REMOVE = "X"
    EMPTY = "Z"  # kept with zero length, where the attribute is Type 2 somewhere
    DUMMY = "D"  # a fixed dummy text
    KEYED_HASH = "D (keyed hash)"  # the same original gives the same dummy within a project
    DICOGNITO = "D (dicognito)"  # dicognito's consistent replacement
    NEW_UID = "U"  # a new UID, the same for the same original within a project
    PSEUDONYM = "D (pseudonym)"
    CLEAN = "C"  # kept, with the patient's known identifiers scrubbed out of its text
    KEEP = "K"
    DATE = "K or shifted"  # by the shift_dates policy


@dataclass(frozen=True)
class _Rule:
    action: _Action
    keywords: tuple[str, ...]


# A condensed PS3.15 Table E.1-1 with the options claimed in the module docstring. Attributes
# not listed are handled by their value representation: dates by the date policy, UIDs by
# _new_uid, person names by dicognito, other text is cleaned, everything else kept.
_RULES = (
    # The patient's identity becomes the pseudonym; everything else about the person goes.
    _Rule(_Action.PSEUDONYM, ("PatientName", "PatientID")),
    _Rule(_Action.EMPTY, ("PatientBirthDate",)),
    _Rule(
        _Action.REMOVE,
        (
            "IssuerOfPatientID",
            "IssuerOfPatientIDQualifiersSequence",
            "PatientBirthTime",
            "PatientBirthDateInAlternativeCalendar",
            "PatientDeathDateInAlternativeCalendar",
            "PatientAlternativeCalendar",
            "OtherPatientIDs",
            "OtherPatientIDsSequence",
            "OtherPatientNames",
            "PatientBirthName",
            "PatientMotherBirthName",
            "PatientAddress",
            "PatientTelephoneNumbers",
            "PatientTelecomInformation",
            "CountryOfResidence",
            "RegionOfResidence",
            "MilitaryRank",
            "BranchOfService",
            "MedicalRecordLocator",
            "Occupation",
            "EthnicGroup",
            "PatientReligiousPreference",
            "PatientInsurancePlanCodeSequence",
            "InsurancePlanIdentification",
            "PatientPrimaryLanguageCodeSequence",
            "PatientPrimaryLanguageModifierCodeSequence",
            "ResponsiblePerson",
            "ResponsibleOrganization",
            "PatientState",
            "PregnancyStatus",
            "SmokingStatus",
            "LastMenstrualDate",
            "MedicalAlerts",
            "Allergies",
            "SpecialNeeds",
            "AdditionalPatientHistory",
            "PatientComments",  # rewritten from the trial attributes when a trial is given
            "ReferencedPatientSequence",
            "ReferencedPatientPhotoSequence",
            "ReferencedPatientAliasSequence",
        ),
    ),
    # Retain Patient Characteristics Option.
    _Rule(
        _Action.KEEP,
        ("PatientAge", "PatientSex", "PatientSize", "PatientWeight", "PatientSexNeutered"),
    ),
    # People other than the patient. Type 2 names are emptied, Type 3 ones removed; names that
    # are Type 1 (verifying observer, SR person names) fall through to dicognito's dummy names.
    _Rule(_Action.EMPTY, ("ReferringPhysicianName", "ConsultingPhysicianName")),
    _Rule(_Action.EMPTY, ("ContentCreatorName", "ReviewerName")),
    _Rule(_Action.EMPTY, ("VerifyingObserverIdentificationCodeSequence",)),
    _Rule(_Action.DUMMY, ("VerifyingOrganization",)),
    _Rule(
        _Action.REMOVE,
        (
            "ReferringPhysicianAddress",
            "ReferringPhysicianTelephoneNumbers",
            "ReferringPhysicianIdentificationSequence",
            "ConsultingPhysicianIdentificationSequence",
            "PhysiciansOfRecord",
            "PhysiciansOfRecordIdentificationSequence",
            "PerformingPhysicianName",
            "PerformingPhysicianIdentificationSequence",
            "NameOfPhysiciansReadingStudy",
            "PhysiciansReadingStudyIdentificationSequence",
            "OperatorsName",
            "OperatorIdentificationSequence",
            "RequestingPhysician",
            "RequestingPhysicianIdentificationSequence",
            "RequestingService",
            "ScheduledPerformingPhysicianName",
            "ScheduledPerformingPhysicianIdentificationSequence",
            "NamesOfIntendedRecipientsOfResults",
            "IntendedRecipientsOfResultsIdentificationSequence",
            "ContentCreatorIdentificationCodeSequence",
            "PersonIdentificationCodeSequence",
            "PersonAddress",
            "PersonTelephoneNumbers",
            "PersonTelecomInformation",
            "AuthorObserverSequence",
            "ParticipantSequence",
            "CustodialOrganizationSequence",
            "HumanPerformerName",
            "HumanPerformerOrganization",
            "ActualHumanPerformersSequence",
            "OrderEnteredBy",
            "OrderEntererLocation",
            "OrderCallbackPhoneNumber",
            "OrderCallbackTelecomInformation",
        ),
    ),
    # Institution, places and devices: they narrow down where and when a patient was seen.
    # Device serial and detector IDs are Type 1 in the enhanced IODs, so they get a keyed
    # dummy that still tells devices apart.
    _Rule(_Action.KEYED_HASH, ("DeviceSerialNumber", "DetectorID")),
    _Rule(
        _Action.REMOVE,
        (
            "InstitutionName",
            "InstitutionAddress",
            "InstitutionalDepartmentName",
            "InstitutionCodeSequence",
            "InstitutionalDepartmentTypeCodeSequence",
            "StationName",
            "StationAETitle",
            "RetrieveAETitle",
            "RetrieveURL",
            "RetrieveURI",
            "PerformedStationAETitle",
            "PerformedStationName",
            "PerformedLocation",
            "ScheduledStationAETitle",
            "ScheduledStationName",
            "ScheduledProcedureStepLocation",
            "ScheduledStudyLocation",
            "ScheduledStudyLocationAETitle",
            "RequestedProcedureLocation",
            "CurrentPatientLocation",
            "PatientInstitutionResidence",
            "NetworkID",
            "GantryID",
            "GeneratorID",
            "PlateID",
            "CassetteID",
            "UniqueDeviceIdentifier",
            "UDISequence",
            "DeviceDescription",
            "LongDeviceDescription",
            "TimezoneOffsetFromUTC",
        ),
    ),
    # Identifiers of the visit, order and procedure. The accession number and study ID are
    # replaced consistently (they tell studies apart); order numbers and the requested
    # procedure ID are Type 2 in SR request references, so they are emptied, not removed.
    _Rule(_Action.DICOGNITO, ("AccessionNumber", "StudyID")),
    _Rule(
        _Action.EMPTY,
        (
            "RequestedProcedureID",
            "PlacerOrderNumberImagingServiceRequest",
            "FillerOrderNumberImagingServiceRequest",
            "PlacerOrderNumberImagingServiceRequestRetired",
            "FillerOrderNumberImagingServiceRequestRetired",
            "PlacerOrderNumberProcedure",
            "FillerOrderNumberProcedure",
        ),
    ),
    _Rule(
        _Action.REMOVE,
        (
            "PerformedProcedureStepID",
            "ScheduledProcedureStepID",
            "AdmissionID",
            "IssuerOfAdmissionID",
            "IssuerOfAdmissionIDSequence",
            "ServiceEpisodeID",
            "ServiceEpisodeDescription",
            "IssuerOfServiceEpisodeIDSequence",
            "StudyIDIssuer",
        ),
    ),
    # Clean Descriptors Option: descriptions researchers select series by stay, scrubbed.
    _Rule(
        _Action.CLEAN,
        (
            "StudyDescription",
            "SeriesDescription",
            "ProtocolName",
            "RequestedProcedureDescription",
            "PerformedProcedureStepDescription",
            "AcquisitionDeviceProcessingDescription",
            "DerivationDescription",
            "ContrastBolusAgent",
        ),
    ),
    # Free-text comments and reasons: typed by anyone about anything; removed, not cleaned.
    _Rule(
        _Action.REMOVE,
        (
            "ImageComments",
            "AcquisitionComments",
            "StudyComments",
            "VisitComments",
            "RequestedProcedureComments",
            "ImagingServiceRequestComments",
            "CommentsOnThePerformedProcedureStep",
            "FrameComments",
            "ImagePresentationComments",
            "IdentifyingComments",
            "ScheduledProcedureStepDescription",
            "ReasonForStudy",
            "ReasonForTheRequestedProcedure",
            "ReasonForTheImagingServiceRequest",
            "ReasonForVisit",
            "ReasonForVisitCodeSequence",
            "AdmittingDiagnosesDescription",
            "AdmittingDiagnosesCodeSequence",
        ),
    ),
    # Sequences that copy identifying attributes of other objects, old values or signatures.
    _Rule(
        _Action.REMOVE,
        (
            "RequestAttributesSequence",
            "OriginalAttributesSequence",
            "ModifiedAttributesSequence",
            "ReferencedStudySequence",
            "IconImageSequence",
            "DigitalSignaturesSequence",
            "ReferencedDigitalSignatureSequence",
            "ReferencedSOPInstanceMACSequence",
            "DataSetTrailingPadding",
        ),
    ),
    _Rule(
        _Action.EMPTY, ("ReferencedPerformedProcedureStepSequence", "AcquisitionContextSequence")
    ),
    # Clean Structured Content Option: walked into like every sequence, listed for the record.
    _Rule(
        _Action.CLEAN,
        ("ContentSequence", "GraphicAnnotationSequence", "VerifyingObserverSequence"),
    ),
    # Clinical trial attributes of an earlier trial would link the subject to it; the ones of
    # this project are written afterwards.
    _Rule(
        _Action.REMOVE,
        (
            "ClinicalTrialSponsorName",
            "ClinicalTrialProtocolID",
            "ClinicalTrialProtocolName",
            "IssuerOfClinicalTrialProtocolID",
            "OtherClinicalTrialProtocolIDsSequence",
            "ClinicalTrialSiteID",
            "ClinicalTrialSiteName",
            "IssuerOfClinicalTrialSiteID",
            "ClinicalTrialSubjectID",
            "IssuerOfClinicalTrialSubjectID",
            "ClinicalTrialSubjectReadingID",
            "IssuerOfClinicalTrialSubjectReadingID",
            "ClinicalTrialTimePointID",
            "ClinicalTrialTimePointDescription",
            "IssuerOfClinicalTrialTimePointID",
            "ClinicalTrialCoordinatingCenterName",
            "ClinicalTrialProtocolEthicsCommitteeName",
            "ClinicalTrialProtocolEthicsCommitteeApprovalNumber",
            "ClinicalTrialSeriesID",
            "ClinicalTrialSeriesDescription",
            "IssuerOfClinicalTrialSeriesID",
            "ConsentForClinicalTrialUseSequence",
        ),
    ),
    # File meta information: where the file came from. The SOP instance UID is remapped with
    # the dataset's and then copied from it.
    _Rule(
        _Action.REMOVE,
        (
            "SourceApplicationEntityTitle",
            "SendingApplicationEntityTitle",
            "ReceivingApplicationEntityTitle",
            "SourcePresentationAddress",
            "SendingPresentationAddress",
            "ReceivingPresentationAddress",
            "PrivateInformationCreatorUID",
            "PrivateInformation",
        ),
    ),
)


def _rules_by_tag() -> dict[int, _Action]:
    actions: dict[int, _Action] = {}
    for rule in _RULES:
        for keyword in rule.keywords:
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise LookupError(f"Unknown DICOM keyword in the pseudonymizer rules: {keyword}")
            if tag in actions:
                raise LookupError(
                    f"DICOM keyword listed twice in the pseudonymizer rules: {keyword}"
                )
            actions[tag] = rule.action
    return actions


_ACTIONS = _rules_by_tag()

# What happens to an attribute ``_RULES`` does not list, by its value representation; other
# VRs (person names; sequences, which are walked into) go to dicognito.
_ACTIONS_BY_VR = {
    **dict.fromkeys(_VRS_DICOGNITO_IGNORES, _Action.KEEP),
    **dict.fromkeys(_TEXT_VRS, _Action.CLEAN),
    "DA": _Action.DATE,
    "DT": _Action.DATE,
    # Times are shifted together with their date, by the date's rule.
    "TM": _Action.KEEP,
    # Except the standard's own UIDs and those naming a class or a transfer syntax.
    "UI": _Action.NEW_UID,
    # Unknown content cannot be checked; URLs carry host names and original UIDs.
    "UN": _Action.REMOVE,
    "UR": _Action.REMOVE,
}
# Overlay planes (60xx) may hold burned-in text; curves (50xx) are retired free data.
_REMOVED_GROUPS = ((0x5000, 0x501E), (0x6000, 0x601E))


def _in_removed_group(group: int) -> bool:
    return any(first <= group <= last for first, last in _REMOVED_GROUPS)


_KEPT_AS_THEY_ARE = frozenset({_Action.KEEP, _Action.DATE, _Action.NEW_UID})


def may_identify(tag: int, vr: str) -> bool:
    """Whether the pseudonymizer changes or removes the attribute's value because it may
    identify the patient (a page shows such values only to those who may see them): listed
    rules first, then by value representation, as the pseudonymizer decides."""
    if BaseTag(tag).is_private:
        return True
    action = _ACTIONS.get(tag)
    if action is not None:
        return action not in _KEPT_AS_THEY_ARE
    return vr in ("PN", "UR") or vr in _TEXT_VRS


def _tags(*keywords: str) -> frozenset[int]:
    tags = {tag_for_keyword(keyword) for keyword in keywords}
    assert None not in tags, keywords
    return frozenset(tag for tag in tags if tag is not None)


# Values of these attributes are the patient's identity; in kept text they become the pseudonym.
_PATIENT_IDENTITY_TAGS = _tags(
    "PatientName", "PatientID", "OtherPatientNames", "OtherPatientIDs", "PatientBirthName"
)
# Values of these (and of every person name) are replaced by the redaction mark in kept text.
_SCRUBBED_IDENTIFIER_TAGS = _PATIENT_IDENTITY_TAGS | _tags(
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "AccessionNumber",
    "AdmissionID",
    "RequestedProcedureID",
    "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
)

# PS3.16 CID 7050 (De-identification Method), coding scheme DCM.
_BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
_CLEAN_STRUCTURED_CONTENT = ("113104", "Clean Structured Content Option")
_CLEAN_DESCRIPTORS = ("113105", "Clean Descriptors Option")
_RETAIN_FULL_DATES = ("113106", "Retain Longitudinal Temporal Information Full Dates Option")
_RETAIN_MODIFIED_DATES = (
    "113107",
    "Retain Longitudinal Temporal Information Modified Dates Option",
)
_RETAIN_PATIENT_CHARACTERISTICS = ("113108", "Retain Patient Characteristics Option")
_RETAIN_SAFE_PRIVATE = ("113111", "Retain Safe Private Option")


class Pseudonymizer:
    """Pseudonymizes DICOM instances of one project, consistently across jobs and processes.

    Build one per job (construction is cheap) and call ``pseudonymize`` for every instance. An
    instance is not thread-safe: it keeps per-instance findings while it works.

    Example::

        pseudonymizer = Pseudonymizer("SUBJ-007", project.secret, trial_protocol_id="LUNG-1")
        for dataset in retrieved_instances:
            pseudonymizer.pseudonymize(dataset)
            store(dataset)
    """

    def __init__(
        self,
        pseudonym: str,
        project_secret: str,
        *,
        shift_dates: bool = False,
        trial_protocol_id: str = "",
        trial_protocol_name: str = "",
        keep_private_tags: Collection[tuple[int, int]] | None = None,
        uid_root: str | None = None,
    ) -> None:
        """Validates the settings and prepares the anonymizer.

        Args:
            pseudonym: Becomes PatientID and PatientName; at most 64 characters, without
                backslash, control characters or leading and trailing spaces.
            project_secret: Keys every replacement: the same secret maps the same UID, name or
                accession number to the same replacement, another secret to another one.
            shift_dates: Shift all dates and times by one offset per project (62 to 730 days
                back) instead of keeping them.
            trial_protocol_id: Written to ClinicalTrialProtocolID and into PatientComments.
            trial_protocol_name: Written to ClinicalTrialProtocolName.
            keep_private_tags: Private (group, element) tags to keep (with their private
                creator); every other private attribute is removed. Kept text values are
                scrubbed like public ones; binary values are kept as they are.
            uid_root: Root of the new UIDs: "" for 2.25 (UUID-derived), else an
                organisation's root of at most 24 characters. None: the
                PSEUDONYMIZATION_UID_ROOT setting.

        Raises:
            ValueError: If the pseudonym, the secret, a trial value, a private tag or the UID
                root is invalid; the message says which and why.
        """
        _check_text_value("pseudonym", pseudonym, required=True)
        _check_text_value("trial protocol ID", trial_protocol_id, required=False)
        _check_text_value("trial protocol name", trial_protocol_name, required=False)
        if not project_secret:
            raise ValueError(
                "The project secret must not be empty: without it anyone could recompute the "
                "pseudonymized UIDs from the original ones."
            )
        kept_private_tags = _private_tags_to_keep(keep_private_tags or ())
        if uid_root is None:
            uid_root = settings.PSEUDONYMIZATION_UID_ROOT
        if uid_root:
            try:
                validate_uid_root(uid_root)
            except ValidationError as err:
                raise ValueError(" ".join(err.messages)) from err

        self._pseudonym = pseudonym
        self._shift_dates = shift_dates
        self._trial_protocol_id = trial_protocol_id
        self._trial_protocol_name = trial_protocol_name
        self._keeps_private_tags = bool(kept_private_tags)

        seed = _derive_seed(project_secret)
        self._cleaner = _BasicProfileCleaner(
            pseudonym=pseudonym,
            seed=seed,
            shift_dates=shift_dates,
            kept_private_tags=kept_private_tags,
            uid_root=uid_root or _UUID_UID_ROOT,
        )
        self._anonymizer = Anonymizer(seed=seed)
        # Runs before dicognito's own handlers and decides which of them get an element at all.
        self._anonymizer.add_element_handler(self._cleaner)
        self._deidentification_method = self._describe_method()
        self._deidentification_codes = self._claimed_codes()
        self._added_texts = (pseudonym, trial_protocol_id, trial_protocol_name)

    def pseudonymize(self, dataset: Dataset) -> None:
        """Pseudonymizes one instance in place, file meta information included.

        Args:
            dataset: A complete instance as retrieved; it is changed in place.

        Raises:
            ValueError: If a value cannot be processed (the instance must then not be stored).
        """
        # Never sent as the bytes it arrived in, whatever a comparison with them would find.
        forget_received(dataset)
        original_birth_date = _first_text(dataset.get("PatientBirthDate"))
        original_study_date = _first_text(dataset.get("StudyDate"))

        findings = _InstanceFindings()
        self._cleaner.findings = findings
        # dicognito walks file_meta unconditionally; instances received over the network may
        # have none, so a temporary empty one is lent and taken back.
        lends_file_meta = not hasattr(dataset, "file_meta")
        if lends_file_meta:
            dataset.file_meta = FileMetaDataset()
        try:
            self._anonymizer.anonymize(dataset)
        finally:
            self._cleaner.findings = None
            if lends_file_meta:
                del dataset.file_meta

        findings.scrub_texts(self._pseudonym)
        self._write_identity(dataset, original_birth_date, original_study_date)
        self._write_deidentification_record(dataset)
        if hasattr(dataset, "file_meta"):
            _align_file_meta(dataset)
        _ensure_encodable(dataset, self._added_texts)

    def _write_identity(
        self, dataset: Dataset, original_birth_date: str, original_study_date: str
    ) -> None:
        dataset.PatientID = self._pseudonym
        dataset.PatientName = self._pseudonym
        # The birth date is gone; the age at the study is what research needs of it.
        if not dataset.get("PatientAge"):
            age = _age_string(original_birth_date, original_study_date)
            if age:
                dataset.PatientAge = age
        trial = _trial_attributes(
            dataset, self._pseudonym, self._trial_protocol_id, self._trial_protocol_name
        )
        for keyword, value in trial.items():
            setattr(dataset, keyword, value)

    def _write_deidentification_record(self, dataset: Dataset) -> None:
        # Any earlier record is replaced: codes of another tool could claim options (retained
        # UIDs, say) that no longer hold.
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = list(self._deidentification_method)
        codes = Sequence()
        for value, meaning in self._deidentification_codes:
            code = Dataset()
            code.CodeValue = value
            code.CodingSchemeDesignator = "DCM"
            code.CodeMeaning = meaning
            codes.append(code)
        dataset.DeidentificationMethodCodeSequence = codes
        dataset.LongitudinalTemporalInformationModified = (
            "MODIFIED" if self._shift_dates else "UNMODIFIED"
        )

    def _describe_method(self) -> tuple[str, ...]:
        return (
            "ADIT Pseudonymizer",
            f"dicognito {dicognito.__version__}",
            "PS3.15 Basic Profile",
            "Dates shifted" if self._shift_dates else "Dates kept",
            "Patient characteristics kept",
            "Descriptors and structured content cleaned",
            "Listed private attributes kept"
            if self._keeps_private_tags
            else "Private attributes removed",
        )

    def _claimed_codes(self) -> tuple[tuple[str, str], ...]:
        codes = [
            _BASIC_PROFILE,
            _CLEAN_STRUCTURED_CONTENT,
            _CLEAN_DESCRIPTORS,
            _RETAIN_MODIFIED_DATES if self._shift_dates else _RETAIN_FULL_DATES,
            _RETAIN_PATIENT_CHARACTERISTICS,
        ]
        if self._keeps_private_tags:
            codes.append(_RETAIN_SAFE_PRIVATE)
        return tuple(codes)


class _InstanceFindings:
    """Identifiers seen while walking one instance, and the kept texts to scrub of them."""

    def __init__(self) -> None:
        self.patient_literals: set[str] = set()
        self.other_literals: set[str] = set()
        self.texts: list[DataElement] = []
        # Datasets built in memory may put one item object into two sequences (a PR's image
        # reference, say); the walk then meets its elements twice, and a second pass would
        # remap UIDs and shift dates again. Holding the elements keeps their ids from being
        # reused by elements created later in the walk.
        self._visited: dict[int, DataElement] = {}

    def first_visit(self, element: DataElement) -> bool:
        """Whether the walk meets this element object for the first time."""
        if id(element) in self._visited:
            return False
        self._visited[id(element)] = element
        return True

    def note(self, tag: int, vr: str, value: object) -> None:
        """Remembers the spellings under which an identifying value may appear in text."""
        literals = self.patient_literals if tag in _PATIENT_IDENTITY_TAGS else self.other_literals
        for text in _texts_of(value):
            if vr == "PN":
                literals.update(_name_literals(text))
            elif vr == "DA":
                literals.update(_date_literals(text))
            else:
                literals.update(_identifier_literals(text))

    def note_removed_sequence(self, sequence: Iterable[Dataset]) -> None:
        """Remembers identifiers inside a sequence that is removed without being walked."""
        for item in sequence:
            for element in item.iterall():
                if element.VR == "PN" or element.tag in _SCRUBBED_IDENTIFIER_TAGS:
                    self.note(element.tag, element.VR, element.value)

    def scrub_texts(self, pseudonym: str) -> None:
        """Replaces the noted identifiers in every kept text element."""
        if not self.texts:
            return
        replacements = {literal: _REDACTION_MARK for literal in self.other_literals}
        # The patient's own identifiers win where a literal is both (a namesake physician).
        replacements.update({literal: pseudonym for literal in self.patient_literals})
        scrub = _compile_scrubber(tuple(sorted(replacements.items())))
        if scrub is None:
            return
        for element in self.texts:
            value = element.value
            if not value:
                continue
            max_length = _MAX_TEXT_LENGTHS.get(element.VR)
            if isinstance(value, MultiValue):
                scrubbed = [_truncate(scrub(str(item)), max_length) for item in value]
                if scrubbed != [str(item) for item in value]:
                    element.value = scrubbed
            elif isinstance(value, str):
                scrubbed_text = _truncate(scrub(value), max_length)
                if scrubbed_text != value:
                    element.value = scrubbed_text


class _BasicProfileCleaner(ElementAnonymizer):
    """The element handler that applies ``_RULES`` ahead of dicognito's own handlers.

    Returning True tells dicognito the element is done; False lets dicognito's handlers
    replace it (UIDs, person names, accession number, study ID).
    """

    def __init__(
        self,
        *,
        pseudonym: str,
        seed: str,
        shift_dates: bool,
        kept_private_tags: frozenset[int],
        uid_root: str,
    ) -> None:
        self.findings: _InstanceFindings | None = None
        self._pseudonym = pseudonym
        self._hash_key = seed.encode()
        self._uid_root = uid_root
        self._kept_private_tags = kept_private_tags
        self._date_shifter = DateTimeAnonymizer(_date_offset_hours(seed)) if shift_dates else None

    def __call__(self, dataset: Dataset, data_element: DataElement) -> bool:
        findings = self.findings
        assert findings is not None, "The cleaner only runs inside Pseudonymizer.pseudonymize"
        if not findings.first_visit(data_element):
            return True
        tag = data_element.tag
        vr = data_element.VR
        # Noted before anything replaces the value, so the original can be scrubbed from text
        # elements visited earlier in the walk.
        if vr == "PN" or tag in _SCRUBBED_IDENTIFIER_TAGS:
            findings.note(tag, vr, data_element.value)
        action = _ACTIONS.get(tag)
        if action is None:
            action = self._action_by_kind(tag, vr, data_element)
        return self._apply(action, dataset, data_element, findings)

    def describe_actions(self) -> Iterator[str]:
        """Describes the rules, for dicognito's ``describe_actions``."""
        for rule in _RULES:
            action = rule.action.name.replace("_", " ").capitalize()
            yield f"{action}: {', '.join(rule.keywords)}"
        yield "Remove private attributes that were not listed to keep, overlays and curves"

    def _action_by_kind(self, tag: BaseTag, vr: str, data_element: DataElement) -> _Action:
        if tag.is_private:
            if tag not in self._kept_private_tags:
                return _Action.REMOVE
            if vr in ("UN", "UR"):
                # Private data read without its dictionary is UN; the caller vouched for it.
                return _Action.KEEP
        if _in_removed_group(tag.group):
            return _Action.REMOVE
        action = _ACTIONS_BY_VR.get(vr, _Action.DICOGNITO)
        if action is _Action.NEW_UID and (
            _is_standard_uid(data_element.value) or _names_a_class_or_syntax(tag)
        ):
            return _Action.KEEP
        return action

    def _apply(
        self,
        action: _Action,
        dataset: Dataset,
        data_element: DataElement,
        findings: _InstanceFindings,
    ) -> bool:
        if action is _Action.DICOGNITO:
            return False
        if action is _Action.REMOVE:
            if data_element.VR == "SQ" and data_element.value:
                findings.note_removed_sequence(data_element.value)
            del dataset[data_element.tag]
        elif action is _Action.EMPTY:
            data_element.value = data_element.empty_value
        elif action is _Action.CLEAN:
            if data_element.VR in _TEXT_VRS:
                findings.texts.append(data_element)
        elif action is _Action.PSEUDONYM:
            data_element.value = self._pseudonym
        elif action is _Action.DUMMY:
            if data_element.value:
                data_element.value = _DUMMY_TEXT
        elif action is _Action.KEYED_HASH:
            hashes = [self._keyed_hash(text) for text in _texts_of(data_element.value)]
            data_element.value = hashes[0] if len(hashes) == 1 else hashes
        elif action is _Action.DATE:
            self._handle_date(dataset, data_element)
        elif action is _Action.NEW_UID:
            value = data_element.value
            if isinstance(value, (MultiValue, list, tuple)):
                data_element.value = [self._new_uid(str(uid)) if uid else "" for uid in value]
            elif value:
                data_element.value = self._new_uid(str(value))
        return True

    def _handle_date(self, dataset: Dataset, data_element: DataElement) -> None:
        if self._date_shifter is None or not data_element.value:
            return
        try:
            self._date_shifter(dataset, data_element)
        except ValueError:
            # A malformed date cannot be shifted, and keeping it would reveal the real one.
            data_element.value = data_element.empty_value
            time_keyword = data_element.keyword.replace("Date", "Time")
            if data_element.VR == "DA" and time_keyword and time_keyword in dataset:
                time_element = dataset.data_element(time_keyword)
                if time_element is not None:
                    time_element.value = time_element.empty_value

    def _keyed_hash(self, value: str) -> str:
        digest = hmac.new(self._hash_key, value.encode(), hashlib.sha256).digest()
        return base64.b32encode(digest[:10]).decode()  # 16 characters, fits SH

    def _new_uid(self, uid: str) -> str:
        """The UID that replaces ``uid``: the root and a UUID-shaped number keyed by the seed."""
        # Padding is no part of a UID; a PACS that keeps it must not get another pseudonym.
        original = uid.rstrip("\x00 ").encode()
        digest = hmac.new(self._hash_key, _UID_LABEL + original, hashlib.sha256).digest()
        number = _as_uuid_version_8(int.from_bytes(digest[:16], "big"))
        new_uid = f"{self._uid_root}.{number}"
        assert len(new_uid) <= MAX_UID_LENGTH, new_uid  # the root has at most 24 characters
        return new_uid


# -- The same profile in a browser ----------------------------------------------------------

# Keys the values a browser derives for an upload apart from those of transfers (the browser
# holds this key, so it must not be the seed); never change it.
_UPLOAD_KEY_LABEL = b"adit-upload-key-v1"
_BROWSER_METHOD = (
    "ADIT Pseudonymizer (in the uploader's browser)",
    "PS3.15 Basic Profile",
    "Dates kept",
    "Patient characteristics kept",
    "Descriptors cleaned",
    "Private attributes removed",
)
_BROWSER_CODES = (
    _BASIC_PROFILE,
    _CLEAN_DESCRIPTORS,
    _RETAIN_FULL_DATES,
    _RETAIN_PATIENT_CHARACTERISTICS,
)
_MAX_PROBLEMS_NAMED = 5


def upload_key(project_secret: str) -> str:
    """The key a browser derives an upload's new UIDs and replaced values with.

    It is derived from the project's seed, so every upload of a project maps an original UID
    to the same new one, but it is not the seed: whoever reads it in a browser can recompute
    no value of the project's transfers.
    """
    seed = _derive_seed(project_secret).encode()
    return hmac.new(seed, _UPLOAD_KEY_LABEL, hashlib.sha256).hexdigest()


@functools.cache
def _class_uid_tags() -> tuple[int, ...]:
    tags = [tag for tag, entry in DicomDictionary.items() if entry[4].endswith("ClassUID")]
    assert _TRANSFER_SYNTAX_UID_TAG is not None
    return tuple(sorted({*tags, _TRANSFER_SYNTAX_UID_TAG}))


def profile_for_browsers(uid_root: str | None = None) -> dict:
    """The attribute table as data, for the upload page's pseudonymizer: one table, applied
    by this module on the server and by the page's script in the browser.

    Actions are named as ``_Action`` members; tags are 8 upper-case hex digits. A browser
    replaces what dicognito replaces here (person names, accession number, study ID) with a
    keyed hash, and keeps dates (an upload offers no date shift). ``scrubbing`` says which
    identifiers cleaned texts lose and in which spellings.
    """
    if uid_root is None:
        uid_root = settings.PSEUDONYMIZATION_UID_ROOT
    return {
        "actions": {f"{tag:08X}": action.name for tag, action in sorted(_ACTIONS.items())},
        "actions_by_vr": {vr: action.name for vr, action in sorted(_ACTIONS_BY_VR.items())},
        "default_action": _Action.DICOGNITO.name,
        "removed_groups": [[f"{first:04X}", f"{last:04X}"] for first, last in _REMOVED_GROUPS],
        "kept_uid_tags": [f"{tag:08X}" for tag in _class_uid_tags()],
        "standard_uid_root": _STANDARD_UID_ROOT,
        "uid_root": uid_root or _UUID_UID_ROOT,
        "uid_label": _UID_LABEL.decode(),
        "dummy_text": _DUMMY_TEXT,
        "max_text_lengths": _MAX_TEXT_LENGTHS,
        "deidentification_method": list(_BROWSER_METHOD),
        "deidentification_codes": [list(code) for code in _BROWSER_CODES],
        # What _InstanceFindings notes and scrubs out of cleaned text, and how it spells it.
        "scrubbing": {
            "patient_identity_tags": [f"{tag:08X}" for tag in sorted(_PATIENT_IDENTITY_TAGS)],
            "identifier_tags": [f"{tag:08X}" for tag in sorted(_SCRUBBED_IDENTIFIER_TAGS)],
            "redaction_mark": _REDACTION_MARK,
            "min_name_part_length": _MIN_NAME_PART_LENGTH,
            "min_identifier_length": _MIN_IDENTIFIER_LENGTH,
            "transliterations": _translation_table(_TRANSLITERATIONS),
            "undecomposable_letters": _translation_table(_UNDECOMPOSABLE_LETTERS),
        },
    }


def _translation_table(table: Mapping[int, object]) -> dict[str, str]:
    return {chr(key): str(value) for key, value in table.items()}


def deidentification_problems(
    dataset: Dataset,
    pseudonym: str,
    uid_root: str | None = None,
    *,
    trial_protocol_id: str = "",
    trial_protocol_name: str = "",
) -> list[str]:
    """What shows that ``dataset`` did not go through the profile for ``pseudonym``: the
    server's check of each uploaded file, which a browser pseudonymized ("" problems: none).

    Checked: the identity is the pseudonym, no attribute the profile removes or empties has a
    value (private ones, overlays and unknown ones included) except the trial attributes the
    pseudonymizer writes (with exactly the values it writes), every instance's own UID lies
    under the root new UIDs are made under, and the file says its identity was removed.
    Replaced and cleaned values cannot be told from kept ones, so they are not checked.
    """
    if uid_root is None:
        uid_root = settings.PSEUDONYMIZATION_UID_ROOT
    uid_prefix = f"{uid_root or _UUID_UID_ROOT}."
    class_uid_tags = frozenset(_class_uid_tags())
    trial = {
        tag_for_keyword(keyword): value
        for keyword, value in _trial_attributes(
            dataset, pseudonym, trial_protocol_id, trial_protocol_name
        ).items()
    }
    problems: list[str] = []

    def check(element: DataElement) -> None:
        tag, vr = element.tag, element.VR
        name = element.keyword or f"({tag.group:04X},{tag.element:04X})"
        action = _ACTIONS.get(tag)
        if tag in trial:
            if _first_text(element.value) != trial[tag]:
                problems.append(f"{name} is not {trial[tag]!r}, what the upload writes")
        elif tag.is_private:
            problems.append(f"it has the private attribute {name}")
        elif _in_removed_group(tag.group):
            problems.append(f"it has the overlay or curve attribute {name}")
        elif action is _Action.REMOVE or (
            action is None and _ACTIONS_BY_VR.get(vr) is (_Action.REMOVE)
        ):
            problems.append(f"it has {name}, which the profile removes")
        elif action is _Action.EMPTY and not element.is_empty:
            problems.append(f"{name} is not empty")
        elif action is _Action.PSEUDONYM and _first_text(element.value) != pseudonym:
            problems.append(f"{name} is not the pseudonym {pseudonym!r}")
        elif vr == "UI" and tag not in class_uid_tags:
            for uid in _texts_of(element.value):
                if not uid.startswith((uid_prefix, _STANDARD_UID_ROOT)):
                    problems.append(f"{name} {uid} is not a pseudonymized UID")

    # The identity first: it tells most plainly what happened to a file.
    for keyword in ("PatientID", "PatientName"):
        if keyword not in dataset:
            problems.append(f"{keyword} is missing (it must be the pseudonym {pseudonym!r})")
        elif _first_text(dataset.get(keyword)) != pseudonym:
            problems.append(f"{keyword} is not the pseudonym {pseudonym!r}")
    if _first_text(dataset.get("PatientIdentityRemoved")) != "YES":
        problems.append("PatientIdentityRemoved is not YES")
    for element in dataset.file_meta.iterall() if hasattr(dataset, "file_meta") else ():
        check(element)
    for element in dataset.iterall():
        check(element)
    unique = list(dict.fromkeys(problems))
    if len(unique) > _MAX_PROBLEMS_NAMED:
        more = len(unique) - _MAX_PROBLEMS_NAMED
        unique = [*unique[:_MAX_PROBLEMS_NAMED], f"{more} more"]
    return unique


# -- Helpers ---------------------------------------------------------------------------------


def _trial_attributes(
    dataset: Dataset, pseudonym: str, trial_protocol_id: str, trial_protocol_name: str
) -> dict[str, str]:
    """The clinical trial attributes written into a pseudonymized instance, by keyword."""
    written = {}
    if trial_protocol_id:
        written["ClinicalTrialProtocolID"] = trial_protocol_id
    if trial_protocol_name:
        written["ClinicalTrialProtocolName"] = trial_protocol_name
    if trial_protocol_id:
        # The format upstream ADIT writes and downstream trial tools parse.
        session = (
            f"{pseudonym}_{_first_text(dataset.get('StudyDate'))}"
            f"-{_first_text(dataset.get('StudyTime'))}"
        )
        written["PatientComments"] = (
            f"Project:{trial_protocol_id} Subject:{pseudonym} Session:{session}"
        )
    return written


def _derive_seed(project_secret: str) -> str:
    """The dicognito seed of a project; an HMAC, so the secret cannot be read back from it."""
    return hmac.new(project_secret.encode(), _SEED_LABEL, hashlib.sha256).hexdigest()


def _date_offset_hours(seed: str) -> int:
    """The offset dicognito 0.19.0's Anonymizer derives from the seed, computed the same way.

    The shift is done here rather than by dicognito so that a malformed date can be emptied
    instead of aborting the instance; a test checks the offsets agree.
    """
    minimum_hours, maximum_hours = 62 * 24, 730 * 24
    offset = Randomizer(seed).to_int("date_offset") % (maximum_hours - minimum_hours)
    return -(offset + minimum_hours)


def _check_text_value(label: str, value: str, *, required: bool) -> None:
    if not value.strip():
        if required:
            raise ValueError(f"The {label} must not be empty.")
        if value:
            raise ValueError(f"The {label} must not consist of spaces only.")
        return
    if value != value.strip():
        # DICOM ignores such spaces, so " P1" and "P1" would be one patient to a PACS.
        raise ValueError(f"The {label} must not start or end with spaces.")
    if len(value) > MAX_PSEUDONYM_LENGTH:
        raise ValueError(
            f"The {label} must be at most {MAX_PSEUDONYM_LENGTH} characters long "
            f"(it has {len(value)})."
        )
    if "\\" in value:
        raise ValueError(f"The {label} must not contain a backslash (DICOM's value separator).")
    if any(unicodedata.category(character).startswith("C") for character in value):
        raise ValueError(f"The {label} must not contain control or invisible format characters.")


def _private_tags_to_keep(tags: Collection[tuple[int, int]]) -> frozenset[int]:
    """The listed private tags plus the private creator element that reserves each one."""
    kept: set[int] = set()
    for group, element in tags:
        if group % 2 == 0 or not 0x1000 <= element <= 0xFFFF:
            raise ValueError(
                f"({group:04X},{element:04X}) is not a private data element: the group must "
                "be odd and the element in 1000-FFFF."
            )
        kept.add(group << 16 | element)
        kept.add(group << 16 | element >> 8)
    return frozenset(kept)


def _as_uuid_version_8(number: int) -> int:
    """The 128-bit ``number`` with the version (8, custom) and variant bits of RFC 9562.

    A 2.25 UID claims to be a UUID; with these bits it is a valid one, which leaves 122 bits
    from the hash, as many as a random (version 4) UUID has.
    """
    assert 0 <= number < 1 << 128
    number = number & ~(0xF << 76) | 0x8 << 76
    return number & ~(0x3 << 62) | 0x2 << 62


def _names_a_class_or_syntax(tag: BaseTag) -> bool:
    # SOP class UIDs (private ones too) and transfer syntaxes say what an instance is, not whose.
    return tag == _TRANSFER_SYNTAX_UID_TAG or keyword_for_tag(tag).endswith("ClassUID")


def _is_standard_uid(value: object) -> bool:
    # Well-known UIDs of the standard (coding schemes, synchronization frames) identify nobody
    # and lose their meaning when remapped.
    texts = _texts_of(value)
    return bool(texts) and all(text.startswith(_STANDARD_UID_ROOT) for text in texts)


def _texts_of(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (MultiValue, list, tuple)):
        return [str(item) for item in value if item is not None and str(item)]
    if isinstance(value, bytes):
        return []
    return [str(value)]


def _first_text(value: object) -> str:
    texts = _texts_of(value)
    return texts[0] if texts else ""


def _truncate(text: str, max_length: int | None) -> str:
    return text if max_length is None else text[:max_length]


def _age_string(birth_date: str, on_date: str) -> str:
    """DICOM Age String (AS) of a person born on ``birth_date`` on ``on_date``, or ""."""
    try:
        born = datetime.datetime.strptime(birth_date, "%Y%m%d").date()
        on = datetime.datetime.strptime(on_date, "%Y%m%d").date()
    except ValueError:
        return ""
    if on < born:
        return ""
    years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    if years >= 2:
        return f"{min(years, 999):03d}Y"
    months = (on.year - born.year) * 12 + on.month - born.month - (on.day < born.day)
    if months >= 1:
        return f"{months:03d}M"
    return f"{(on - born).days:03d}D"


def _align_file_meta(dataset: Dataset) -> None:
    # Both were remapped from the same original, but a source with a mismatched file meta
    # would otherwise keep its original MediaStorageSOPInstanceUID mapping.
    if "SOPInstanceUID" in dataset:
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    if "SOPClassUID" in dataset:
        dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID


def _ensure_encodable(dataset: Dataset, texts: Iterable[str]) -> None:
    """Switches to UTF-8 when the character set cannot hold the texts ADIT wrote."""
    added = "".join(texts)
    if added.isascii():
        return
    charsets = _texts_of(dataset.get("SpecificCharacterSet"))
    if len(charsets) == 1:
        codec = python_encoding.get(charsets[0])
        if codec:
            try:
                added.encode(codec)
                return
            except UnicodeEncodeError:
                pass
    # Every text value is decoded by now (the walk visited each one), so pydicom re-encodes
    # all of them in UTF-8 when the dataset is written.
    dataset.SpecificCharacterSet = "ISO_IR 192"


# -- Scrubbing -------------------------------------------------------------------------------

# Spellings a name takes where umlauts and other letters are unavailable.
_TRANSLITERATIONS = str.maketrans(
    {"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"}
)
# Letters NFKD does not decompose into a base letter and a combining mark.
_UNDECOMPOSABLE_LETTERS = str.maketrans(
    {
        "ł": "l",
        "Ł": "L",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ß": "ss",
        "æ": "ae",
        "Æ": "Ae",
        "œ": "oe",
        "Œ": "Oe",
        "ı": "i",
    }
)


def _spellings(text: str) -> set[str]:
    """The text as written, without diacritics (Muller) and transliterated (Mueller)."""

    def fold(value: str) -> str:
        decomposed = unicodedata.normalize("NFKD", value.translate(_UNDECOMPOSABLE_LETTERS))
        return "".join(c for c in decomposed if not unicodedata.combining(c))

    return {text, fold(text), fold(text.translate(_TRANSLITERATIONS))}


@functools.lru_cache(maxsize=1024)
def _name_literals(person_name: str) -> frozenset[str]:
    """Lower-case forms in which a DICOM person name may appear in free text."""
    forms: set[str] = set()
    for group in person_name.split("="):  # alphabetic, ideographic and phonetic groups
        family, given, middle = ([part.strip() for part in group.split("^")] + ["", ""])[:3]
        words = [word for word in (family, given, middle) if word]
        forms.update(words)
        for word in words:
            forms.update(re.split(r"[\s\-]+", word))
        if family and given:
            forms.update(
                {
                    f"{given} {family}",
                    f"{family}, {given}",
                    f"{family},{given}",
                    f"{family} {given}",
                    f"{family}^{given}",
                }
            )
            if middle:
                forms.add(f"{given} {middle} {family}")
    return frozenset(
        spelling.lower()
        for form in forms
        for spelling in _spellings(form)
        if len(spelling) >= _MIN_NAME_PART_LENGTH
    )


@functools.lru_cache(maxsize=1024)
def _date_literals(date: str) -> frozenset[str]:
    """Common written forms of a DICOM date (German, ISO, US and British)."""
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", date.strip())
    if not match:
        return _identifier_literals(date)
    year, month, day = match.groups()
    forms = {
        f"{year}{month}{day}",
        f"{year}-{month}-{day}",
        f"{year}/{month}/{day}",
        f"{day}.{month}.{year}",
        f"{int(day)}.{int(month)}.{year}",
        f"{day}/{month}/{year}",
        f"{month}/{day}/{year}",
    }
    return frozenset(forms)


@functools.lru_cache(maxsize=1024)
def _identifier_literals(identifier: str) -> frozenset[str]:
    """An ID, address or number as written, spelled without diacritics, without leading zeros."""
    text = identifier.strip()
    forms = _spellings(text)
    if text.isdigit():
        forms.add(text.lstrip("0"))
    return frozenset(form.lower() for form in forms if len(form) >= _MIN_IDENTIFIER_LENGTH)


@functools.lru_cache(maxsize=256)
def _compile_scrubber(
    replacements: tuple[tuple[str, str], ...],
) -> Callable[[str], str] | None:
    """A function replacing each literal (whole words, any case) with its replacement."""
    if not replacements:
        return None
    by_literal = dict(replacements)
    # Longest first, so "jürgen müller" wins over "jürgen" at the same position.
    alternatives = "|".join(
        re.escape(literal) for literal in sorted(by_literal, key=len, reverse=True)
    )
    pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def replace(match: re.Match[str]) -> str:
        return by_literal.get(match.group(0).lower(), _REDACTION_MARK)

    def scrub(text: str) -> str:
        return pattern.sub(replace, text)

    return scrub
