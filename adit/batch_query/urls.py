from django.urls import path, re_path

from adit.core.jobs.views import job_urlpatterns

from . import views
from .models import BatchQueryJob

app_name = "batch_query"

urlpatterns = [
    path("jobs/new/", views.job_create, name="job_create"),
    re_path(r"^sample\.(?P<suffix>csv|xlsx)$", views.sample_file, name="sample_file"),
    *job_urlpatterns(BatchQueryJob),
]
