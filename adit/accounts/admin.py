from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from .models import User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    fieldsets = (
        *(DjangoUserAdmin.fieldsets or ()),
        ("ADIT", {"fields": ("active_group", "phone_number", "department", "preferences")}),
    )
    list_display = ("username", "email", "first_name", "last_name", "active_group", "is_staff")
