"""Messages cross process boundaries: a worker process can reach a browser's consumer."""

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.db import connection

from adit.core.channel_layers import postgres_layer_config

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "channels_postgres"])

LAYER = """
import asyncio, json, os, sys, django
django.setup()
from channels_postgres.core import PostgresChannelLayer
layer = PostgresChannelLayer(**json.loads(os.environ["LAYER_CONFIG"]))
"""

RECEIVER = (
    LAYER
    + """
async def main():
    channel = await layer.new_channel()
    await layer.group_add("job-42", channel)
    print("ready", flush=True)
    message = await asyncio.wait_for(layer.receive(channel), timeout=20)
    print(json.dumps(message), flush=True)
    os._exit(0)  # the layer's listener would keep the loop alive
asyncio.run(main())
"""
)

SENDER = (
    LAYER
    + """
asyncio.run(layer.group_send("job-42", {"type": "job.progress", "done": 12, "total": 40}))
os._exit(0)
"""
)


def _start(script: str, config: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "adit.settings.test",
            "LAYER_CONFIG": json.dumps(config, default=str),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_message_sent_by_one_process_reaches_a_group_member_in_another():
    config = postgres_layer_config(connection.settings_dict)["CONFIG"]
    config = {key: value for key, value in config.items() if key != "TEST"}

    receiver = _start(RECEIVER, config)
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "ready"
        sender = _start(SENDER, config)
        sender_output, _ = sender.communicate(timeout=60)
        assert sender.returncode == 0, sender_output
        receiver_output, _ = receiver.communicate(timeout=60)
    finally:
        receiver.kill()
    assert receiver.returncode == 0, receiver_output
    message = json.loads(receiver_output.strip().splitlines()[-1])
    assert message == {"type": "job.progress", "done": 12, "total": 40}
