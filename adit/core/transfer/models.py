"""The abstract transfer job and task: what every app that copies studies stores."""

from __future__ import annotations

import datetime
import unicodedata
from collections.abc import Iterable, Sequence
from typing import ClassVar

from django.contrib.contenttypes.fields import GenericRelation
from django.contrib.postgres.fields import ArrayField
from django.db import models, transaction
from django.db.models import Q

from adit.core import validators
from adit.core.encryption import decrypt, encrypt
from adit.core.jobs.models import DicomJob, DicomTask
from adit.core.models import (
    JobPseudonym,
    Project,
    automatic_pseudonym,
    check_pseudonyms,
    claim_pseudonym,
    new_secret,
)

MAX_ROUTES_SHOWN = 5


class TransferJob(DicomJob):
    """A job that copies studies from a source to a destination, optionally pseudonymized."""

    trial_protocol_id = models.CharField(
        max_length=64, blank=True, default="", validators=[validators.validate_query_value]
    )
    trial_protocol_name = models.CharField(
        max_length=64, blank=True, default="", validators=[validators.validate_query_value]
    )
    project = models.ForeignKey(
        Project,
        on_delete=models.PROTECT,
        blank=True,
        null=True,
        related_name="%(app_label)s_%(class)s_set",
        help_text="Jobs of one project give the same patient the same pseudonymized UIDs.",
    )
    pseudonymization_secret = models.CharField(max_length=128, default=new_secret, editable=False)
    shift_dates = models.BooleanField(
        default=False,
        help_text="Shift dates by an offset fixed per project instead of keeping them.",
    )
    encrypt_archive = models.BooleanField(
        default=False, help_text="Each study goes into a password-protected ZIP (folders only)."
    )
    # The ZIP password, encrypted with a key derived from SECRET_KEY, and only while the job
    # runs: ADIT needs it no longer, and a password kept is a password that can leak. Set it
    # through ``archive_password``.
    encrypted_archive_password = models.TextField(blank=True, default="", editable=False)
    convert_to_nifti = models.BooleanField(default=False)
    # Only for jobs without a project; no column, and deleted with the job.
    job_pseudonyms = GenericRelation(
        JobPseudonym, content_type_field="job_type", object_id_field="job_id"
    )

    class Meta(DicomJob.Meta):
        abstract = True
        permissions = [
            *DicomJob.Meta.permissions,
            ("can_transfer_unpseudonymized", "Can transfer unpseudonymized"),
        ]

    @property
    def secret(self) -> str:
        """The key of every pseudonymized value: the project's, else this job's own (kept with
        the job so that a task run again after a crash produces the very same UIDs)."""
        return self.project.secret if self.project else self.pseudonymization_secret

    def claim_pseudonym(self, patient_id: str, pseudonym: str) -> None:
        """Records, as a transfer of this job starts, that the patient (by the PatientID the
        source has) goes by the pseudonym: in the job's project, else within the job. Raises
        PseudonymConflict if the patient or the pseudonym is already in another pair there."""
        if self.project is not None:
            self.project.claim_pseudonym(patient_id, pseudonym)
        else:
            claim_pseudonym(self.job_pseudonyms, "in this job", patient_id, pseudonym)

    def automatic_pseudonyms(self, patient_ids: Iterable[str]) -> dict[str, str]:
        """The pseudonym of each patient when ADIT is to choose them: the one the project
        recorded for the patient (given by hand in an earlier job, say), else the one derived
        from the secret, which every job of the project derives alike. Without a project, the
        job's own secret makes them stable within this job only."""
        wanted = set(patient_ids)
        recorded: dict[str, str] = {}
        if self.project is not None:
            recorded = dict(
                self.project.pseudonyms.filter(patient_id__in=wanted).values_list(
                    "patient_id", "pseudonym"
                )
            )
        return {
            patient_id: recorded.get(patient_id) or automatic_pseudonym(self.secret, patient_id)
            for patient_id in wanted
        }

    def check_pseudonyms_of(self, tasks: Iterable[TransferTask]) -> None:
        """Raises PseudonymConflict if the pseudonyms of the job's new tasks would give a
        patient two, or one to two patients, within the job or against the project's record
        (the transfers claim them for good; this is the early word)."""
        check_pseudonyms(self.project, [(task.patient_id, task.pseudonym) for task in tasks])

    def save_with_tasks(self, tasks: Sequence[TransferTask]) -> None:
        """Saves this new job with its tasks and starts it, as every transfer app does: queued
        at once, or waiting for staff to verify it (``start_processing``).

        Raises:
            PseudonymConflict: A pseudonym of the tasks would go to two patients, or a patient
                would get a second one (in the project, too); nothing is saved then.
        """
        assert self.pk is None and tasks, "a new job with at least one task"
        self.check_pseudonyms_of(tasks)
        with transaction.atomic():
            self.save()
            for task in tasks:
                task.job = self
            type(tasks[0]).objects.bulk_create(tasks, batch_size=500)
            self.start_processing()

    @property
    def routes(self) -> list[tuple[str, str]]:
        """(source, destination) names of the job's tasks, each pair once; a few at most."""
        pairs = self.tasks.order_by("source__name", "destination__name").values_list(
            "source__name", "destination__name"
        )
        return list(pairs.distinct()[:MAX_ROUTES_SHOWN])

    @property
    def is_pseudonymized(self) -> bool:
        return self.tasks.exclude(pseudonym="").exists()

    @property
    def archive_password(self) -> str:
        """The password of the job's ZIPs; "" without one, and once the job has ended.

        Raises:
            DecryptionError: The password was encrypted under another DJANGO_SECRET_KEY.
        """
        if not self.encrypted_archive_password:
            return ""
        return decrypt(self.encrypted_archive_password)

    @archive_password.setter
    def archive_password(self, password: str) -> None:
        self.encrypt_archive = bool(password)
        self.encrypted_archive_password = encrypt(password) if password else ""

    def forget_secrets(self) -> list[str]:
        self.encrypted_archive_password = ""
        return [*super().forget_secrets(), "encrypted_archive_password"]

    @property
    def rerun_blocker(self) -> str:
        # Running again without the password could only write unencrypted ZIPs or fail; asking
        # for the password again would need a form on every action. A new job is the honest way.
        if self.encrypt_archive and not self.encrypted_archive_password:
            return (
                "its studies go into password-protected ZIPs, and the password was deleted when "
                "the job ended (ADIT keeps it no longer than needed). Start a new job with a "
                "password instead."
            )
        return ""


