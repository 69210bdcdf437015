"""The REST API's routes: the nodes, the jobs of every kind with an API, the schema and its
documentation page (served from this server; nothing is loaded from elsewhere)."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from adit.core.api.jobs import api_kinds, job_viewset
from adit.core.api.nodes import NodeViewSet

router = SimpleRouter(trailing_slash=True)
router.register("nodes", NodeViewSet, basename="api-node")
for kind in api_kinds():
    assert kind.api is not None
    router.register(kind.api.name, job_viewset(kind), basename=f"api-{kind.api.name}")

urlpatterns = [
    path("", include(router.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api_schema"), name="api_docs"),
]
