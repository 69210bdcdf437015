"""Fetches a study through an InstanceStream in a process of its own and reports its memory.

Run by test_stream_memory.py as ``python -m adit.core.tests.fetch_memory_probe <json>``, so
that the peak resident set size belongs to this fetch alone. With a "destination" server the
instances are C-STOREd there as a transfer does, otherwise their pixel data is read. Prints one
JSON line: ``{"baseline": bytes before the fetch, "peak": the process's peak, "instances":
count, "pixel_bytes": total (0 when stored)}``.
"""

from __future__ import annotations

import json
import os
import sys


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"/proc/self/status has no {field}")


def main(arguments: dict) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "adit.settings.test")
    import django

    django.setup()
    from django.conf import settings

    from adit.core.dicom.instance_stream import InstanceStream
    from adit.core.dicom.operator import DicomOperator
    from adit.core.dicom.selection import StudySelection
    from adit.core.models import DicomServer

    settings.FILE_CHANNEL_PORT = arguments.get("channel_port", settings.FILE_CHANNEL_PORT)
    server = DicomServer(**arguments["server"])
    operator = DicomOperator(server)
    selection = StudySelection(arguments["patient_id"], arguments["study_uid"])
    # Everything a fetch imports and sets up once, before the baseline is taken.
    counts = operator.count_instances(selection.patient_id, selection.study_uid)
    baseline = _status_bytes("VmRSS")
    stream = InstanceStream(
        operator, selection, budget_bytes=arguments["budget_bytes"], expected=counts
    )
    stream.start()
    instances = pixel_bytes = 0
    try:
        if "destination" in arguments:
            destination = DicomOperator(DicomServer(**arguments["destination"]))
            instances = destination.store(stream).stored
        for dataset in stream:
            # What a consumer does: it reads the pixel data (zipping, converting), then lets go.
            pixel_bytes += len(dataset.PixelData)
            instances += 1
            del dataset
    finally:
        stream.stop(wait=30)
    return {
        "baseline": baseline,
        "peak": _status_bytes("VmHWM"),
        "instances": instances,
        "pixel_bytes": pixel_bytes,
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
