"""`manage.py flush_clicks [--loop]`: copy buffered clicks into the database.

Celery beat runs the same flush every second; a dedicated `--loop` process is an alternative
for very high click rates (it flushes back to back while batches come out full).
"""

import time

from django.core.management.base import BaseCommand, CommandParser

from tracking import clickbuffer


class Command(BaseCommand):
    help = "Flush the Redis click buffer into the database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", action="store_true", help="Keep flushing until stopped.")
        parser.add_argument("--idle-sleep", type=float, default=0.2, help="Pause when empty (s).")

    def handle(self, *args, loop: bool = False, idle_sleep: float = 0.2, **options) -> None:
        if not clickbuffer.buffering_enabled():
            self.stderr.write("Click buffering is off (CLICKS_BUFFERED, REDIS_URL); nothing to do.")
            return
        while True:
            flushed = clickbuffer.clicks_flush_all()
            if not loop:
                self.stdout.write(f"Flushed {flushed} click(s).")
                return
            if not flushed:
                time.sleep(idle_sleep)
