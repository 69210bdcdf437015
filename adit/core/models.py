from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from . import validators


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
