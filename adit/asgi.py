from adit.env import load_env

load_env()

import django  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402


class _ASGIHandler(ASGIHandler):
    # Django sends a streamed response in messages of at most this size. At its 64 KiB a
    # WADO-RS part of one CT slice (0.5 MB) took eight trips through the web server, each
    # costing CPU per message (cli bench dicomweb); the web server still waits for a slow
    # client after every message (adit.web_server).
    chunk_size = 2**20


# Django must be set up before anything that imports models (consumers, routing), as
# get_asgi_application() does.
django.setup(set_prefix=False)
django_asgi_app = _ASGIHandler()

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
