from django.urls import path

from adit.core import views

app_name = "admin_section"

urlpatterns = [
    path("", views.admin_section, name="index"),
    path("maintenance/", views.toggle_maintenance, name="toggle_maintenance"),
    path("section-lock/", views.toggle_section_lock, name="toggle_section_lock"),
]
