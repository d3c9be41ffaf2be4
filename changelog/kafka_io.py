"""KafkaIO: the synchronous face of aiokafka that KafkaLog uses, run on a private event loop thread.

One producer (idempotent, acks=all, compressed), an admin client for topics, a consumer per read and
one long-lived consumer for end offsets and the state topic's tail; every call blocks its caller
until the loop answered. Security settings go to every client as given and never into a message.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
)
from aiokafka.helpers import create_ssl_context

from pgcarry.errors import ChangeTooLargeError, LogError, LogUnavailableError

T = TypeVar("T")
Headers = list[tuple[str, bytes]]
Record = tuple[bytes | None, bytes, Headers]  # key, value, headers

MAX_RECORD_BYTES = 64 << 20  # a wal2json change with large TOASTed values fits
TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)
BATCH_BYTES = 4 << 20  # one produce request carries up to this much (one in flight per partition)
FETCH_RECORDS = 2000
CLOSE_TIMEOUT = 15.0
READ_STALL = 60.0  # seconds without progress before a read gives up
SEND_QUEUE = 4  # record lists (~1 MiB each) waiting for the producer
ANSWER_WAIT = 10.0  # seconds an end offset or the state topic's tail may take (else: unavailable)
_SSL_KEYS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password")


def client_options(bootstrap: str, security: dict[str, Any]) -> dict[str, Any]:
    """aiokafka keyword arguments: kebab- or snake-case keys; ssl_* files become an SSL context."""
    opts = {k.replace("-", "_"): v for k, v in security.items()}
    ssl = {k.removeprefix("ssl_"): opts.pop(k) for k in _SSL_KEYS if k in opts}
    if ssl:
        ssl["password"] = ssl.get("password")
        opts["ssl_context"] = create_ssl_context(**ssl)
    return {"bootstrap_servers": bootstrap, **opts}


class KafkaIO:
    def __init__(self, bootstrap: str, security: dict[str, Any], compression: str = "zstd") -> None:
        self.bootstrap = bootstrap
        self._opts = client_options(bootstrap, security)
        self._compression = None if compression == "none" else compression
        self.max_record = MAX_RECORD_BYTES  # the producer's limit; KafkaLog sets the topic's
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pgcarry-kafka", daemon=True)
        self._thread.start()
        self._producer: AIOKafkaProducer | None = None
        self._queue: asyncio.Queue[tuple[str, list[Record], list[str | None]]] | None = None
        self._slots = threading.Semaphore(SEND_QUEUE)  # sends handed over, not yet batched
        self._sender_task: asyncio.Task[None] | None = None
        self._tail: AIOKafkaConsumer | None = None
        self._admin_client: AIOKafkaAdminClient | None = None
        self._producer_lock = asyncio.Lock()
        self._handed_over = False  # send() was called: flush() has something to wait for
        self._tail_at: dict[str, int] = {}
        self.error: BaseException | None = None  # the first failed delivery: the writer is broken
        self.error_label: str | None = None  # what the failed batch held (relation, LSN)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            if timeout is None:  # a time limit of the coroutine's own: its caller says what it was
                raise
            fut.cancel()
            raise LogUnavailableError(f"kafka did not answer in {timeout:.0f}s", bootstrap=self.bootstrap) from None
        except (KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError) as e:
            raise LogUnavailableError(f"kafka unreachable: {type(e).__name__}", bootstrap=self.bootstrap) from None
        except KafkaError as e:
            raise LogError(f"kafka: {type(e).__name__}: {e}", bootstrap=self.bootstrap) from None

    # -- topics --------------------------------------------------------------------------------
    async def _admin(self) -> AIOKafkaAdminClient:
        """One admin client for the life of this KafkaIO (opening a log asks it several things)."""
        if self._admin_client is None:
            admin = AIOKafkaAdminClient(**self._opts)
            await admin.start()
            self._admin_client = admin
        return self._admin_client

    def topics(self) -> set[str]:
        async def go() -> set[str]:
            return set(await (await self._admin()).list_topics())

        return self.run(go())

    def create_topic(self, name: str, replication: int, configs: dict[str, str]) -> None:
        async def go() -> None:
            try:
                await (await self._admin()).create_topics([NewTopic(name, 1, replication, topic_configs=configs)])
            except TopicAlreadyExistsError:
                pass

        self.run(go())

    def describe(self, name: str) -> tuple[int, dict[str, str]]:
        """(the replication factor of partition 0, the topic's effective configs) from the broker."""

        async def go() -> tuple[int, dict[str, str]]:
            admin = await self._admin()
            for _ in range(50):  # a topic created a moment ago may not be described yet
                (resp,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
                (meta,) = await admin.describe_topics([name])
                (res,) = resp.to_object()["resources"]
                part = [p for p in meta["partitions"] if p["partition"] == 0]
                replicas = len(part[0]["replicas"]) if part else 0
                conf = {e["config_names"]: e["config_value"] for e in res["config_entries"]}
                if replicas and conf:
                    break
                await asyncio.sleep(0.2)
            return replicas, conf

        return self.run(go())

    # -- producing -----------------------------------------------------------------------------
    def _on_delivery(self, label: str | None, fut: asyncio.Future[Any]) -> None:
        if self.error is None and not fut.cancelled() and fut.exception() is not None:
            self.error, self.error_label = fut.exception(), label

    async def _started_producer(self) -> AIOKafkaProducer:
        async with self._producer_lock:  # the sender task and a state write may both ask first
            return await self._start_producer()

    async def _start_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                **self._opts, acks="all", enable_idempotence=True, linger_ms=0,  # batched by us
                max_batch_size=min(BATCH_BYTES, self.max_record), max_request_size=self.max_record + (64 << 10),
                compression_type=self._compression,
            )
            await self._producer.start()
        return self._producer

    def send(self, topic: str, records: list[Record], labels: list[str | None] | None = None) -> None:
        """Hand records to the producer as batches, in order, without waiting for them: the loop
        batches (and compresses) them while the caller reads on. At most SEND_QUEUE sends wait
        there; the next one blocks until one was batched (bounded memory, and the producer's
        back-pressure while the broker is away). `labels` name what each record holds, for the
        error if Kafka refuses it; flush() reports it."""
        self._slots.acquire()
        self._handed_over = True
        self._loop.call_soon_threadsafe(self._enqueue, (topic, records, labels or [None] * len(records)))

    def _enqueue(self, item: tuple[str, list[Record], list[str | None]]) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._sender_task = self._loop.create_task(self._sender())
        self._queue.put_nowait(item)

    async def _sender(self) -> None:
        """The one task that batches the log's records, in the order they were handed over."""
        queue = self._queue
        assert queue is not None
        while True:
            items = [await queue.get()]
            while not queue.empty() and queue._queue[0][0] == items[0][0]:  # type: ignore[attr-defined]
                items.append(queue.get_nowait())  # what queued up meanwhile goes in the same batch
            records = [r for _, rs, _ in items for r in rs]
            labels = [x for _, _, ls in items for x in ls]
            try:
                await self._send(items[0][0], records, labels)
            except Exception as e:  # noqa: BLE001 - reported by the next flush()
                if self.error is None:
                    self.error, self.error_label = e, next((x for x in labels if x), None)
            finally:
                for _ in items:
                    self._slots.release()
                    queue.task_done()

    async def _send(self, topic: str, records: list[Record], labels: list[str | None]) -> list[Any]:
        producer = await self._started_producer()
        futures, batch, label = [], producer.create_batch(), None
        for (key, value, headers), what in zip(records, labels):
            if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                futures.append(await self._submit(topic, batch, label))
                batch, label = producer.create_batch(), None
                if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                    raise ChangeTooLargeError(f"a record of {len(value)} bytes does not fit one Kafka batch")
            label = label or what
        futures.append(await self._submit(topic, batch, label))
        return [f for f in futures if f is not None]

    async def _submit(self, topic: str, batch: Any, label: str | None) -> Any:
        """Queue one batch behind the previous one; waits (without limit) while the broker is away."""
        assert self._producer is not None
        if batch.record_count() == 0:
            return None
        while True:
            try:
                fut = await self._producer.send_batch(batch, topic, partition=0)
                break
            except KafkaTimeoutError:
                continue
        fut.add_done_callback(partial(self._on_delivery, label))
        return fut

    def flush(self, timeout: float | None = None) -> None:
        """Wait until Kafka acknowledged every record sent. The idempotent producer retries without
        limit; after `timeout` seconds this raises LogUnavailableError and the records stay queued.
        A record Kafka refused for good is a LogError (ChangeTooLargeError for its size)."""
        if self._handed_over:  # (the loop may not have queued the last send yet: ask it)

            async def all_sent() -> None:
                if self._queue is not None:
                    await self._queue.join()
                if self._producer is not None:
                    await self._producer.flush()

            async def go() -> bool:
                task = asyncio.ensure_future(all_sent())
                done, _ = await asyncio.wait([task], timeout=timeout)
                return bool(done)

            if not self.run(go()):
                raise LogUnavailableError(
                    f"kafka has not acknowledged the change log's records for {timeout:.0f}s",
                    hint="they stay queued and are sent when the broker is back; the slot holds WAL until then",
                    bootstrap=self.bootstrap,
                )
        if isinstance(self.error, LogError):
            raise self.error
        if isinstance(self.error, TOO_LARGE):
            raise ChangeTooLargeError(
                f"kafka refused a record as too large ({type(self.error).__name__}): "
                f"{self.error_label or 'a change'}",
                hint="raise the topic's max.message.bytes (and the brokers' replica.fetch.max.bytes), "
                     "then restart capture: it resumes from the slot's confirmed position")
        if self.error is not None:
            raise LogError(
                f"kafka refused a change-log record: {type(self.error).__name__}: {self.error}",
                hint="restart capture: it resumes from the slot's confirmed position, nothing is lost",
                bootstrap=self.bootstrap,
            )

    def send_and_wait(self, topic: str, record: Record, timeout: float | None = None) -> None:
        """One record, durable on return (whatever happened to other records)."""

        async def go() -> None:
            for fut in await self._send(topic, [record], [None]):
                await asyncio.wait_for(asyncio.shield(fut), timeout)

        try:
            self.run(go())
        except TimeoutError:
            raise LogUnavailableError(f"kafka did not acknowledge a state record in {timeout:.0f}s",
                                      bootstrap=self.bootstrap) from None

    # -- consuming -----------------------------------------------------------------------------
    async def _tail_consumer(self) -> AIOKafkaConsumer:
        if self._tail is None:
            # short fetch waits, and its partition paused between calls: a long-polling fetch
            # would hold up the end-offset requests queued behind it on the connection
            self._tail = AIOKafkaConsumer(
                **self._opts, enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=20,
                max_partition_fetch_bytes=MAX_RECORD_BYTES, fetch_max_bytes=MAX_RECORD_BYTES)
            await self._tail.start()
        return self._tail

    def end_offset(self, topic: str) -> int:
        async def go() -> int:
            consumer = await self._tail_consumer()
            tp = TopicPartition(topic, 0)
            return int((await consumer.end_offsets([tp]))[tp])

        return self.run(go(), ANSWER_WAIT)

    def tail(self, topic: str) -> list[Any]:
        """The records of `topic` added since the last call (all of them the first time), read by
        one long-lived consumer: the state topic is checked often and must be cheap to check."""
        tp = TopicPartition(topic, 0)

        async def go() -> list[Any]:
            consumer = await self._tail_consumer()
            if topic not in self._tail_at:
                consumer.assign([*consumer.assignment(), tp])
                consumer.pause(tp)
                consumer.seek(tp, 0)
                self._tail_at[topic] = 0
            end = int((await consumer.end_offsets([tp]))[tp])
            out: list[Any] = []
            start = self._tail_at[topic]
            if start < end:
                consumer.resume(tp)
            try:
                while self._tail_at[topic] < end:
                    got = await consumer.getmany(tp, timeout_ms=1000, max_records=FETCH_RECORDS)
                    out += [r for r in got.get(tp, []) if r.offset < end]
                    self._tail_at[topic] = max(self._tail_at[topic], await consumer.position(tp))
            except asyncio.CancelledError:  # given up (broker away): read it all again next time
                consumer.seek(tp, start)
                self._tail_at[topic] = start
                raise
            finally:
                consumer.pause(tp)
            if self._tail_at[topic] > end:  # read past `end` within a fetch: keep reading there
                consumer.seek(tp, end)
                self._tail_at[topic] = end
            return out

        return self.run(go(), ANSWER_WAIT)

    def read(self, topic: str, start: int, end: int) -> Iterator[list[Any]]:
        """Chunks of ConsumerRecords with start <= offset < end, in offset order."""
        if start >= end:
            return
        tp = TopicPartition(topic, 0)

        async def open_() -> AIOKafkaConsumer:
            c = AIOKafkaConsumer(
                **self._opts, enable_auto_commit=False, auto_offset_reset="earliest",
                max_partition_fetch_bytes=MAX_RECORD_BYTES, fetch_max_bytes=MAX_RECORD_BYTES,
            )
            await c.start()
            c.assign([tp])
            c.seek(tp, start)
            return c

        consumer = self.run(open_())

        async def fetch() -> tuple[list[Any], int]:
            got = await consumer.getmany(tp, timeout_ms=1000, max_records=FETCH_RECORDS)
            return got.get(tp, []), await consumer.position(tp)

        try:
            pos, moved = start, time.monotonic()
            while pos < end:  # by position: control records and compaction leave offset gaps
                chunk, now_at = self.run(fetch())
                if now_at > pos:
                    pos, moved = now_at, time.monotonic()
                elif time.monotonic() - moved > READ_STALL:
                    raise LogUnavailableError(
                        f"kafka sent nothing for {READ_STALL:.0f}s at offset {pos} of {topic}",
                        bootstrap=self.bootstrap)
                chunk = [r for r in chunk if r.offset < end]
                if chunk:
                    yield chunk
        finally:
            self.run(consumer.stop())

    def close(self) -> None:
        """Stop the clients; records handed over but not flushed may be dropped (never confirmed)."""
        if self._sender_task is not None:
            self._loop.call_soon_threadsafe(self._sender_task.cancel)
        for client in (self._tail, self._admin_client):
            if client is not None:
                try:
                    stop = client.stop() if isinstance(client, AIOKafkaConsumer) else client.close()
                    self.run(asyncio.wait_for(stop, CLOSE_TIMEOUT))
                except (LogError, TimeoutError):
                    pass
        self._tail = self._admin_client = None
        if self._producer is not None:
            try:
                self.run(asyncio.wait_for(self._producer.stop(), CLOSE_TIMEOUT))
            except (LogError, TimeoutError):
                pass
            self._producer = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
