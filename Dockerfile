# syntax=docker/dockerfile:1
#
# One image for every ADIT process: the web server (default command), the task workers, the
# DICOM receiver and the one-off init step. docker-compose.dev.yml and docker-compose.prod.yml
# pick the process with `command:`.

FROM python:3.11-slim-bookworm

# Runtime tools that ADIT calls as external programs: DCMTK (DICOM networking and file tools)
# and 7-Zip (archives for downloads).
RUN apt-get update \
    && apt-get install -y --no-install-recommends dcmtk p7zip-full \
    && rm -rf /var/lib/apt/lists/*

RUN pip install --no-cache-dir "uv==0.13.9"

# The virtual environment lives outside /app so that the development setup, which bind-mounts the
# source folder over /app, neither hides it nor picks up the host's own .venv.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_PREFERENCE=only-system \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    PATH="/opt/venv/bin:${PATH}" \
    DJANGO_SETTINGS_MODULE=adit.settings.production \
    ADIT_DATA_DIR=/var/lib/adit

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock .python-version ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# Then the project itself.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev

# Everything runs as an unprivileged user; it owns only the data folder (a volume in compose),
# which holds the collected static files and whatever the workers write.
RUN groupadd --system --gid 1000 adit \
    && useradd --system --uid 1000 --gid adit --create-home --home-dir /home/adit \
        --shell /usr/sbin/nologin adit \
    && mkdir -p /var/lib/adit \
    && chown adit:adit /var/lib/adit

USER adit

# 8000: web server (HTTP), 11112: DICOM receiver (C-STORE SCP).
EXPOSE 8000 11112

# Asks the web server's /health/ (which also checks the database). The Host header is the first
# concrete entry of DJANGO_ALLOWED_HOSTS (localhost if there is none), so the check is not refused
# as a disallowed host in production; /health/ is exempt from the redirect to HTTPS. Services
# other than the web server switch this check off in the compose files.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request as u; \
hosts = [h.strip().lstrip('.') for h in os.environ.get('DJANGO_ALLOWED_HOSTS', '').split(',')]; \
host = next((h for h in hosts if h and '*' not in h), 'localhost'); \
u.urlopen(u.Request('http://localhost:8000/health/', headers={'Host': host}), timeout=4)"

CMD ["python", "-m", "adit.web_server", "-b", "0.0.0.0", "-p", "8000", "adit.asgi:application"]
