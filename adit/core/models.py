"""The site's data: DICOM servers and folders and who may use them, research projects and the
pseudonyms given within them, and the switches staff flip at run time.

The job engine's abstract models are in ``adit.core.jobs.models``, the transfer's in
``adit.core.transfer.models``; the apps subclass those.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import IntegrityError, models
from django.db.models import Q

from adit.core import association_slots, validators


class ProjectSettings(models.Model):
    """Site-wide switches that staff change at run time (a single row, id 1)."""

    maintenance = models.BooleanField(
        default=False,
        help_text="Only staff can use the site; everybody else sees a maintenance page.",
    )
    announcement = models.TextField(
        blank=True,
        default="",
        help_text="HTML shown to every user on the home page.",
    )

    class Meta:
        verbose_name = "project settings"
        verbose_name_plural = "project settings"

    def __str__(self) -> str:
        return "Project settings"

    @classmethod
    def get(cls) -> ProjectSettings:
        settings, _ = cls.objects.get_or_create(pk=1)
        return settings


class SectionLock(models.Model):
    """A locked app section: non-staff users cannot use it until staff unlock it."""

    namespace = models.CharField(max_length=64, unique=True)
    reason = models.CharField(max_length=200, blank=True, default="")
    locked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["namespace"]

    def __str__(self) -> str:
        return f"{self.namespace} (locked)"


class DicomNodeQuerySet(models.QuerySet):
    def accessible_by_user(
        self, user, role: str, all_groups: bool = False, groups=None
    ) -> DicomNodeQuerySet:
        """Nodes the user may use as ``role`` ("source" or "destination").

        Access comes from a row of DicomNodeGroupAccess whose group is the user's active group
        (or any of their groups with ``all_groups``, or one of ``groups``, a queryset of the
        user's groups) and which carries the flag for the role; group and flag must be on the
        same row, so a source right granted to one group never combines with a membership in
        another.
        """
        if role not in ("source", "destination"):
            raise ValueError(f"Unknown node role {role!r}; use 'source' or 'destination'.")
        if not user.is_authenticated:
            return self.none()
        if groups is not None:
            group_filter = {"accesses__group__in": groups.filter(user=user)}
        elif all_groups:
            group_filter = {"accesses__group__in": user.groups.all()}
        elif user.active_group_id is None:
            return self.none()
        else:
            group_filter = {"accesses__group_id": user.active_group_id}
        return self.filter(**group_filter, **{f"accesses__{role}": True}).distinct()


class DicomNode(models.Model):
    """A place DICOM data comes from or goes to: a server (PACS) or a folder."""

    class NodeType(models.TextChoices):
        SERVER = "SV", "DICOM Server"
        FOLDER = "FO", "DICOM Folder"

    node_type = models.CharField(max_length=2, choices=NodeType.choices, editable=False)
    name = models.CharField(max_length=64, unique=True)
    groups = models.ManyToManyField(
        "auth.Group", through="DicomNodeGroupAccess", related_name="dicom_nodes", blank=True
    )

    # Typed as the queryset so that type checkers see its methods on the manager too.
    objects: DicomNodeQuerySet = DicomNodeQuerySet.as_manager()  # pyright: ignore[reportAssignmentType]

    class Meta:
        ordering = ["-node_type", "name"]  # servers (SV) before folders (FO) in every list

    def __str__(self) -> str:
        return f"{self.NodeType(self.node_type).label} {self.name}"

    def concrete(self) -> DicomServer | DicomFolder:
        """The server or folder this node is."""
        if self.node_type == self.NodeType.SERVER:
            return self.dicomserver  # pyright: ignore[reportAttributeAccessIssue]
        return self.dicomfolder  # pyright: ignore[reportAttributeAccessIssue]


class DicomNodeGroupAccess(models.Model):
    dicom_node = models.ForeignKey(DicomNode, on_delete=models.CASCADE, related_name="accesses")
    group = models.ForeignKey("auth.Group", on_delete=models.CASCADE, related_name="node_accesses")
    source = models.BooleanField(default=False, help_text="Members may read from this node.")
    destination = models.BooleanField(default=False, help_text="Members may write to this node.")

    class Meta:
        verbose_name = "group access"
        constraints = [
            models.UniqueConstraint(fields=["dicom_node", "group"], name="unique_node_group_access")
        ]

    def __str__(self) -> str:
        return f"{self.group} → {self.dicom_node}"


class DicomServer(DicomNode):
    """A PACS reached by DIMSE (C-FIND/C-GET/C-MOVE/C-STORE) and/or DICOMweb."""

    ae_title = models.CharField(
        "AE title", max_length=16, unique=True, validators=[validators.validate_ae_title]
    )
    host = models.CharField(max_length=255, blank=True, default="")
    port = models.PositiveIntegerField(
        blank=True, null=True, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )

    patient_root_find_support = models.BooleanField("patient root C-FIND", default=False)
    patient_root_get_support = models.BooleanField("patient root C-GET", default=False)
    patient_root_move_support = models.BooleanField("patient root C-MOVE", default=False)
    study_root_find_support = models.BooleanField("study root C-FIND", default=False)
    study_root_get_support = models.BooleanField("study root C-GET", default=False)
    study_root_move_support = models.BooleanField("study root C-MOVE", default=False)
    store_scp_support = models.BooleanField("C-STORE", default=False)
    max_associations = models.PositiveSmallIntegerField(
        "max. associations",
        default=4,
        validators=[MinValueValidator(1), MaxValueValidator(64)],
        help_text="How many associations ADIT opens to this server at the same time, counted "
        "over all of ADIT's workers. Many PACS refuse more than a few per calling AE title.",
    )
    moves_to_destinations = models.BooleanField(
        "C-MOVE to destinations",
        default=False,
        help_text="This PACS knows ADIT's destination servers by their AE titles, so studies "
        "transferred unmodified go straight from it to them by C-MOVE (checked afterwards "
        "like any transfer).",
    )

    dicomweb_root_url = models.URLField(
        "DICOMweb root URL", max_length=2000, blank=True, default=""
    )
    dicomweb_qido_support = models.BooleanField("QIDO-RS", default=False)
    dicomweb_wado_support = models.BooleanField("WADO-RS", default=False)
    dicomweb_stow_support = models.BooleanField("STOW-RS", default=False)
    dicomweb_qido_prefix = models.CharField(max_length=2000, blank=True, default="")
    dicomweb_wado_prefix = models.CharField(max_length=2000, blank=True, default="")
    dicomweb_stow_prefix = models.CharField(max_length=2000, blank=True, default="")
    dicomweb_authorization_header = models.CharField(
        max_length=2000,
        blank=True,
        default="",
        help_text="Sent verbatim as the Authorization header, e.g. 'Bearer …' or 'Basic …'.",
    )

    class Meta:
        verbose_name = "DICOM server"

    def save(self, *args, **kwargs):
        self.node_type = DicomNode.NodeType.SERVER
        super().save(*args, **kwargs)

    def clean(self) -> None:
        dimse = any(
            (
                self.patient_root_find_support,
                self.patient_root_get_support,
                self.patient_root_move_support,
                self.study_root_find_support,
                self.study_root_get_support,
                self.study_root_move_support,
                self.store_scp_support,
            )
        )
        dicomweb = self.dicomweb_qido_support or self.dicomweb_wado_support
        dicomweb = dicomweb or self.dicomweb_stow_support
        errors = {}
        if dimse and not (self.host and self.port):
            errors["host"] = "A server with DIMSE services needs a host and a port."
        if dicomweb and not self.dicomweb_root_url:
            errors["dicomweb_root_url"] = "A server with DICOMweb services needs its root URL."
        if errors:
            raise ValidationError(errors)

    @property
    def supports_dimse(self) -> bool:
        return bool(self.host and self.port)

    def association_slot(self, wait_seconds: float | None = None) -> AbstractContextManager[object]:
        """Held while one association of ADIT to this server is open, so that all of ADIT's
        workers together open at most ``max_associations`` (see ``association_slots``;
        ``wait_seconds`` as there). An unsaved server (the connection test of a form, a test)
        is not counted."""
        if self.pk is None:
            return nullcontext()
        return association_slots.association_slot(self, wait_seconds)


class DicomFolder(DicomNode):
    """A folder on the ADIT host (or a mounted share) that transfers write into."""

    path = models.CharField(max_length=1024, validators=[validators.validate_absolute_path])
    quota = models.PositiveIntegerField(
        blank=True, null=True, help_text="Maximum size in GB (optional)."
    )
    warn_size = models.PositiveIntegerField(
        blank=True, null=True, help_text="Staff are e-mailed when the folder grows past this (GB)."
    )

    class Meta:
        verbose_name = "DICOM folder"

    def save(self, *args, **kwargs):
        self.node_type = DicomNode.NodeType.FOLDER
        super().save(*args, **kwargs)

    def used_bytes(self) -> int:
        """Bytes of all files below the folder (0 if it does not exist yet)."""
        total = 0
        for directory, _, files in os.walk(self.path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(directory, name)).st_size
                except OSError:  # removed while counting
                    pass
        return total


def new_secret() -> str:
    return secrets.token_urlsafe(32)


# Keys the automatic pseudonyms apart from every other value derived from a secret (the
# pseudonymizer's seed); changing it gives every patient a new automatic pseudonym.
_AUTOMATIC_PSEUDONYM_LABEL = b"adit-automatic-pseudonym-v1\x00"
# 80 bits in base32: 16 letters and digits, and two of a project's patients meet on one only
# by a chance nobody will see (a transfer's pseudonym claim would refuse it all the same).
_AUTOMATIC_PSEUDONYM_BYTES = 10


def automatic_pseudonym(secret: str, patient_id: str) -> str:
    """The pseudonym ADIT gives a patient when asked to choose one: a keyed hash of the
    PatientID under ``secret`` (a project's, or a job's own), so the same patient gets the same
    pseudonym wherever the secret is the same, and nobody without it can tell whose it is."""
    digest = hmac.new(
        secret.encode(), _AUTOMATIC_PSEUDONYM_LABEL + patient_id.encode(), hashlib.sha256
    ).digest()
    return base64.b32encode(digest[:_AUTOMATIC_PSEUDONYM_BYTES]).decode()


class Project(models.Model):
    """A research project: jobs of one project pseudonymize with the same secret, so the same
    patient gets the same pseudonymized UIDs (and dates, when shifted) in every job of it."""

    name = models.CharField(max_length=64, unique=True)
    description = models.TextField(blank=True, default="")
    groups = models.ManyToManyField(
        "auth.Group",
        related_name="projects",
        blank=True,
        help_text="Members of these groups may transfer data within this project.",
    )
    secret = models.CharField(max_length=128, default=new_secret, editable=False)
    created = models.DateTimeField(auto_now_add=True)

    pseudonyms: models.Manager  # ProjectPseudonym's reverse relation

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def claim_pseudonym(self, patient_id: str, pseudonym: str) -> None:
        """Records that the patient goes by the pseudonym in this project, or raises
        PseudonymConflict if either already belongs to another pair (see claim_pseudonym)."""
        claim_pseudonym(self.pseudonyms, f"in project {self.name}", patient_id, pseudonym)


class PseudonymConflict(ValidationError):
    """A transfer would give a patient a second pseudonym, or one pseudonym to two patients.

    Either would break what pseudonyms promise: the same patient under two pseudonyms gets the
    same pseudonymized UIDs under both (a destination holds each instance twice, and anyone
    can link the two), and two patients under one pseudonym are merged at the destination.
    """

    message: str  # always raised with one message, which names the conflict

    def __str__(self) -> str:
        return self.message


class PseudonymRecord(models.Model):
    """Who goes by which pseudonym, within a project or a job (unique both ways)."""

    patient_id = models.CharField(
        max_length=64, blank=True, default="", help_text="At the source PACS."
    )
    pseudonym = models.CharField(max_length=64, blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["pseudonym"]

    def __str__(self) -> str:
        return f"{self.patient_id} → {self.pseudonym}"


class ProjectPseudonym(PseudonymRecord):
    """Recorded when a transfer of the project starts, with the PatientID the source has."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="pseudonyms")

    class Meta(PseudonymRecord.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["project", "patient_id"], name="unique_project_patient"
            ),
            models.UniqueConstraint(
                fields=["project", "pseudonym"], name="unique_project_pseudonym"
            ),
        ]


