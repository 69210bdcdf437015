"""WebSocket routes of every app, collected in one list for the ASGI router."""

from adit.selective_transfer.routing import websocket_urlpatterns as selective_transfer_routes

websocket_urlpatterns: list = [*selective_transfer_routes]
