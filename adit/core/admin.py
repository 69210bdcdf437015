from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.models import Group

from adit.core.dicom.operator import DicomOperator
from adit.core.models import (
    DicomFolder,
    DicomNodeGroupAccess,
    DicomServer,
    Project,
    ProjectPseudonym,
    ProjectSettings,
    SectionLock,
)


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


class NodeAccessInline(admin.TabularInline):
    model = DicomNodeGroupAccess
    extra = 1
    fields = ["group", "source", "destination"]


class GroupNodeAccessInline(admin.TabularInline):
    model = DicomNodeGroupAccess
    extra = 1
    fields = ["dicom_node", "source", "destination"]
    verbose_name = "DICOM node access"
    verbose_name_plural = "DICOM node access"


@admin.action(description="Test connection (C-ECHO, or QIDO-RS for DICOMweb-only servers)")
def test_connection(modeladmin, request, queryset):
    for server in queryset:
        check = DicomOperator(server).check_connection()
        level = messages.SUCCESS if check.ok else messages.ERROR
        modeladmin.message_user(request, f"{server.name}: {check.message}", level)


@admin.register(DicomServer)
class DicomServerAdmin(admin.ModelAdmin):
    list_display = ["name", "ae_title", "host", "port", "dicomweb_root_url"]
    search_fields = ["name", "ae_title", "host"]
    inlines = [NodeAccessInline]
    actions = [test_connection]
    fieldsets = [
        (None, {"fields": ["name", "ae_title", "host", "port"]}),
        (
            "DIMSE services",
            {
                "fields": [
                    ("patient_root_find_support", "study_root_find_support"),
                    ("patient_root_get_support", "study_root_get_support"),
                    ("patient_root_move_support", "study_root_move_support"),
                    "store_scp_support",
                    "moves_to_destinations",
                    "max_associations",
                ]
            },
        ),
        (
            "DICOMweb",
            {
                "fields": [
                    "dicomweb_root_url",
                    ("dicomweb_qido_support", "dicomweb_wado_support", "dicomweb_stow_support"),
                    ("dicomweb_qido_prefix", "dicomweb_wado_prefix", "dicomweb_stow_prefix"),
                    "dicomweb_authorization_header",
                ]
            },
        ),
    ]


@admin.register(DicomFolder)
class DicomFolderAdmin(admin.ModelAdmin):
    list_display = ["name", "path", "quota", "warn_size"]
    search_fields = ["name", "path"]
    inlines = [NodeAccessInline]


class ProjectPseudonymInline(admin.TabularInline):
    """Recorded by the transfers themselves; staff look them up, and delete a wrong one so
    that the next transfer of that patient records its pair anew."""

    model = ProjectPseudonym
    extra = 0
    fields = readonly_fields = ["patient_id", "pseudonym", "created"]
    verbose_name_plural = "pseudonyms (who goes by which pseudonym in this project)"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "created"]
    search_fields = ["name", "pseudonyms__patient_id", "pseudonyms__pseudonym"]
    fields = ["name", "description", "groups"]
    filter_horizontal = ["groups"]
    inlines = [ProjectPseudonymInline]


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(DjangoGroupAdmin):
    inlines = [GroupNodeAccessInline]
