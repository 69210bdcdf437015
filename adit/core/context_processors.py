from django.conf import settings
from django.http import HttpRequest

from adit.core import sections


def site(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    is_staff = bool(user and user.is_staff)
    menu = [
        section
        for section in sections.all_sections()
        if section.in_main_menu and (is_staff or not section.staff_only)
    ]
    return {
        "site_name": settings.SITE_NAME,
        "menu_sections": menu,
        "maintenance_mode": getattr(request, "maintenance_mode", False),
        "locked_section": getattr(request, "locked_section", None),
    }
