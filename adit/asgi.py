from adit.env import load_env

load_env()

import asyncio  # noqa: E402

import django  # noqa: E402
from asgiref.sync import sync_to_async  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.http.response import HttpResponseBase  # noqa: E402


class _ASGIHandler(ASGIHandler):
    # Django sends a streamed response in messages of at most this size. At its 64 KiB a
    # WADO-RS part of one CT slice (0.5 MB) took eight trips through the web server, each
    # costing CPU per message (cli bench dicomweb); the web server still waits for a slow
    # client after every message (adit.web_server).
    chunk_size = 2**20

    async def run_get_response(self, request) -> HttpResponseBase:
        """Django's, closing the response of a view the client left while it ran.

        A client that disconnects cancels the request, but not a synchronous view running on
        its thread (a retrieval waiting for the PACS's first instance): Django then drops the
        response the view returns without closing it, and a streamed one would keep its fetch
        (an association, instances in memory, a scratch folder) for ever.
        """
        # Not in Django's type stubs, though Django's own handle() calls it.
        view_running = super().run_get_response(request)  # pyright: ignore[reportAttributeAccessIssue]
        getting = asyncio.ensure_future(view_running)
        try:
            return await asyncio.shield(getting)
        except asyncio.CancelledError:
            getting.add_done_callback(_close_abandoned)
            raise


_abandoned_closing: set[asyncio.Task] = set()  # referenced until done, as asyncio asks


def _close_abandoned(getting: asyncio.Future) -> None:
    if getting.cancelled() or getting.exception() is not None:
        return
    closing = asyncio.ensure_future(sync_to_async(getting.result().close)())
    _abandoned_closing.add(closing)
    closing.add_done_callback(_abandoned_closing.discard)


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
