from __future__ import annotations

from django.contrib.auth.models import AbstractUser, Group
from django.db import models


class User(AbstractUser):
    active_group_id: int | None

    phone_number = models.CharField(max_length=64, blank=True, default="")
    department = models.CharField(max_length=128, blank=True, default="")
    preferences = models.JSONField(default=dict, blank=True)
    active_group = models.ForeignKey(
        Group,
        on_delete=models.SET_NULL,
        blank=True,
        null=True,
        related_name="+",
        help_text="The group whose permissions and DICOM nodes the user works with right now.",
    )

    def preferences_of(self, app_label: str) -> dict:
        """What the user chose last time on the app's form (its fields' initial values)."""
        return self.preferences.get(app_label, {})

    def remember_preferences(self, app_label: str, values: dict) -> None:
        self.preferences = {**self.preferences, app_label: values}
        self.save(update_fields=["preferences"])

    def ensure_valid_active_group(self) -> None:
        """Makes the active group one of the user's groups (the first one if it is not)."""
        if self.active_group_id and self.groups.filter(pk=self.active_group_id).exists():
            return
        first_group = self.groups.order_by("name").first()
        if self.active_group_id != (first_group.pk if first_group else None):
            self.active_group = first_group
            self.save(update_fields=["active_group"])

    def change_active_group(self, group: Group) -> None:
        if not self.groups.filter(pk=group.pk).exists():
            raise ValueError(f"{self.username} is not a member of group {group.name}.")
        self.active_group = group
        self.save(update_fields=["active_group"])


class ApiUsage(models.Model):
    """How much a user uses ADIT's APIs: counted in memory and written in batches (see
    ``api_usage``), so a request costs no query of its own."""

    owner = models.OneToOneField(User, on_delete=models.CASCADE, related_name="api_usage")
    requests = models.PositiveBigIntegerField(default=0)
    transferred_bytes = models.PositiveBigIntegerField(
        default=0, help_text="Bytes of the API's answers (retrieved images, search results)."
    )
    last_access = models.DateTimeField(blank=True, null=True)

    class Meta:
        ordering = ["-last_access"]
        verbose_name = "API usage"
        verbose_name_plural = "API usage"

    def __str__(self) -> str:
        return f"API usage of {self.owner}"
