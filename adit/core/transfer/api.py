"""Transfer jobs created through the REST API, the same way for every transfer kind: a kind
passes ``TransferJobCreateSerializer`` to ``transfer_job_kind(create_serializer=…)`` and its
endpoint (``/api/transfer-jobs/`` for selective transfer) creates its own jobs and tasks.

The body::

    {
      "source": "ORTHANC1",             # a server, by name or AE title
      "destination": "Research share",  # a server or a folder, by name (or a server's AE title)
      "studies": [                      # one task each
        {"study_uid": "1.2.3", "patient_id": "4711", "series_uids": ["1.2.3.4"]}
      ],
      "pseudonymize": true,             # or "pseudonym": "SUBJ-1", or neither
      "project": "Lung screening",
      "trial_protocol_id": "", "trial_protocol_name": "",
      "urgent": false, "send_finished_mail": false,
      "archive_password": "", "encrypt_archive": false, "convert_to_nifti": false
    }

The options follow the rules of the transfer forms (``adit.core.transfer.options``) and the
user's active group, as on the web pages; every problem is a 400 naming its field, and nothing
is created unless all is well. The job then starts as one from a form does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from adit.core import validators
from adit.core.access import NodeNotUsable, usable_node_named, usable_projects
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.query import as_list
from adit.core.jobs.registry import JobKind
from adit.core.models import DicomServer, PseudonymConflict
from adit.core.transfer.models import TransferJob, TransferTask
from adit.core.transfer.options import (
    MAX_ARCHIVE_PASSWORD_LENGTH,
    TransferChoices,
    TransferRights,
    transfer_option_problems,
)

# A non-staff user's job holds at most as many studies as their batch transfer file may have
# lines; staff are not limited, as there.
MAX_STUDIES_FOR_NON_STAFF = 500
MAX_SERIES_PER_STUDY = 1000


def _model_validators(model: type, name: str) -> list:
    """The validators of a model field, its length included: the API refuses what the model
    would, with the model's messages."""
    return list(model._meta.get_field(name).validators)


