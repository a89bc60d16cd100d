"""A database outage inside the test process, through the real driver."""

import contextlib
import socket
from collections.abc import Iterator

from django.db import connections


@contextlib.contextmanager
def database_down() -> Iterator[None]:
    """Every new connection to the default database, from any thread, is refused until the
    block ends, as while PostgreSQL is stopped: the settings the connections are opened with
    point at a port that is bound but never listens. Needs a transactional test (the test's
    own connection is closed on the way in and out)."""
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))
    connection = connections["default"]
    settings_dict = connection.settings_dict  # shared by every thread's connection
    saved = settings_dict["HOST"], settings_dict["PORT"]
    connection.close()
    settings_dict["HOST"], settings_dict["PORT"] = "127.0.0.1", refusing.getsockname()[1]
    try:
        yield
    finally:
        connection.close()
        settings_dict["HOST"], settings_dict["PORT"] = saved
        refusing.close()
