from adit.env import load_env

load_env()

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
