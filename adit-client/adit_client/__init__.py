"""A Python client of ADIT: search, retrieve (also pseudonymized and as NIfTI) and store
through its DICOMweb API, in any PACS ADIT knows, named by its AE title; query servers and
create, follow and cancel jobs through its REST API."""

from ._version import __version__
from .client import AditClient
from .errors import (
    AditAuthError,
    AditBadRequest,
    AditError,
    AditNotFound,
    AditPermissionDenied,
    AditServerError,
)
from .jobs import Job

__all__ = [
    "AditAuthError",
    "AditBadRequest",
    "AditClient",
    "AditError",
    "AditNotFound",
    "AditPermissionDenied",
    "AditServerError",
    "Job",
    "__version__",
]
