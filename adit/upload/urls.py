from django.urls import path

from adit.core.jobs.views import job_urlpatterns

from . import views
from .models import UploadJob

app_name = "upload"

urlpatterns = [
    path("jobs/new/", views.job_create, name="job_create"),
    path("jobs/<int:pk>/files/", views.upload_file, name="upload_file"),
    path("jobs/<int:pk>/finish/", views.upload_finish, name="upload_finish"),
    *job_urlpatterns(UploadJob),
]
