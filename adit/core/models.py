from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from typing import ClassVar

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation
from django.contrib.contenttypes.models import ContentType
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import IntegrityError, models, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from . import validators
from .encryption import decrypt, encrypt
from .statuses import (
    FINAL_JOB_STATUSES,
    FINAL_TASK_STATUSES,
    JobOutcome,
    JobStatus,
    TaskStatus,
    derive_job_status,
)


class ActionNotAllowed(Exception):
    """A job or task action asked for in a state that does not allow it (HTTP 400)."""


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
    def accessible_by_user(self, user, role: str, all_groups: bool = False) -> DicomNodeQuerySet:
        """Nodes the user may use as ``role`` ("source" or "destination").

        Access comes from a row of DicomNodeGroupAccess whose group is the user's active group
        (or any of their groups with ``all_groups``) and which carries the flag for the role;
        group and flag must be on the same row, so a source right granted to one group never
        combines with a membership in another.
        """
        if role not in ("source", "destination"):
            raise ValueError(f"Unknown node role {role!r}; use 'source' or 'destination'.")
        if not user.is_authenticated:
            return self.none()
        if all_groups:
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


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


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
    secret = models.CharField(max_length=128, default=_new_secret, editable=False)
    created = models.DateTimeField(auto_now_add=True)

    pseudonyms: models.Manager  # ProjectPseudonym's reverse relation

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def claim_pseudonym(self, patient_id: str, pseudonym: str) -> None:
        """Records that the patient goes by the pseudonym in this project, or raises
        PseudonymConflict if either already belongs to another pair (see _claim_pseudonym)."""
        _claim_pseudonym(self.pseudonyms, f"in project {self.name}", patient_id, pseudonym)


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


def _claim_pseudonym(records, scope: str, patient_id: str, pseudonym: str) -> None:
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