class TextField(serializers.CharField):
    """An identifier as text only: a JSON number would already have lost its leading zeros
    (or digits) on the way, and the wrong patient or study would be named."""

    default_error_messages = {
        "invalid": "Must be text (a JSON string), not a number or anything else.",
    }

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know: a misspelt option ("pseudonymise") ignored would
    transfer what the user did not ask for."""

    def to_internal_value(self, data):
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, Mapping) else []
        errors: dict[str, Any] = {}
        value = None
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as error:
            if not isinstance(error.detail, dict):
                raise
            errors = dict(error.detail)
        known = ", ".join(self.fields)
        for name in unknown:
            errors[str(name)] = [f"Unknown field; the fields are {known}."]
        if errors:
            raise serializers.ValidationError(errors)
        return value


class StudySerializer(StrictSerializer):
    study_uid = TextField(validators=[validators.validate_uid], help_text="The Study Instance UID.")
    patient_id = TextField(
        default="",
        allow_blank=True,
        validators=_model_validators(TransferTask, "patient_id"),
        help_text="The PatientID the source has the study under (optional).",
    )
    series_uids = serializers.ListField(
        child=TextField(validators=[validators.validate_uid]),
        default=list,
        max_length=MAX_SERIES_PER_STUDY,
        help_text="Only these series of the study; empty or left out: the whole study.",
    )

    def validate_series_uids(self, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class TransferJobCreateSerializer(StrictSerializer):
    """A new transfer job of the viewset's kind (``context["view"].kind``) with one task per
    study.

    ``pseudonymize`` has ADIT choose the pseudonyms: one per patient, derived from the project's
    secret, so a patient gets the same one in every job of the project (and keeps one given
    earlier by hand); without a project from the job's own secret, so they hold within the job
    only. A pseudonym is the patient's, so each study's patient must be known: a study given
    without ``patient_id`` is looked up at the source (a C-FIND by its UID) before the job is
    created. A user who has the study UID from a query expects that to be enough, and ADIT
    would look the study up for the transfer anyway; a study the source does not hold, or
    holds for more than one patient, is then refused with the job instead of failing later.
    A ``patient_id`` given is trusted, as the forms trust theirs.
    """

    source = serializers.CharField(
        help_text="The DICOM server to fetch from, by name or AE title, usable as a source by "
        "your active group."
    )
    destination = serializers.CharField(
        help_text="The DICOM server or folder to send to, by name (or a server's AE title), "
        "usable as a destination by your active group."
    )
    studies = StudySerializer(many=True, help_text="The studies to transfer, one task each.")
    pseudonym = TextField(
        default="",
        allow_blank=True,
        trim_whitespace=False,  # a pseudonym with spaces around it is an error
        validators=_model_validators(TransferTask, "pseudonym"),
        help_text="One pseudonym for all studies (of one patient).",
    )
    pseudonymize = serializers.BooleanField(
        default=False, help_text="ADIT chooses a pseudonym per patient (see the description)."
    )
    project = serializers.CharField(
        default="",
        allow_blank=True,
        help_text="The name of a project of your active group: its jobs give a patient the "
        "same pseudonymized UIDs.",
    )
    trial_protocol_id = serializers.CharField(
        default="", allow_blank=True, validators=_model_validators(TransferJob, "trial_protocol_id")
    )
    trial_protocol_name = serializers.CharField(
        default="",
        allow_blank=True,
        validators=_model_validators(TransferJob, "trial_protocol_name"),
    )
    urgent = serializers.BooleanField(
        default=False, help_text="Process before other jobs (needs can_process_urgently)."
    )
    archive_password = serializers.CharField(
        default="",
        allow_blank=True,
        trim_whitespace=False,
        max_length=MAX_ARCHIVE_PASSWORD_LENGTH,
        help_text="Folders only: each study is written as a ZIP encrypted with it.",
    )
    encrypt_archive = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Says what archive_password implies; true without a password is refused.",
    )
    convert_to_nifti = serializers.BooleanField(default=False, help_text="Folders only.")
    send_finished_mail = serializers.BooleanField(default=False)

    @property
    def kind(self) -> JobKind:
        return self.context["view"].kind

    @property
    def job_model(self) -> type[TransferJob]:
        model = self.kind.job_model
        assert issubclass(model, TransferJob), "a transfer kind's serializer"
        return model

    @property
    def task_model(self) -> type[TransferTask]:
        model = self.kind.task_model
        assert issubclass(model, TransferTask), "a transfer kind's serializer"
        return model

    @property
    def user(self):
        return self.context["request"].user

    # -- fields -----------------------------------------------------------------------------

    def validate_source(self, value: str) -> DicomServer:
        try:
            server = usable_node_named(self.user, "source", value, servers_only=True)
        except NodeNotUsable as error:
            raise serializers.ValidationError(error.message) from None
        assert isinstance(server, DicomServer)
        return server

    def validate_destination(self, value: str):
        try:
            return usable_node_named(self.user, "destination", value)
        except NodeNotUsable as error:
            raise serializers.ValidationError(error.message) from None

    def validate_project(self, value: str):
        if not value:
            return None
        project = usable_projects(self.user).filter(name=value).first()
        if project is None:
            group = self.user.active_group
            raise serializers.ValidationError(
                f"There is no project {validators.shown(value)} your active group "
                f"({group.name if group else 'none chosen'}) may transfer within."
            )
        return project

    def validate_studies(self, value: list[dict]) -> list[dict]:
        if not value:
            raise serializers.ValidationError("Name at least one study to transfer.")
        if len(value) > MAX_STUDIES_FOR_NON_STAFF and not self.user.is_staff:
            raise serializers.ValidationError(
                f"At most {MAX_STUDIES_FOR_NON_STAFF} studies per job are allowed "
                f"({len(value)} given); split them into several jobs."
            )
        first_of: dict[str, int] = {}
        errors: dict[str, dict] = {}  # by the study's index, as DRF reports a list's errors
        for number, study in enumerate(value):
            first = first_of.setdefault(study["study_uid"], number)
            if first != number:
                errors[str(number)] = {
                    "study_uid": [
                        f"The study is listed already (at index {first}); list each "
                        "study once, with all its series_uids."
                    ]
                }
        if errors:
            raise serializers.ValidationError(errors)
        return value

    # -- the whole job ----------------------------------------------------------------------

    def validate(self, attrs: dict) -> dict:
        """The options checked together, the pseudonyms chosen and checked against the
        project's: the unsaved job and its tasks, for ``create``."""
        self._check_options(attrs)
        studies: list[dict] = attrs["studies"]
        automatic = attrs["pseudonymize"]
        if automatic:
            _look_up_patients(attrs["source"], studies, self.task_model)
        choices = TransferChoices(
            destination=attrs["destination"],
            pseudonym=attrs["pseudonym"],
            project=attrs["project"],
            trial_protocol_id=attrs["trial_protocol_id"],
            trial_protocol_name=attrs["trial_protocol_name"],
            urgent=attrs["urgent"],
            archive_password=attrs["archive_password"],
            convert_to_nifti=attrs["convert_to_nifti"],
            send_finished_mail=attrs["send_finished_mail"],
        )
        job: TransferJob = self.job_model(owner=self.user, **choices.job_fields())
        pseudonyms = (
            job.automatic_pseudonyms(study["patient_id"] for study in studies) if automatic else {}
        )
        tasks = [
            self.task_model(
                source=attrs["source"],
                patient_id=study["patient_id"],
                study_uid=study["study_uid"],
                series_uids=study["series_uids"],
                **{
                    **choices.task_fields(),
                    **({"pseudonym": pseudonyms[study["patient_id"]]} if automatic else {}),
                },
                **study.get("shown", {}),
            )
            for study in studies
        ]
        try:
            job.check_pseudonyms_of(tasks)
        except PseudonymConflict as conflict:
            raise serializers.ValidationError(
                {"pseudonymize" if automatic else "pseudonym": [conflict.message]}
            ) from None
        return {"job": job, "tasks": tasks, "automatic": automatic}

    def _check_options(self, attrs: dict) -> None:
        """The rules of the transfer forms, and those of the body's own shape."""
        errors: dict[str, str] = {}
        if attrs["pseudonym"] and attrs["pseudonymize"]:
            errors["pseudonymize"] = (
                "Give a pseudonym or set pseudonymize (ADIT chooses one per patient), not both."
            )
        password = attrs["archive_password"]
        if attrs["encrypt_archive"] is True and not password:
            errors["archive_password"] = (
                "An encrypted archive needs a password: give the archive_password."
            )
        elif attrs["encrypt_archive"] is False and password:
            errors["encrypt_archive"] = (
                "An archive_password encrypts the archive: leave encrypt_archive out or set "
                "it to true."
            )
        problems = transfer_option_problems(
            TransferRights.of(self.user, self.job_model),
            destination=attrs["destination"],
            pseudonymized=bool(attrs["pseudonym"]) or attrs["pseudonymize"],
            archive_password=bool(password),
            convert_to_nifti=attrs["convert_to_nifti"],
            urgent=attrs["urgent"],
        )
        if "pseudonym" in problems:
            problems["pseudonym"] += (
                " You may only transfer pseudonymized: give a pseudonym, or set pseudonymize "
                "to true."
            )
        for name, problem in problems.items():
            errors.setdefault(name, problem)
        if errors:
            raise serializers.ValidationError({name: [text] for name, text in errors.items()})

    def create(self, validated_data: dict) -> TransferJob:
        job: TransferJob = validated_data["job"]
        try:
            job.save_with_tasks(validated_data["tasks"])
        except PseudonymConflict as conflict:  # claimed by another job since validate()
            field = "pseudonymize" if validated_data["automatic"] else "pseudonym"
            raise serializers.ValidationError({field: [conflict.message]}) from None
        return job