class JobPseudonym(PseudonymRecord):
    """The same record for a transfer job without a project.

    Such a job pseudonymizes with its own secret, so its UIDs cannot meet those of any other
    job: a pseudonym needs to stay one patient's only within the job. The record is still
    needed, as the PatientID the source has may differ from the one a task names (a merged or
    renamed patient); the job's tasks know only the latter. Deleted with the job.
    """

    job_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    job_id = models.PositiveBigIntegerField()
    job = GenericForeignKey("job_type", "job_id")

    class Meta(PseudonymRecord.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["job_type", "job_id", "patient_id"], name="unique_job_patient"
            ),
            models.UniqueConstraint(
                fields=["job_type", "job_id", "pseudonym"], name="unique_job_pseudonym"
            ),
        ]


def claim_pseudonym(records, scope: str, patient_id: str, pseudonym: str) -> None:
    """Adds (patient_id, pseudonym) to ``records`` (a related manager of a PseudonymRecord
    model) unless the patient or the pseudonym is already in another pair there.

    Race-safe: the unique constraints decide between two transfers claiming at once; the one
    that loses meets the winner's row, committed or waited for, and raises PseudonymConflict.
    """
    assert patient_id and pseudonym, "only a known patient can be given a pseudonym"
    try:
        record, _ = records.get_or_create(patient_id=patient_id, defaults={"pseudonym": pseudonym})
    except IntegrityError:  # the pseudonym's row, or the patient's claimed meanwhile
        record = records.filter(patient_id=patient_id).first()
        if record is None:
            if not records.filter(pseudonym=pseudonym).exists():
                raise
            raise PseudonymConflict(
                f"The pseudonym {pseudonym} is already given to another patient {scope}."
            ) from None
    if record.pseudonym != pseudonym:
        raise PseudonymConflict(
            f"Patient {patient_id} already has the pseudonym {record.pseudonym} {scope}; "
            f"use {record.pseudonym}."
        )