class DicomJob(models.Model):
    """A unit of work a user asked for, made of tasks that workers process one by one.

    Concrete jobs live in the apps (selective transfer, batch query, …); each names its task
    model's foreign key ``job`` with ``related_name="tasks"``.

    The actions (verify, cancel, resume, …) change the status with a conditional UPDATE, so two
    people (or a person and a worker) acting at once cannot both succeed; an action the current
    state does not allow raises ActionNotAllowed.
    """

    Status = JobStatus

    # Procrastinate runs higher priorities first.
    default_priority: ClassVar[int] = 2
    urgent_priority: ClassVar[int] = 6

    status = models.CharField(max_length=2, choices=JobStatus.choices, default=JobStatus.UNVERIFIED)
    urgent = models.BooleanField(default=False)
    message = models.TextField(blank=True, default="")
    send_finished_mail = models.BooleanField(default=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="%(app_label)s_%(class)s_set",
    )
    created = models.DateTimeField(auto_now_add=True)
    start = models.DateTimeField(blank=True, null=True)
    end = models.DateTimeField(blank=True, null=True)

    tasks: models.Manager  # the concrete task model's reverse relation

    class Meta:
        abstract = True
        ordering = ["-created"]
        permissions = [("can_process_urgently", "Can process jobs urgently")]
        indexes = [models.Index(fields=["owner", "status"], name="%(class)s_own")]

    def __str__(self) -> str:
        return f"{self._meta.verbose_name} {self.pk} [{JobStatus(self.status).label}]"

    @property
    def priority(self) -> int:
        return self.urgent_priority if self.urgent else self.default_priority

    @property
    def is_finished(self) -> bool:
        return self.status in FINAL_JOB_STATUSES

    def refresh_status(self) -> JobOutcome:
        """Derives the job's status from its tasks and saves it (under a row lock, so two
        workers finishing tasks at the same time cannot overwrite each other).

        Sends the finish mail when this call finished the job and the owner asked for it.
        """
        with transaction.atomic():
            job = type(self).objects.select_for_update().get(pk=self.pk)
            was_finished = job.is_finished
            counts = dict(job.tasks.values_list("status").annotate(count=Count("pk")))
            outcome = derive_job_status(JobStatus(job.status), counts)
            job.status = outcome.status
            if outcome.message or outcome.finished:
                job.message = outcome.message
            if outcome.status == JobStatus.IN_PROGRESS and job.start is None:
                job.start = timezone.now()
            job.end = timezone.now() if outcome.finished else None
            # A canceled job is usually resumed, so it keeps its secrets (encrypted at rest).
            forget = outcome.finished and job.status != JobStatus.CANCELED
            forgotten = job.forget_secrets() if forget else []
            job.save(update_fields=["status", "message", "start", "end", *forgotten])
            if outcome.finished and not was_finished and job.send_finished_mail:
                transaction.on_commit(job.send_finished_mail_now)
        self.status, self.message, self.start, self.end = (
            job.status,
            job.message,
            job.start,
            job.end,
        )
        return outcome

    def forget_secrets(self) -> list[str]:
        """Clears what the job needed only while it ran; returns the names of those fields.

        Called under the row lock of ``refresh_status`` when the job reaches a final status
        other than Canceled (which a resume may end).
        """
        return []

    @property
    def rerun_blocker(self) -> str:
        """Why this job cannot be resumed, retried or restarted ("" when it can)."""
        return ""

    def _refuse_rerun(self, action: str) -> None:
        if blocker := self.rerun_blocker:
            raise ActionNotAllowed(f"Job {self.pk} cannot be {action}: {blocker}")

    def send_finished_mail_now(self) -> None:
        from .mail import send_job_finished_mail

        send_job_finished_mail(self)

    # -- actions ------------------------------------------------------------------------------

    @property
    def is_deletable(self) -> bool:
        return self.status in (JobStatus.UNVERIFIED, JobStatus.PENDING) and not (
            self.tasks.exclude(status=TaskStatus.PENDING).exists()
        )

    @property
    def is_verifiable(self) -> bool:
        return self.status == JobStatus.UNVERIFIED

    @property
    def is_cancelable(self) -> bool:
        return self.status in (JobStatus.PENDING, JobStatus.IN_PROGRESS)

    @property
    def is_resumable(self) -> bool:
        return self.status == JobStatus.CANCELED and not self.rerun_blocker

    @property
    def is_retriable(self) -> bool:
        return self.status == JobStatus.FAILURE and not self.rerun_blocker

    @property
    def is_restartable(self) -> bool:
        return self.status in FINAL_JOB_STATUSES and not self.rerun_blocker

    def _change_status(self, allowed: tuple[str, ...], new: str, action: str, **fields) -> None:
        changed = (
            type(self).objects.filter(pk=self.pk, status__in=allowed).update(status=new, **fields)
        )
        if not changed:
            self.refresh_from_db(fields=["status"])
            raise ActionNotAllowed(
                f"Job {self.pk} cannot be {action} while it is "
                f"{JobStatus(self.status).label.lower()}."
            )
        self.status = new
        for name, value in fields.items():
            setattr(self, name, value)

    def queue_pending_tasks(self) -> int:
        """Puts every pending task that has no queue entry yet into the task queue."""
        queued = 0
        for task in self.tasks.filter(status=TaskStatus.PENDING, queued_job_id__isnull=True):
            task.queue()
            queued += 1
        return queued

    def start_processing(self, *, verified: bool) -> None:
        """Called once a new job and its tasks are saved: verified jobs are queued at once,
        the others wait for staff to verify them."""
        if verified:
            self._change_status((JobStatus.UNVERIFIED,), JobStatus.PENDING, "started")
            self.queue_pending_tasks()
            self.refresh_status()

    def verify(self) -> None:
        with transaction.atomic():
            self._change_status((JobStatus.UNVERIFIED,), JobStatus.PENDING, "verified")
            self.queue_pending_tasks()
        self.refresh_status()

    def delete_untouched(self) -> None:
        """Deletes a job none of whose tasks has started yet."""
        from .processing import cancel_queue_entry

        with transaction.atomic():
            job = type(self).objects.select_for_update().get(pk=self.pk)
            if not job.is_deletable:
                raise ActionNotAllowed(
                    f"Job {self.pk} cannot be deleted: only jobs whose tasks have not started "
                    "yet can be deleted."
                )
            for task in job.tasks.exclude(queued_job_id=None):
                cancel_queue_entry(task.queued_job_id, abort=False)
            job.delete()

    def cancel(self) -> None:
        """Pending tasks are canceled at once; running ones are asked to stop after the
        instance they are working on."""
        from .processing import cancel_queue_entry

        with transaction.atomic():
            self._change_status(
                (JobStatus.PENDING, JobStatus.IN_PROGRESS), JobStatus.CANCELING, "canceled"
            )
            pending = self.tasks.filter(status=TaskStatus.PENDING)
            for queued_job_id in pending.exclude(queued_job_id=None).values_list(
                "queued_job_id", flat=True
            ):
                cancel_queue_entry(queued_job_id, abort=False)
            pending.update(
                status=TaskStatus.CANCELED,
                message="Task manually canceled.",
                queued_job_id=None,
                end=timezone.now(),
            )
            for task in self.tasks.filter(status=TaskStatus.IN_PROGRESS):
                if task.queued_job_id:
                    cancel_queue_entry(task.queued_job_id, abort=True)
        self.refresh_status()

    def resume(self) -> None:
        self._refuse_rerun("resumed")
        with transaction.atomic():
            self._change_status((JobStatus.CANCELED,), JobStatus.PENDING, "resumed", message="")
            self.tasks.filter(status=TaskStatus.CANCELED).update(
                status=TaskStatus.PENDING, message="", queued_job_id=None, start=None, end=None
            )
            self.queue_pending_tasks()
        self.refresh_status()

    def retry_failed(self) -> None:
        self._refuse_rerun("retried")
        with transaction.atomic():
            self._change_status((JobStatus.FAILURE,), JobStatus.PENDING, "retried", message="")
            for task in self.tasks.filter(status=TaskStatus.FAILURE):
                task.clear_for_another_run()
            self.queue_pending_tasks()
        self.refresh_status()

    def restart(self) -> None:
        self._refuse_rerun("restarted")
        with transaction.atomic():
            self._change_status(
                tuple(FINAL_JOB_STATUSES), JobStatus.PENDING, "restarted", message="", end=None
            )
            for task in self.tasks.all():
                task.clear_for_another_run()
            self.queue_pending_tasks()
        self.refresh_status()


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
    pseudonymization_secret = models.CharField(max_length=128, default=_new_secret, editable=False)
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
            _claim_pseudonym(self.job_pseudonyms, "in this job", patient_id, pseudonym)

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


