"""A Python client of ADIT's DICOMweb API: search, retrieve (also pseudonymized and as NIfTI)
and store through ADIT, in any PACS ADIT knows, named by its AE title."""

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

__all__ = [
    "AditAuthError",
    "AditBadRequest",
    "AditClient",
    "AditError",
    "AditNotFound",
    "AditPermissionDenied",
    "AditServerError",
    "__version__",
]
