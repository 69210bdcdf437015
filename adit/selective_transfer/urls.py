from django.urls import path

from adit.core.jobs.views import job_urlpatterns

from . import download, views
from .models import SelectiveTransferJob

app_name = "selective_transfer"

urlpatterns = [
    path("", views.job_create, name="job_create"),
    path("download/", download.download_study, name="download_study"),
    *job_urlpatterns(SelectiveTransferJob),
]
