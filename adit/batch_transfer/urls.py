from django.urls import path

from adit.core.jobs.views import job_urlpatterns

from . import views
from .models import BatchTransferJob

app_name = "batch_transfer"

urlpatterns = [
    path("jobs/new/", views.job_create, name="job_create"),
    path("jobs/<int:pk>/start/", views.step_view(views.StartView), name="job_start"),
    path("jobs/<int:pk>/check-again/", views.step_view(views.RecheckView), name="job_recheck"),
    path(
        "jobs/<int:pk>/corrected-file/",
        views.step_view(views.CorrectedFileView),
        name="job_replace",
    ),
    *job_urlpatterns(BatchTransferJob),
]
