"""The Celery application: `celery -A config worker` and `celery -A config beat`."""

import functools
import os

from celery import Celery, bootsteps
from celery.signals import worker_init
from celery.worker.consumer import Consumer as CeleryConsumer
from django.conf import settings
from django.core import checks
from kombu import Connection

from config.liveness import beat_stamp, worker_stamp, worker_unstamp
from postbacks.checks import system_check_messages, worker_startup_check

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("roundtrip")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def check_delivery_invariants(sender: object = None, **kwargs: object) -> None:
    """Refuse to start a worker whose settings could lose or repeat deliveries."""
    worker_startup_check(app)


@checks.register(checks.Tags.compatibility)
def check_delivery_settings(
    app_configs: object = None, **kwargs: object
) -> list[checks.CheckMessage]:
    """The same rules as a Django system check (`manage.py check`, `migrate`, runserver)."""
    return system_check_messages(app)


class Consumer(CeleryConsumer):
    """Celery's worker consumer (settings: `CELERY_WORKER_CONSUMER`), reconnecting to a lost
    broker every `BROKER_RECONNECT_SECONDS` at most.

    Celery has no setting for the pauses between reconnection attempts: it backs off by 2 s
    more each time, up to 30 s, so a worker went back to consuming up to 30 s after a Redis
    that had been down for a minute came back. A failed attempt against a Redis that is down
    costs one refused TCP connection."""

    def ensure_connected(self, conn: Connection) -> Connection:
        interval = settings.BROKER_RECONNECT_SECONDS
        conn.ensure_connection = functools.partial(
            conn.ensure_connection,
            interval_start=min(1.0, interval),
            interval_step=interval,
            interval_max=interval,
        )
        return super().ensure_connected(conn)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Stamps this worker in Redis while its consumer is connected (config/liveness.py).

    A consumer step: Celery starts it once the broker connection is up and its queues are
    consumed, stops it when the connection is lost, and starts it again on reconnection."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: object, **kwargs: object) -> None:
        self.timer_entry = None

    def start(self, c) -> None:  # c: the Celery consumer
        worker_stamp(c.hostname)
        self.timer_entry = c.timer.call_repeatedly(
            settings.WORKER_HEARTBEAT_SECONDS, worker_stamp, (c.hostname,)
        )

    def stop(self, c) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    def shutdown(self, c) -> None:
        self.stop(c)
        worker_unstamp(c.hostname)


app.steps["consumer"].add(WorkerHeartbeat)


@app.task(name="config.celery.beat_heartbeat", ignore_result=True, time_limit=30)
def beat_heartbeat() -> None:
    """Sent by beat every BEAT_HEARTBEAT_SECONDS: the age of its stamp is the age of the last
    periodic work that went through (config/liveness.py)."""
    beat_stamp()
