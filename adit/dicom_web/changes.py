"""How instances change on their way through the API: the ``pseudonym``,
``trial_protocol_id``, ``trial_protocol_name`` and ``project`` parameters of a retrieval or a
store, checked, and the core's pseudonymizer and modifier they make."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request

from adit.core import validators
from adit.core.models import Project
from adit.core.transfer.modify import InstanceModifier
from adit.core.transfer.pseudonymizer import Pseudonymizer
from adit.core.transfer.study import excluded_modalities

from .api import BadParameter, bad_parameter, groups_allowed

# Values of the text parameters end up in LO elements (PatientID, ClinicalTrialProtocolID…).
MAX_TEXT_LENGTH = 64
_PARAMETERS = ("pseudonym", "project", "trial_protocol_id", "trial_protocol_name")


@dataclass(frozen=True)
class InstanceChanges:
    """How the instances are changed on their way (out of a retrieval, or into a store), from
    the query string, checked."""

    pseudonym: str = ""
    trial_protocol_id: str = ""
    trial_protocol_name: str = ""
    project: Project | None = None

    @classmethod
    def of(
        cls,
        request: Request,
        *,
        unpseudonymized: str | None = None,
        allowed_groups: list[Group] | None = None,
    ) -> InstanceChanges:
        """The changes the request asks for.

        Args:
            unpseudonymized: The permission needed to leave the instances as they are (no
                pseudonym); None if that needs none.
            allowed_groups: The groups that may do the operation: the permission must be
                held by one of them.

        Raises:
            BadParameter: A parameter is unknown, repeated or unusable; the message names it.
            PermissionDenied: No pseudonym, and the user may not retrieve unpseudonymized data.
        """
        values: dict[str, str] = {}
        for name, given in request.query_params.lists():
            if name not in _PARAMETERS:
                # A misspelt "pseudonym" must not quietly hand out the real data.
                raise BadParameter(name, f"no such parameter here (only {', '.join(_PARAMETERS)}).")
            if len(given) > 1:
                raise BadParameter(name, "given more than once.")
            values[name] = given[0]
        pseudonym = values.get("pseudonym")
        if pseudonym is not None:
            if not pseudonym:
                raise BadParameter(
                    "pseudonym", "empty (leave it out to retrieve unpseudonymized data)."
                )
            check_parameter(validators.validate_pseudonym, "pseudonym", pseudonym)
        for name in ("trial_protocol_id", "trial_protocol_name"):
            if name in values:
                _check_text(name, values[name])
        project = None
        if "project" in values:
            if pseudonym is None:
                raise BadParameter(
                    "project", "only used with a pseudonym (its secret keys the new UIDs)."
                )
            project = _project(request, values["project"])
        if pseudonym is None and unpseudonymized is not None:
            # From a group that may also do the operation: rights of groups never combine.
            holders = groups_allowed(request.user, unpseudonymized)
            if allowed_groups is not None:
                holders = holders.filter(pk__in=[group.pk for group in allowed_groups])
            if not holders.exists():
                raise PermissionDenied(
                    "A pseudonym is required (parameter pseudonym): unpseudonymized data "
                    f"needs the permission {unpseudonymized}, which none of your groups has."
                )
        return cls(
            pseudonym=pseudonym or "",
            trial_protocol_id=values.get("trial_protocol_id", ""),
            trial_protocol_name=values.get("trial_protocol_name", ""),
            project=project,
        )

    def pseudonymizer(self) -> Pseudonymizer | None:
        if not self.pseudonym:
            return None
        # Without a project no secret is kept: one per request keeps the new UIDs consistent
        # within the answer and unlinkable to any other request.
        secret = self.project.secret if self.project else secrets.token_urlsafe(32)
        try:
            return Pseudonymizer(
                self.pseudonym,
                secret,
                trial_protocol_id=self.trial_protocol_id,
                trial_protocol_name=self.trial_protocol_name,
            )
        except ValueError as err:  # checked above already; the pseudonymizer's own words
            raise BadParameter("pseudonym", str(err)) from None

    def modifier(self, pseudonymizer: Pseudonymizer | None) -> InstanceModifier:
        return InstanceModifier(
            pseudonymizer,
            excluded_modalities=excluded_modalities(pseudonymizer is not None),
            trial_protocol_id=self.trial_protocol_id,
            trial_protocol_name=self.trial_protocol_name,
        )


def check_parameter(validator, name: str, value: str) -> None:
    try:
        validator(value)
    except ValidationError as err:
        raise bad_parameter(name, err) from None


def _check_text(name: str, value: str) -> None:
    if len(value) > MAX_TEXT_LENGTH:
        raise BadParameter(name, f"at most {MAX_TEXT_LENGTH} characters, not {len(value)}.")
    check_parameter(validators.validate_query_value, name, value)


def _project(request: Request, name: str) -> Project:
    _check_text("project", name)
    if getattr(request.auth, "read_only", False):
        # The project records each patient's pseudonym for good: that is a change.
        raise PermissionDenied(
            "This API token is read-only: a project records its pseudonyms, so only a token "
            "with write access may name one."
        )
    project = (
        Project.objects.filter(name=name, groups__in=request.user.groups.all())  # pyright: ignore[reportAttributeAccessIssue]
        .distinct()
        .first()
    )
    if project is None:
        raise BadParameter(
            "project", f"none of your groups takes part in a project {validators.shown(name)}."
        )
    return project
