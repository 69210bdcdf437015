"""The channel layer that carries messages between ADIT's processes (workers -> browsers)."""

from __future__ import annotations

from typing import Any


def postgres_layer_config(database: dict[str, Any]) -> dict[str, Any]:
    """CHANNEL_LAYERS entry for channels_postgres on the given Django database.

    The layer stores messages in PostgreSQL and wakes receivers with LISTEN/NOTIFY, so every
    process that reaches the database can send to every other: no extra server is needed.
    """
    return {
        "BACKEND": "channels_postgres.core.PostgresChannelLayer",
        # The layer builds a Django DatabaseWrapper from CONFIG and silently yields no layer at
        # all when PASSWORD, PORT or TIME_ZONE are missing, so they are always spelled out.
        "CONFIG": {
            **database,
            "PASSWORD": database.get("PASSWORD") or "",
            "PORT": database.get("PORT") or "",
            "TIME_ZONE": None,
            # Memberships of consumers that died without disconnecting expire after a day.
            "group_expiry": 86400,
        },
    }
