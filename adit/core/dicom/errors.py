"""Errors of the DICOM layer. Their type carries the retry decision; their message says what
failed, where and why, in words a user can act on."""


class DicomError(Exception):
    """A DICOM operation failed in a way that retrying will not fix.

    Examples: the PACS rejected the association (unknown calling or called AE title), a query
    key is malformed, the server supports no protocol for the requested operation.
    """


class RetriableDicomError(DicomError):
    """A DICOM operation failed in a way that may pass when tried again later.

    Examples: connection refused or reset, a timeout, the PACS reported it is out of resources,
    some instances of a fetch never arrived.
    """


class DicomTimeoutError(RetriableDicomError):
    """The server did not answer in time: the connection, the association or a response did
    not come within its timeout (a person at a page is told to try again later)."""


class AssociationLimitError(RetriableDicomError):
    """All the associations ADIT may open to a server at once (its "max. associations") stayed
    in use for as long as an operation may wait. Not tried again within the operation, which
    waited long enough: the task runs again later."""


class IncompleteFetchError(RetriableDicomError):
    """A fetch delivered fewer instances than the server holds; the message says how many are
    missing. Retriable: the usual cause is a connection or a PACS that went away mid-study."""


class ServiceStoppingError(RetriableDicomError):
    """A service of ADIT's own that an operation relies on (the receiver) stopped in the
    middle of it. Neither the PACS's fault nor a failed attempt: the work resumes once the
    service runs again, as after a worker that stopped."""
