"""What a consumer does with a message it cannot handle: retry it, or dead-letter it.

Every failure is one of two kinds, decided by ``is_transient`` alone:

* **transient**: the world is not ready yet and the same message will succeed
  later — the database or the broker unreachable, a lost connection, a
  timeout, a serialization failure or deadlock, a provider that asked us to
  come back (``TransientProviderError``). The runner retries the message with
  backoff for as long as it takes; its offset is not stored meanwhile.
* **everything else** is permanent: the message itself is at fault — it does
  not decode into its topic's event type, or handling it broke a contract (a
  number out of PostgreSQL's range, a datetime it cannot store, a missing row,
  a domain error). Retrying cannot help and would stop the consumer for good,
  so the message goes to ``dead-letters.v1`` and the consumer moves on.

A dead letter keeps the original key, value and headers and adds the headers
below; ``campaign_dead_letters_total{group, reason}`` counts them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import asyncpg
import confluent_kafka
import sqlalchemy.exc

from schemas.events import TOPIC_DEAD_LETTERS
from service import metrics
from service.errors import KafkaUnavailable, ServiceError, TransientProviderError
from service.kafka import Headers, Producer

log = logging.getLogger(__name__)

# The reason classes (the metric's ``reason`` label and the ``dead-letter.reason`` header).
UNDECODABLE = "undecodable"  # not an event of the topic's type
INVALID_VALUE = "invalid_value"  # a value PostgreSQL or Python cannot hold
CONSTRAINT = "constraint"  # a unique, foreign-key or check constraint refused a row
MISSING_ROW = "missing_row"  # a row the event names does not exist
DOMAIN_ERROR = "domain_error"  # one of our own errors (``service.errors``)
UNEXPECTED = "unexpected"  # anything else: a bug, to be read in the log

# SQLSTATE classes that say "try again": connection exception, transaction rollback
# (serialization failure, deadlock), insufficient resources, operator intervention
# (shutdown, statement timeout), system error.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_ERROR_TEXT_LIMIT = 1000


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps: SQLAlchemy's ``orig``, then each ``__cause__``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException) and id(orig) not in seen:
            yield from _chain(orig)
        current = current.__cause__


def is_transient(exc: BaseException) -> bool:
    """True when the same message may succeed later (see the module docstring)."""
    for error in _chain(exc):
        if isinstance(
            error,
            TransientProviderError
            | KafkaUnavailable
            | OSError  # ConnectionError, TimeoutError (asyncio's too), socket errors
            | sqlalchemy.exc.OperationalError
            | sqlalchemy.exc.DisconnectionError
            | sqlalchemy.exc.TimeoutError  # no connection free in the pool
            | asyncpg.PostgresConnectionError,
        ):
            return True
        if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
            return True
        # asyncpg's own interface errors are about the connection ("connection is
        # closed", "another operation is in progress"), except bad query input.
        if isinstance(error, asyncpg.InterfaceError) and not isinstance(error, asyncpg.DataError):
            return True
        sqlstate = getattr(error, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES:
            return True
    return False


def reason_of(exc: BaseException) -> str:
    """The reason class of a permanent failure, one of a fixed few (a metric label)."""
    for error in _chain(exc):
        if isinstance(error, sqlalchemy.exc.NoResultFound):
            return MISSING_ROW
        if isinstance(
            error, sqlalchemy.exc.IntegrityError | asyncpg.IntegrityConstraintViolationError
        ):
            return CONSTRAINT
        if isinstance(
            error,
            sqlalchemy.exc.DataError | asyncpg.DataError | ArithmeticError | ValueError,
        ):
            return INVALID_VALUE
        sqlstate = getattr(error, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith("22"):  # data exception
            return INVALID_VALUE
        if isinstance(error, ServiceError):
            return DOMAIN_ERROR
    return UNEXPECTED


class DeadLetters:
    """Sends the messages a consumer group gives up on to ``dead-letters.v1``."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer

    async def send(
        self, message: confluent_kafka.Message, group: str, reason: str, error: BaseException
    ) -> None:
        """Dead-letter ``message``; returns once the broker has it (raises if it cannot)."""
        text = f"{type(error).__name__}: {error}"[:_ERROR_TEXT_LIMIT]
        headers: Headers = [(str(h[0]), h[1]) for h in message.headers() or []]
        headers += [
            ("dead-letter.reason", reason.encode()),
            ("dead-letter.error", text.encode()),
            ("dead-letter.group", group.encode()),
            ("dead-letter.topic", (message.topic() or "").encode()),
            ("dead-letter.partition", str(message.partition()).encode()),
            ("dead-letter.offset", str(message.offset()).encode()),
        ]
        await self._producer.send_one(TOPIC_DEAD_LETTERS, message.key(), message.value(), headers)
        metrics.DEAD_LETTERS.labels(group, reason).inc()
        log.error(
            "consumer %s: dead-lettered %s[%s]@%s (%s): %s",
            group,
            message.topic(),
            message.partition(),
            message.offset(),
            reason,
            text,
            # A bug's traceback is what tells it apart; the other reasons say it all.
            exc_info=error if reason == UNEXPECTED else None,
        )
