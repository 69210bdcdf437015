import os

import pytest

CHROMIUM = "/usr/bin/chromium"
# Django refuses sync ORM calls in a thread with a running event loop unless this is set.
ASYNC_UNSAFE_VARIABLE = "DJANGO_ALLOW_ASYNC_UNSAFE"

# Real Orthanc PACS (orthanc1, orthanc2, empty_orthanc2, receiver_port, ...) for integration tests.
pytest_plugins = ["tests.orthanc_fixtures"]


def _uses_a_browser(item: pytest.Item) -> bool:
    # pytest-playwright's page, context and browser all rest on its "playwright" fixture.
    return "playwright" in getattr(item, "fixturenames", ())


# After pytest-django's own sorting (by database use), which would otherwise mix them again.
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Runs the browser tests last, in their order.

    Playwright's sync API leaves its event loop marked as running in the main thread from the
    first browser test to the end of the session. A test after it would run "inside" that loop:
    Django would refuse its sync ORM calls, asyncio.run would refuse to start.
    """
    items.sort(key=_uses_a_browser)  # stable: the order within each part is kept


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item):
    """Allows sync ORM calls under Playwright's event loop, for browser tests only.

    The test and its fixtures (of any scope, set up or torn down with it) share the main thread
    with that loop. Every other test runs without the allowance, so async code that calls the
    ORM directly fails there as it would in production.
    """
    if not _uses_a_browser(item):
        return (yield)
    previous = os.environ.get(ASYNC_UNSAFE_VARIABLE)
    os.environ[ASYNC_UNSAFE_VARIABLE] = "true"
    try:
        return (yield)
    finally:
        if previous is None:
            os.environ.pop(ASYNC_UNSAFE_VARIABLE, None)
        else:
            os.environ[ASYNC_UNSAFE_VARIABLE] = previous


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


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's test database, with the connection that counts association slots
    closed before the database is dropped (PostgreSQL drops no database still in use)."""
    yield
    from adit.core import association_slots

    association_slots.close()


@pytest.fixture(autouse=True)
def _no_api_usage_left_over():
    """API usage counted in memory belongs to the test that counted it: left over, it would be
    written into another test's database, or at exit into none."""
    yield
    from adit.accounts.api_usage import counter

    counter.discard()


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


_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """A thread a test left running (a fetch nobody stopped, a server of a test) must not keep
    the finished run from exiting: the interpreter would wait for it forever. Names them, so
    the test that left them can be found, and exits with the run's status."""
    import sys
    import threading
    import traceback

    left = [
        thread
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
    ]
    if not left or not _exit_status:
        return
    frames = sys._current_frames()
    print(f"\n{len(left)} non-daemon thread(s) still running after the tests:", file=sys.stderr)
    for thread in left:
        print(f"--- {thread.name}", file=sys.stderr)
        frame = frames.get(thread.ident or 0)
        if frame is not None:
            print("".join(traceback.format_stack(frame)[-6:]), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status[-1])