def check_pseudonyms(project: Project | None, pairs: Iterable[tuple[str, str]]) -> None:
    """Refuses a new transfer job that would give a patient two pseudonyms or one pseudonym to
    two patients, within the job or against what its project recorded: raises
    PseudonymConflict naming the conflict. Records nothing.

    ``pairs`` are the (PatientID, pseudonym) of its tasks; those without either are skipped.
    Call it before creating the job, for early feedback: the transfers themselves claim each
    pseudonym with the PatientID the source then has, which is what finally counts.
    """
    patient_of: dict[str, str] = {}
    pseudonym_of: dict[str, str] = {}
    for patient_id, pseudonym in pairs:
        if not (patient_id and pseudonym):
            continue
        other_patient = patient_of.setdefault(pseudonym, patient_id)
        if other_patient != patient_id:
            raise PseudonymConflict(
                f"The pseudonym {pseudonym} would go to two patients, {other_patient} and "
                f"{patient_id}; a pseudonym belongs to one patient, so give each their own."
            )
        other_pseudonym = pseudonym_of.setdefault(patient_id, pseudonym)
        if other_pseudonym != pseudonym:
            raise PseudonymConflict(
                f"Patient {patient_id} would get two pseudonyms, {other_pseudonym} and "
                f"{pseudonym}; a patient keeps one pseudonym."
            )
    if project is None or not pseudonym_of:
        return
    recorded = project.pseudonyms.filter(
        Q(patient_id__in=pseudonym_of) | Q(pseudonym__in=patient_of)
    )
    for record in recorded.order_by("pk"):
        wanted = pseudonym_of.get(record.patient_id)
        if wanted is not None and wanted != record.pseudonym:
            raise PseudonymConflict(
                f"Patient {record.patient_id} already has the pseudonym {record.pseudonym} in "
                f"project {project.name}; use {record.pseudonym}."
            )
        if record.patient_id != patient_of.get(record.pseudonym, record.patient_id):
            raise PseudonymConflict(
                f"The pseudonym {record.pseudonym} is already given to another patient in "
                f"project {project.name}."
            )
