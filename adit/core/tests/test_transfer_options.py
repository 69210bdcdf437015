"""The shared transfer options form on its own, as an app other than selective transfer uses it
(the example app, whose ExampleJob is a TransferJob with the same permissions)."""

import pytest
from django.contrib.auth.models import Permission

from adit.accounts.tests.factories import GroupFactory
from adit.core.models import Project
from adit.core.tests.example_app.models import ExampleJob
from adit.core.tests.factories import DicomFolderFactory, DicomServerFactory, grant
from adit.core.transfer.forms import TransferOptionsForm
from adit.selective_transfer.forms import SelectiveTransferForm

pytestmark = pytest.mark.django_db


class ExampleTransferForm(TransferOptionsForm):
    job_model = ExampleJob


def give(user, app_label: str, *codenames: str) -> None:
    """Adds permissions of one app to the user's active group."""
    for codename in codenames:
        user.active_group.permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    for cache in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):  # has_perm caches
        if hasattr(user, cache):
            delattr(user, cache)


@pytest.fixture
def server_destination(member):
    server = DicomServerFactory(name="Research PACS")
    grant(server, member.active_group, destination=True)
    return server


@pytest.fixture
def folder_destination(member, tmp_path):
    folder = DicomFolderFactory(name="Share", path=str(tmp_path / "share"))
    grant(folder, member.active_group, destination=True)
    return folder


def _checked(form_class, user, **data) -> TransferOptionsForm:
    form = form_class(data, user=user)
    form.is_valid()
    form.check_transfer_options()
    return form


def test_permissions_come_from_the_form_s_own_app(member, server_destination):
    """Selective transfer's permissions allow nothing in another app."""
    give(member, "selective_transfer", "can_transfer_unpseudonymized", "can_process_urgently")
    source = DicomServerFactory(name="Source PACS")
    grant(source, member.active_group, source=True)
    data = {"destination": server_destination.pk, "urgent": "on"}

    selective = _checked(SelectiveTransferForm, member, source=source.pk, **data)
    assert selective.errors == {}
    assert selective.transfer_choices().urgent is True

    example = _checked(ExampleTransferForm, member, **data)
    assert example.errors == {"pseudonym": ["This field is required."]}
    assert "urgent" not in example.fields
    assert example.fields["pseudonym"].help_text == (
        "Required: you may only transfer pseudonymized."
    )

    give(member, "example_app", "can_transfer_unpseudonymized")
    example = _checked(ExampleTransferForm, member, **data)
    assert example.errors == {}
    options = example.transfer_choices()
    assert (options.pseudonym, options.urgent) == ("", False)  # urgent refused, silently
    give(member, "example_app", "can_process_urgently")
    assert _checked(ExampleTransferForm, member, **data).transfer_choices().urgent is True


def test_folder_only_options_are_refused_for_a_server_destination(member, server_destination):
    form = _checked(
        ExampleTransferForm,
        member,
        destination=server_destination.pk,
        pseudonym="Case 7",
        archive_password="s3cret",
        convert_to_nifti="on",
    )

    assert form.errors == {
        "archive_password": ["An archive password only works for folder destinations."],
        "convert_to_nifti": ["NIfTI conversion only works for folder destinations."],
    }


def test_folder_only_options_are_taken_for_a_folder_destination(member, folder_destination):
    form = _checked(
        ExampleTransferForm,
        member,
        destination=folder_destination.pk,
        pseudonym="Case 7",
        archive_password="s3cret",
        convert_to_nifti="on",
    )

    assert form.errors == {}
    options = form.transfer_choices()
    assert (options.archive_password, options.convert_to_nifti) == ("s3cret", True)


def test_a_transfer_needs_a_destination_and_a_valid_pseudonym(member):
    form = _checked(ExampleTransferForm, member, pseudonym="Case*")

    assert form.errors["destination"] == ["Choose where the studies go."]
    assert (
        "A pseudonym must not contain * or ? (they are wildcards in DICOM searches)."
        in form.errors["pseudonym"]
    )


def test_destinations_are_those_of_the_active_group_with_the_destination_flag(member, tmp_path):
    thorax = member.groups.get(name="Thoraxklinik")
    neuro = member.groups.get(name="Neuroradiologie")
    grant(DicomServerFactory(name="Target"), thorax, destination=True)
    grant(DicomServerFactory(name="Source only"), thorax, source=True)
    grant(DicomServerFactory(name="Neuro target"), neuro, destination=True)
    grant(DicomFolderFactory(name="Share", path=str(tmp_path)), thorax, destination=True)

    form = ExampleTransferForm(user=member)

    choices = [label for _, label in form.fields["destination"].choices]  # pyright: ignore[reportAttributeAccessIssue]
    assert choices == ["Choose a destination", "DICOM Server Target", "DICOM Folder Share"]


def test_projects_are_limited_to_the_active_group(member, server_destination):
    thorax = member.groups.get(name="Thoraxklinik")
    neuro = member.groups.get(name="Neuroradiologie")
    lung = Project.objects.create(name="Lung study")
    lung.groups.add(thorax, neuro)  # two of the user's groups: offered once
    brain = Project.objects.create(name="Brain study")
    brain.groups.add(neuro)
    foreign = Project.objects.create(name="Foreign study")
    foreign.groups.add(GroupFactory(name="Elsewhere"))

    form = ExampleTransferForm(user=member)
    assert list(form.fields["project"].queryset) == [lung]  # pyright: ignore[reportAttributeAccessIssue]

    refused = _checked(
        ExampleTransferForm,
        member,
        destination=server_destination.pk,
        pseudonym="Case 7",
        project=foreign.pk,
    )
    assert refused.errors == {
        "project": ["Select a valid choice. That choice is not one of the available choices."]
    }

    member.change_active_group(neuro)
    form = ExampleTransferForm(user=member)
    assert list(form.fields["project"].queryset) == [brain, lung]  # pyright: ignore[reportAttributeAccessIssue]


def test_the_options_fill_a_job_and_its_tasks(member, folder_destination):
    thorax = member.groups.get(name="Thoraxklinik")
    project = Project.objects.create(name="Lung study")
    project.groups.add(thorax)
    form = _checked(
        ExampleTransferForm,
        member,
        destination=folder_destination.pk,
        pseudonym="Case 7",
        project=project.pk,
        trial_protocol_id="T-1",
        trial_protocol_name="Lung trial",
        archive_password="s3cret",
        send_finished_mail="on",
    )
    assert form.errors == {}
    options = form.transfer_choices()

    job = ExampleJob.objects.create(owner=member, **options.job_fields())

    job.refresh_from_db()
    assert (job.project, job.trial_protocol_id, job.trial_protocol_name) == (
        project,
        "T-1",
        "Lung trial",
    )
    assert (job.urgent, job.send_finished_mail, job.convert_to_nifti) == (False, True, False)
    assert job.encrypt_archive and job.archive_password == "s3cret"
    assert options.task_fields() == {
        "destination": folder_destination.dicomnode_ptr,
        "pseudonym": "Case 7",
    }
