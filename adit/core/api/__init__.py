"""The REST API's shared machinery (NetBox-style): every app's viewsets are thin, because
what every endpoint must do is done here once.

- ``permissions``: the token's scope (read-only tokens) and the model permission an action
  needs, from the user's active group as on the web pages.
- ``viewsets``: ``AditViewSet`` restricts its queryset to what the user may see before any
  handler runs; ``pagination`` and ``errors`` make every list and every error look alike.
- ``jobs``: the job endpoints of every registered job kind (list, detail, tasks, the job
  actions with the job pages' rules and messages); an app adds only how a job is created.
- ``nodes``: the servers and folders a user may use, and queries through the operator.
"""

# Where the API's paths begin: below it answers are JSON, errors included.
API_PREFIX = "/api/"


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIX)
