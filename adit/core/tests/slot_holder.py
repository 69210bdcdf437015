"""Takes association slots in a process of its own, for tests of ``association_slots``.

    python -m adit.core.tests.slot_holder '{"server_pk": 7, "limit": 2, "mode": "hold"}'

Run with the test settings on the test database (see ``app_processes``). Modes:

- ``hold``: takes one slot, prints "held" and keeps it until the process is killed.
- ``compete``: prints "ready", waits for a line on stdin, then ``threads`` threads each take a
  slot ``rounds`` times and hold it ``hold_seconds``; prints the intervals (CLOCK_MONOTONIC,
  which all processes share) in which they held one, as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time


def main() -> None:
    arguments = json.loads(sys.argv[1])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "adit.settings.test")
    import django

    django.setup()
    from adit.core import association_slots
    from adit.core.models import DicomServer

    server = DicomServer(
        pk=arguments["server_pk"], name="competing", max_associations=arguments["limit"]
    )
    if arguments["mode"] == "hold":
        with association_slots.association_slot(server):
            print("held", flush=True)
            while True:
                time.sleep(60)

    intervals: list[tuple[float, float]] = []

    def compete() -> None:
        for _ in range(arguments["rounds"]):
            with association_slots.association_slot(server):
                started = time.monotonic()
                time.sleep(arguments["hold_seconds"])
                intervals.append((started, time.monotonic()))

    print("ready", flush=True)
    sys.stdin.readline()
    threads = [threading.Thread(target=compete) for _ in range(arguments["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(intervals), flush=True)


if __name__ == "__main__":
    main()
