from django.urls import path

from .consumers import SelectiveTransferConsumer

websocket_urlpatterns = [
    # Channels routes ASGI apps with Django's path(); django-types only knows views.
    path("ws/selective-transfer", SelectiveTransferConsumer.as_asgi()),  # pyright: ignore[reportCallIssue, reportArgumentType]
]
