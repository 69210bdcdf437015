from django.contrib import admin

from .models import ProjectSettings, SectionLock


@admin.register(ProjectSettings)
class ProjectSettingsAdmin(admin.ModelAdmin):
    list_display = ["__str__", "maintenance"]

    def has_add_permission(self, request):
        return not ProjectSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(SectionLock)
class SectionLockAdmin(admin.ModelAdmin):
    list_display = ["namespace", "reason", "locked_at"]
