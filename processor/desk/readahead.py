"""Understands a backlog's mail ahead of the apply step, in a helper process, in arrival order."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from processor import logs
from processor.understand import understand
from processor.understand.model import Options, Reading

log = logging.getLogger(__name__)

# A helper process takes about half a second to start: below this many waiting mails, the apply
# step understands each mail itself, as it always did (a few mails a poll: no helper at all).
MIN_BACKLOG = 200
# Mails per round trip to the helper, and how far it may run ahead: bounded by bytes too, so a
# backlog of large mails is never held in memory whole.
CHUNK_MAILS = 25
CHUNK_BYTES = 1 << 20
AHEAD_CHUNKS = 4


@dataclass(frozen=True)
class Unreadable:
    """understand() raised in the helper: the error, as the apply step would have recorded it."""

    error: str


_options: Options | None = None


def _start_helper(options: Options, log_level: int, log_format: str) -> None:
    global _options
    _options = options
    # What the helper logs (a mail the parser chokes on) reads like the worker's own log.
    logs.setup(log_level, log_format)
    # Ctrl-C in a terminal reaches the whole process group: the worker stops after the current
    # mail and shuts the helper down itself; the helper must not die first with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker killed outright (SIGKILL, OOM) cannot shut its helper down, and the helper holds
    # its own end of the task queue, so it would wait for work forever: it watches the worker.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True,
                         name="watch-worker").start()


def _exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(0)


def _ready() -> bool:
    return True


def _read_chunk(raws: list[bytes]) -> list[Reading | Unreadable]:
    return [read_one(raw, _options) for raw in raws]


def read_one(raw: bytes, options: Options) -> Reading | Unreadable:
    try:
        return understand(raw, options)
    except Exception as exc:
        return Unreadable("".join(traceback.format_exception_only(exc)).strip())


class Reader:
    """`readings(ids)` yields (id, reading) in the order given. With a helper, chunks are
    understood there while this process applies the ones before; a chunk the helper has not
    started yet when its turn comes is read here instead (so the helper's start-up costs
    nothing), and a helper that dies leaves the rest to this process."""

    def __init__(self, options: Options, raw_of: Callable[[int], bytes], *, helper: bool):
        self.options, self.raw_of = options, raw_of
        self.pool: cf.ProcessPoolExecutor | None = None
        self.by_helper = 0
        if helper:
            try:
                # spawn, not fork: the worker has threads (scheduler, IDLE), and a forked copy
                # of a held lock would hang the helper.
                self.pool = cf.ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_helper, initargs=(options, *logs.current()))
                # Work goes to the helper once it answers; until then this process reads. The
                # process is started here, so this is where it fails (no memory, no pipes…).
                self.warm = self.pool.submit(_ready)
            except Exception as exc:
                self._lost(exc, starting=True)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def readings(self, ids: Iterable[int]) -> Iterator[tuple[int, Reading | Unreadable | None]]:
        """None as the reading means: understand it yourself (no helper for this poll)."""
        if self.pool is None:
            for message_id in ids:
                yield message_id, None
            return
        chunks = self._chunks(ids)
        ahead: deque[tuple[list[int], list[bytes], cf.Future | None]] = deque()
        while True:
            if self._helping():
                while (self.pool is not None and len(ahead) < AHEAD_CHUNKS
                       and (chunk := next(chunks, None)) is not None):
                    ahead.append((*chunk, self._submit(chunk[1])))
            if ahead:
                chunk_ids, raws, future = ahead.popleft()
                yield from zip(chunk_ids, self._result(future, raws))
                continue
            chunk = next(chunks, None)
            if chunk is None:
                return
            # The helper is still starting, or gone: this chunk is read here meanwhile.
            yield from zip(chunk[0], [read_one(raw, self.options) for raw in chunk[1]])

    def _helping(self) -> bool:
        if self.pool is None or not self.warm.done():
            return False
        if self.warm.exception() is not None:
            self._lost(self.warm.exception())
            return False
        return True

    def _chunks(self, ids: Iterable[int]) -> Iterator[tuple[list[int], list[bytes]]]:
        chunk_ids: list[int] = []
        raws: list[bytes] = []
        size = 0
        for message_id in ids:
            raw = self.raw_of(message_id)
            chunk_ids.append(message_id)
            raws.append(raw)
            size += len(raw)
            if len(chunk_ids) >= CHUNK_MAILS or size >= CHUNK_BYTES:
                yield chunk_ids, raws
                chunk_ids, raws, size = [], [], 0
        if chunk_ids:
            yield chunk_ids, raws

    def _submit(self, raws: list[bytes]) -> cf.Future | None:
        if self.pool is None:  # lost while filling the read-ahead
            return None
        try:
            return self.pool.submit(_read_chunk, raws)
        except (cf.BrokenExecutor, RuntimeError) as exc:
            self._lost(exc)
            return None

    def _result(self, future: cf.Future | None, raws: list[bytes]) -> list[Reading | Unreadable]:
        if future is not None and not future.cancel():
            # Running (or done) in the helper: waiting for it beats reading it a second time.
            try:
                readings = future.result()
                self.by_helper += len(readings)
                return readings
            except cf.BrokenExecutor as exc:
                self._lost(exc)
        # Not started yet (or the helper is gone): cheaper to read it here than to wait.
        return [read_one(raw, self.options) for raw in raws]

    def _lost(self, exc: Exception, starting: bool = False) -> None:
        if self.pool is None and not starting:
            return  # already noticed
        log.warning("the helper process for reading mail %s (%s: %s): reading the rest here",
                    "could not start" if starting else "stopped", type(exc).__name__, exc)
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