def _look_up_patients(
    source: DicomServer, studies: list[dict], task_model: type[TransferTask]
) -> None:
    """Fills in the patient of each study given without one, as the source has the study,
    with what the source says of the study for the job page (``shown``).

    Raises:
        ValidationError: The source cannot be searched by Study Instance UID, or does not
            tell one patient for a study; the message names the study's field.
        DicomError: The source failed to answer (a 502, 503 or 504 for the client).
    """
    missing = [number for number, study in enumerate(studies) if not study["patient_id"]]
    if not missing:
        return
    errors: dict[str, dict] = {}  # by the study's index, as DRF reports a list's errors
    if not (source.study_root_find_support or source.dicomweb_qido_support):
        for number in missing:
            errors[str(number)] = {
                "patient_id": [
                    f"Required with pseudonymize: the source {source.name} cannot be searched "
                    "by Study Instance UID, so ADIT cannot look the patient up."
                ]
            }
        raise serializers.ValidationError({"studies": errors})
    operator = DicomOperator(source, answer_within=settings.DICOM_WEB_TIMEOUT)
    with operator.query_session():
        for number in missing:
            study = studies[number]
            found = list(operator.find_studies(limit=2, StudyInstanceUID=study["study_uid"]))
            patient_ids = {str(answer.get("PatientID", "")) for answer in found}
            problem = ""
            if not found:
                problem = (
                    f"The source {source.name} holds no study with this UID, so its patient "
                    "(whose pseudonym pseudonymize chooses) is unknown."
                )
            elif len(patient_ids) > 1:
                problem = (
                    f"The source {source.name} holds studies with this UID for several "
                    "patients; give the patient_id of the one to transfer."
                )
            elif not _usable_patient_id(next(iter(patient_ids))):
                problem = (
                    f"The source {source.name} holds the study without a usable PatientID, "
                    "so pseudonymize cannot choose its patient's pseudonym."
                )
            if problem:
                errors[str(number)] = {"study_uid": [problem]}
                continue
            answer = found[0]
            study["patient_id"] = str(answer.PatientID)
            study["shown"] = task_model.study_fields(
                answer.get("StudyDate"),
                answer.get("StudyDescription"),
                as_list(answer.get("ModalitiesInStudy")),
            )
    if errors:
        raise serializers.ValidationError({"studies": errors})


def _usable_patient_id(patient_id: str) -> bool:
    """Whether a PatientID can be stored with a task and name the patient again."""
    if not patient_id:
        return False
    try:
        for validate in _model_validators(TransferTask, "patient_id"):
            validate(patient_id)
    except DjangoValidationError:
        return False
    return True
