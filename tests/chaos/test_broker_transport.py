"""The broker connection's clean-up after Redis died, step by step as the Celery worker runs it
(config/broker.py explains the crash): a channel waiting in BRPOP with an unacknowledged
message, Redis SIGKILLed, then `collect()` and `close()` of the connection, as celery 5.7's
connection-error handler calls them. On a real redis-server of the test's own.
"""

from collections.abc import Iterator

import pytest
from kombu import Connection, Consumer, Exchange, Queue
from kombu.common import ignore_errors
from kombu.message import Message

from config.celery import app
from tests.chaos.infra import RedisCopy, wait_until

pytestmark = pytest.mark.chaos

# celery.worker.consumer.consumer.COLLECT_SOCKET_TIMEOUT: the worker's bound on clean-up I/O.
COLLECT_SOCKET_TIMEOUT = 5.0


@pytest.fixture
def broker() -> Iterator[RedisCopy]:
    redis = RedisCopy().start()
    yield redis
    redis.stop()


def connection_after_redis_died(broker: RedisCopy, transport: object) -> tuple[Connection, Message]:
    """A connection shaped like the worker's when its Redis is SIGKILLed: the default channel
    holds one unacknowledged message (a task running with acks_late, returned too) and waits
    in BRPOP for the next, and a second channel consumes a broadcast queue (the worker's
    remote control)."""
    connection = Connection(broker.url, transport=transport)
    tasks = Queue("work", Exchange("work"), "work")
    connection.Producer().publish(
        {"n": 1}, exchange=tasks.exchange, routing_key="work", declare=[tasks]
    )
    received = []
    connection.Consumer(
        tasks, callbacks=[lambda body, message: received.append(message)], accept=["json"]
    ).consume()
    control = Queue("control", Exchange("control", type="fanout"), auto_delete=True)
    Consumer(connection.channel(), [control], accept=["json"]).consume()

    def delivered() -> list:
        drain(connection)
        return received

    wait_until(delivered, timeout=10, what="the message")
    assert len(received) == 1 and not received[0].acknowledged
    # Drain until a wait times out: the next BRPOP is then left pending.
    wait_until(lambda: not drain(connection), timeout=10, what="an idle wait")
    assert connection.default_channel._in_poll
    broker.kill()
    return connection, received[0]


def drain(connection: Connection) -> bool:
    """Handle one event (a message, a subscription reply); False when none came in 0.2 s."""
    try:
        connection.drain_events(timeout=0.2)
    except TimeoutError:
        return False
    return True


def collect_and_close(connection: Connection) -> None:
    """What `Consumer.on_connection_error_after_connected` does with the broken connection."""
    connection.collect(socket_timeout=COLLECT_SOCKET_TIMEOUT)
    ignore_errors(connection, connection.close)


def test_it_closes_a_connection_whose_redis_died_with_a_message_unacknowledged(broker):
    transport = app.conf.broker_transport
    assert transport == "config.broker:Transport"  # the configured transport is the guarded one
    connection, message = connection_after_redis_died(broker, transport)
    collect_and_close(connection)  # raises AttributeError without the guard
    # The task that was running finishes after the worker reconnected: its ack goes to the
    # old channel and fails as a connection error, which the worker logs and survives.
    with pytest.raises(connection.connection_errors):
        message.ack()


def test_it_still_needs_the_guard_with_the_pinned_kombu(broker):
    """kombu's own transport still crashes here. When an upgrade fixes it, this fails: the
    guard in config/broker.py can then go (tests/e2e/test_broker_restart.py stays)."""
    connection, _ = connection_after_redis_died(broker, "redis")
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'hostname'"):
        collect_and_close(connection)
