"""The project's URLs plus the test-only job apps (ROOT_URLCONF of the test settings)."""

from django.urls import include, path

from adit.core.tests import web_server_views
from adit.urls import handler404, handler500  # noqa: F401 (the project's, read from here)
from adit.urls import urlpatterns as project_urlpatterns

urlpatterns = [
    *project_urlpatterns,
    path("example/", include("adit.core.tests.example_app.urls")),
    path("queries/", include("adit.core.tests.query_app.urls")),
    path("test-web-server/body-echo/", web_server_views.body_echo),
    path("test-web-server/stream/<int:mib>/", web_server_views.stream),
]
