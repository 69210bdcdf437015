from django.contrib import admin
from django.urls import include, path

from adit.core import views as core_views

urlpatterns = [
    path("", core_views.home, name="home"),
    path("health/", core_views.health, name="health"),
    path("accounts/", include("adit.accounts.urls")),
    path("admin-section/", include("adit.core.urls")),
    path("token-authentication/", include("adit.token_authentication.urls")),
    path("selective-transfer/", include("adit.selective_transfer.urls")),
    path("batch-query/", include("adit.batch_query.urls")),
    path("batch-transfer/", include("adit.batch_transfer.urls")),
    path("dicom-explorer/", include("adit.dicom_explorer.urls")),
    path("upload/", include("adit.upload.urls")),
    path("api/dicom-web/", include("adit.dicom_web.urls")),
    path("api/", include("adit.accounts.api_urls")),
    path("api/", include("adit.core.api.urls")),
    path("django-admin/", admin.site.urls),
]

handler404 = "adit.core.api.errors.not_found"
handler500 = "adit.core.api.errors.server_error"
