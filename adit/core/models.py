from __future__ import annotations

from django.db import models


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
