"""The project's URLs plus the test-only example job app (ROOT_URLCONF of the test settings)."""

from django.urls import include, path

from adit.urls import urlpatterns as project_urlpatterns

urlpatterns = [
    *project_urlpatterns,
    path("example/", include("adit.core.tests.example_app.urls")),
]
