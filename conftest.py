import os

import pytest

# Playwright's sync API runs an event loop in the main thread; without this the ORM refuses to
# work in tests that use a browser page and the database together.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"

# Real Orthanc PACS (orthanc1, orthanc2, empty_orthanc2, receiver_port, ...) for integration tests.
pytest_plugins = ["tests.orthanc_fixtures"]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "headless": True,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


@pytest.fixture
def member(db):
    """A user in two groups, the first of them active."""
    from adit.accounts.tests.factories import GroupFactory, UserFactory

    return UserFactory(
        username="alice",
        groups=[GroupFactory(name="Thoraxklinik"), GroupFactory(name="Neuroradiologie")],
    )


@pytest.fixture
def staff_user(db):
    from adit.accounts.tests.factories import GroupFactory, UserFactory

    user = UserFactory(username="staffer", groups=[GroupFactory(name="Staff")])
    user.is_staff = True
    user.save()
    return user
