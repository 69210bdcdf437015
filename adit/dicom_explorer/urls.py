from django.urls import path

from . import views

app_name = "dicom_explorer"

_server = "servers/<int:server_id>/"
_study = f"{_server}studies/<str:study_uid>/"

urlpatterns = [
    path("", views.search, name="search"),
    path(_server, views.server_detail, name="server_detail"),
    path(f"{_server}patients/", views.patient_list, name="patient_list"),
    # A patient ID may hold a slash.
    path(f"{_server}patients/<path:patient_id>/", views.patient_detail, name="patient_detail"),
    path(f"{_server}studies/", views.study_list, name="study_list"),
    path(_study, views.study_detail, name="study_detail"),
    path(f"{_study}series/", views.series_list, name="series_list"),
    path(f"{_study}series/<str:series_uid>/", views.series_detail, name="series_detail"),
    path(
        f"{_study}series/<str:series_uid>/instances/<str:sop_uid>/",
        views.instance_detail,
        name="instance_detail",
    ),
    path(
        f"{_study}series/<str:series_uid>/preview/",
        views.series_preview,
        name="series_preview",
    ),
]
