from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from .models import ApiUsage, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    fieldsets = (
        *(DjangoUserAdmin.fieldsets or ()),
        ("ADIT", {"fields": ("active_group", "phone_number", "department", "preferences")}),
    )
    list_display = ("username", "email", "first_name", "last_name", "active_group", "is_staff")


@admin.register(ApiUsage)
class ApiUsageAdmin(admin.ModelAdmin):
    list_display = ("owner", "requests", "transferred_bytes", "last_access")
    readonly_fields = ("owner", "requests", "transferred_bytes", "last_access")

    def has_add_permission(self, request) -> bool:
        return False
