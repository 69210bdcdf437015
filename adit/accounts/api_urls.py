from django.urls import path

from .api import CurrentUserView

urlpatterns = [
    path("me/", CurrentUserView.as_view(), name="api_me"),
]