STUDY_DESCRIPTION_LENGTH = 64  # a DICOM LO value
MODALITY_LENGTH = 16  # a DICOM CS value
MAX_MODALITIES = 16


def study_date_from_dicom(value: str | None) -> datetime.date | None:
    """A DICOM DA value (YYYYMMDD) as a date; None for anything else a PACS may send."""
    text = "" if value is None else str(value).strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return datetime.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


def printable_text(value: str | None, max_length: int) -> str:
    """``value`` without control characters, cut to ``max_length`` (a PACS may send anything)."""
    text = "".join(
        " " if unicodedata.category(character).startswith("C") else character
        for character in ("" if value is None else str(value))
    )
    return " ".join(text.split())[:max_length]


def modality_codes(values: Iterable[str]) -> list[str]:
    """The well-formed modality codes among ``values``, sorted, each once; a bounded number."""
    codes = {str(value).strip() for value in values}
    return sorted(code for code in codes if validators.MODALITY_CODE.fullmatch(code))[
        :MAX_MODALITIES
    ]


class TransferTask(DicomTask):
    """One study (or some of its series) to copy to the destination."""

    destination = models.ForeignKey("core.DicomNode", on_delete=models.PROTECT, related_name="+")
    patient_id = models.CharField(
        max_length=64, blank=True, default="", validators=[validators.validate_query_value]
    )
    study_uid = models.CharField(max_length=64, validators=[validators.validate_uid])
    series_uids = ArrayField(
        models.CharField(max_length=64, validators=[validators.validate_uid]),
        blank=True,
        default=list,
        help_text="Empty: the whole study.",
    )
    pseudonym = models.CharField(
        max_length=64, blank=True, default="", validators=[validators.validate_pseudonym]
    )
    pseudonymized_study_uid = models.CharField(
        max_length=64, blank=True, default="", help_text="The study's UID at the destination."
    )

    # What the source PACS says about the study, for people to recognise it on the job pages;
    # filled once the transfer found the study (see ``record_study``).
    study_date = models.DateField(blank=True, null=True)
    study_description = models.CharField(
        max_length=STUDY_DESCRIPTION_LENGTH, blank=True, default=""
    )
    modalities = ArrayField(models.CharField(max_length=MODALITY_LENGTH), blank=True, default=list)

    progress_unit: ClassVar[str] = "instances"

    job: models.ForeignKey  # to a TransferJob, declared by the concrete task model

    @staticmethod
    def study_fields(
        study_date: str | None, description: str | None, modalities: Iterable[str]
    ) -> dict:
        """The task's study fields from raw DICOM values (untrusted: an odd date is left out,
        text is cleaned and cut, only well-formed modality codes are kept)."""
        return {
            "study_date": study_date_from_dicom(study_date),
            "study_description": printable_text(description, STUDY_DESCRIPTION_LENGTH),
            "modalities": modality_codes(modalities),
        }

    def record_study(
        self, study_date: str, description: str | None, modalities: Iterable[str]
    ) -> None:
        """Stores the study's date, description and modalities as the source PACS gave them."""
        fields = self.study_fields(study_date, description, modalities)
        type(self).objects.filter(pk=self.pk).update(**fields)
        for name, value in fields.items():
            setattr(self, name, value)

    class Meta(DicomTask.Meta):
        abstract = True
        constraints = [
            models.CheckConstraint(
                condition=~Q(study_uid=""), name="%(app_label)s_%(class)s_study_uid"
            )
        ]
