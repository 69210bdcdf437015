from adit.env import load_env

load_env()

from django.core.asgi import get_asgi_application  # noqa: E402

# Django must be set up before anything that imports models (consumers, routing).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from adit.core.websockets import SameOriginMiddleware  # noqa: E402
from adit.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SameOriginMiddleware(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
