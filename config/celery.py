"""The Celery application: `celery -A config worker` and `celery -A config beat`."""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("roundtrip")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def check_delivery_invariants(sender: object = None, **kwargs: object) -> None:
    """Refuse to start a worker whose settings could lose or repeat deliveries."""
    from postbacks.checks import worker_startup_check

    worker_startup_check(app)