class DicomTask(models.Model):
    """One piece of a job a worker processes at once, e.g. one study to transfer."""

    Status = TaskStatus

    source = models.ForeignKey(DicomNode, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=2, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    message = models.TextField(blank=True, default="")
    log = models.TextField(blank=True, default="")
    queued_job_id = models.BigIntegerField(
        blank=True, null=True, help_text="The id of this task's entry in the task queue."
    )
    created = models.DateTimeField(auto_now_add=True)
    start = models.DateTimeField(blank=True, null=True)
    end = models.DateTimeField(blank=True, null=True)

    job: models.ForeignKey  # declared by the concrete task model

    class Meta:
        abstract = True
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self._meta.verbose_name} {self.pk} [{TaskStatus(self.status).label}]"

    def claim(self) -> bool:
        """Marks the task as being processed, unless someone else got it first.

        A conditional update: of two workers that got the same queue entry (a retry after a
        worker was presumed dead, say), exactly one goes ahead. A task left "In Progress" by a
        dead worker may be claimed again.
        """
        claimed = (
            type(self)
            .objects.filter(pk=self.pk, status__in=[TaskStatus.PENDING, TaskStatus.IN_PROGRESS])
            .update(
                status=TaskStatus.IN_PROGRESS,
                attempts=F("attempts") + 1,
                start=timezone.now(),
                end=None,
            )
        )
        if claimed:
            self.refresh_from_db(fields=["status", "attempts", "start", "end"])
        return claimed == 1

    def queue(self, schedule_in_seconds: int = 0) -> None:
        """Adds the task to the ``dicom`` queue at its job's priority."""
        from .processing import defer_task

        self.queued_job_id = defer_task(self, schedule_in_seconds)
        type(self).objects.filter(pk=self.pk).update(queued_job_id=self.queued_job_id)

    def clear_for_another_run(self) -> None:
        """Makes a finished task pending again, as if it had never run."""
        fields = self.fields_of_a_fresh_run()
        for name, value in fields.items():
            setattr(self, name, value)
        self.save(update_fields=list(fields))

    def fields_of_a_fresh_run(self) -> dict:
        return {
            "status": TaskStatus.PENDING,
            "attempts": 0,
            "message": "",
            "log": "",
            "queued_job_id": None,
            "start": None,
            "end": None,
        }

    # -- actions ------------------------------------------------------------------------------

    @property
    def is_deletable(self) -> bool:
        return self.status == TaskStatus.PENDING

    @property
    def is_resettable(self) -> bool:
        return self.status in FINAL_TASK_STATUSES and not self.job.rerun_blocker

    @property
    def is_killable(self) -> bool:
        return self.status == TaskStatus.IN_PROGRESS

    def _not_allowed(self, action: str) -> ActionNotAllowed:
        return ActionNotAllowed(
            f"Task {self.pk} cannot be {action} while it is "
            f"{TaskStatus(self.status).label.lower()}."
        )

    def delete_pending(self) -> None:
        from .processing import cancel_queue_entry

        with transaction.atomic():
            deleted, _ = type(self).objects.filter(pk=self.pk, status=TaskStatus.PENDING).delete()
            if not deleted:
                self.refresh_from_db(fields=["status"])
                raise self._not_allowed("deleted")
            if self.queued_job_id:
                cancel_queue_entry(self.queued_job_id, abort=False)
        self.job.refresh_status()

    def reset(self) -> None:
        if blocker := self.job.rerun_blocker:
            raise ActionNotAllowed(f"Task {self.pk} cannot be reset: {blocker}")
        with transaction.atomic():
            task = type(self).objects.select_for_update().get(pk=self.pk)
            if not task.is_resettable:
                self.status = task.status
                raise self._not_allowed("reset")
            task.clear_for_another_run()
            task.queue()
        self.refresh_from_db()
        self.job.refresh_status()

    def kill(self) -> None:
        """Asks the worker running this task to stop; the task ends "Canceled"."""
        from .processing import cancel_queue_entry

        self.refresh_from_db(fields=["status", "queued_job_id"])
        if not self.is_killable:
            raise self._not_allowed("killed")
        if self.queued_job_id:
            cancel_queue_entry(self.queued_job_id, abort=True)


class TransferTask(DicomTask):
    """One study (or some of its series) to copy to the destination."""

    destination = models.ForeignKey(DicomNode, on_delete=models.PROTECT, related_name="+")
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
    instances_done = models.PositiveIntegerField(default=0)
    instances_total = models.PositiveIntegerField(blank=True, null=True)

    job: models.ForeignKey  # to a TransferJob, declared by the concrete task model

    class Meta(DicomTask.Meta):
        abstract = True
        constraints = [
            models.CheckConstraint(
                condition=~Q(study_uid=""), name="%(app_label)s_%(class)s_study_uid"
            )
        ]

    def fields_of_a_fresh_run(self) -> dict:
        return {**super().fields_of_a_fresh_run(), "instances_done": 0, "instances_total": None}
