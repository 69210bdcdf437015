"""The rules of a transfer's options, shared by every way a transfer job is asked for (the
forms of the transfer apps, the REST API): which options a user may choose for a job kind,
and which go together with the destination. Each says what is wrong in the words people see.
"""

from __future__ import annotations

from dataclasses import dataclass

from adit.core.models import DicomNode, Project
from adit.core.transfer.models import TransferJob

MAX_ARCHIVE_PASSWORD_LENGTH = 50

DESTINATION_MISSING = "Choose where the studies go."
PSEUDONYM_REQUIRED = "This field is required."
ARCHIVE_PASSWORD_NEEDS_FOLDER = "An archive password only works for folder destinations."
NIFTI_NEEDS_FOLDER = "NIfTI conversion only works for folder destinations."


@dataclass(frozen=True)
class TransferChoices:
    """The options of a transfer as checked for its user (permissions applied)."""

    destination: DicomNode
    pseudonym: str = ""
    project: Project | None = None
    trial_protocol_id: str = ""
    trial_protocol_name: str = ""
    urgent: bool = False
    archive_password: str = ""
    convert_to_nifti: bool = False
    send_finished_mail: bool = False

    def job_fields(self) -> dict:
        """Keyword arguments of the TransferJob to create."""
        return {
            "urgent": self.urgent,
            "send_finished_mail": self.send_finished_mail,
            "trial_protocol_id": self.trial_protocol_id,
            "trial_protocol_name": self.trial_protocol_name,
            "project": self.project,
            "archive_password": self.archive_password,
            "convert_to_nifti": self.convert_to_nifti,
        }

    def task_fields(self) -> dict:
        """Keyword arguments every TransferTask of the job shares."""
        return {"destination": self.destination, "pseudonym": self.pseudonym}


@dataclass(frozen=True)
class TransferRights:
    """What a user may choose for transfer jobs of one kind: the permissions of the kind's
    own app (selective transfer's allow nothing in batch transfer), from the active group."""

    app_label: str
    may_process_urgently: bool
    may_transfer_unpseudonymized: bool

    @classmethod
    def of(cls, user, job_model: type[TransferJob]) -> TransferRights:
        app_label = job_model._meta.app_label
        return cls(
            app_label=app_label,
            may_process_urgently=user.has_perm(f"{app_label}.can_process_urgently"),
            may_transfer_unpseudonymized=user.has_perm(f"{app_label}.can_transfer_unpseudonymized"),
        )


def transfer_option_problems(
    rights: TransferRights,
    *,
    destination: DicomNode | None,
    pseudonymized: bool,
    archive_password: bool,
    convert_to_nifti: bool,
    urgent: bool,
) -> dict[str, str]:
    """What stops a transfer with these options, by the name of the option at fault ({} if
    nothing does). The options are given as whether they are asked for."""
    problems: dict[str, str] = {}
    if destination is None:
        problems["destination"] = DESTINATION_MISSING
    if not pseudonymized and not rights.may_transfer_unpseudonymized:
        problems["pseudonym"] = PSEUDONYM_REQUIRED
    to_folder = destination is None or destination.node_type == DicomNode.NodeType.FOLDER
    if archive_password and not to_folder:
        problems["archive_password"] = ARCHIVE_PASSWORD_NEEDS_FOLDER
    if convert_to_nifti and not to_folder:
        problems["convert_to_nifti"] = NIFTI_NEEDS_FOLDER
    if urgent and not rights.may_process_urgently:
        problems["urgent"] = (
            "You may not have jobs processed urgently: that needs the permission "
            f"{rights.app_label}.can_process_urgently in your active group."
        )
    return problems
