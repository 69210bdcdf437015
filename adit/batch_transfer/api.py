"""Batch transfer jobs in the REST API: created with the page's form, from JSON rows or a
batch file, with its options, limits and messages (see adit.core.api.batch); followed and
acted on as every job kind is.

    POST /api/batch-transfer-jobs/    a new job; ``check_first`` has the studies checked at
                                      the source first, after which the job waits for its
                                      start on the job page (so a script's default is false)
"""

from __future__ import annotations

from adit.core.api.batch import batch_create_serializer

from .forms import BatchTransferJobForm

# Each line brings its own pseudonym: the transfer options' one pseudonym is no field here.
CreateSerializer = batch_create_serializer(
    BatchTransferJobForm,
    "BatchTransferJobCreate",
    exclude=("pseudonym",),
    defaults={"check_first": False},
)
