"""The Celery broker transport for Redis: kombu's, with one guard that keeps the worker alive
when Redis dies under it (settings: `CELERY_BROKER_TRANSPORT`).

The crash it prevents (celery 5.7.0, kombu 5.7.0, redis-py 8.1.0): Redis goes away while the
worker's channel waits in BRPOP and holds unacknowledged (acks_late) messages.

1. The consumer's connection-error handler calls `Connection.collect()`. It closes the default
   channel, whose first step, reading the pending BRPOP, raises a connection error; kombu
   ignores it, so the channel stays half-closed. Closing the remote-control channel fails the
   same way, and the transport's other channels are not closed at all.
2. `collect()` then detaches the transport (`transport.client = None`) but keeps its reference
   to the half-closed default channel.
3. celery 5.7 (celery#10242; 5.6.3 does not do this) then calls `Connection.close()` as well,
   which closes that channel again. The close goes on to restore the unacknowledged messages
   through a new connection pool, whose parameters come from `transport.client`:
   `AttributeError: 'NoneType' object has no attribute 'hostname'`. That is not a connection
   error, so the worker stops with "Unrecoverable error".
4. The same happens when a task that was running during the crash finishes after the worker
   reconnected: its late ack goes to the old, closed channel, which has no pool and no
   transport any more (`'NoneType' object has no attribute 'client'`).

The guard: a channel whose transport is gone answers a request for a new Redis connection
with a connection error instead of an AttributeError. Connection errors are what kombu and
Celery expect there: the clean-up ignores them, a late ack is logged ("Couldn't ack") and the
worker goes on reconnecting. Nothing is lost by it: the unacknowledged messages stay in Redis's
unacked set (when Redis kept them) and kombu restores them after the visibility timeout, and
the postbacks they were about wait in the database, where the beat sweeper sends them again.
The same family of `NoneType` errors on a closed transport upstream: kombu#582, kombu#970.
tests/chaos/test_broker_transport.py replays the clean-up step by step (and fails once kombu
no longer needs the guard); tests/e2e/test_broker_restart.py crashes Redis under load.
"""

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is None or transport.client is None:
            raise RedisConnectionError("This broker channel's connection is closed.")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
