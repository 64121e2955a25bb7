"""Understands a backlog's mail ahead of the apply step, in a helper process, in arrival order."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import multiprocessing.connection
import math
import os
import resource
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
# Each mail's budget in the helper: CPU seconds (RLIMIT_CPU, the kernel ends the helper past it)
# and the helper's address space (RLIMIT_AS: an allocation past it fails). A mail that breaks
# either is set aside with the reason, the helper is started again and the poll goes on.
MAIL_CPU_SECONDS = 30
HELPER_MEMORY_BYTES = 2 << 30
# How long this process waits for the helper's answer, for one chunk or one mail: a reading that
# blocks without using CPU (a stalled read, a lock) never reaches the CPU limit. Past it the
# helper is killed and started again, and the mail is set aside like one over its CPU budget.
# Twice the CPU budget: a mail within its CPU budget on a busy machine is not cut short.
MAIL_WALL_SECONDS = 60
# A helper that has not answered its first call by then is taken as unable to start.
HELPER_START_SECONDS = 60
# Every mail is read in the helper, however few: in this process a hostile mail would stall the
# poll (no time limit can stop a regular expression in the same process).
GUARDED = True


def over_budget_reason(cpu_seconds: int, memory_bytes: int) -> str:
    return (f"Bericht overschrijdt het budget voor één mail (meer dan {cpu_seconds} s rekentijd of "
            f"{memory_bytes / (1 << 30):.1f} GB geheugen): niet gelezen, de ruwe mail is bewaard")


def over_time_reason(wall_seconds: float) -> str:
    return (f"Bericht overschrijdt het budget voor één mail (na {wall_seconds:g} s nog niet gelezen): "
            "niet gelezen, de ruwe mail is bewaard")


@dataclass(frozen=True)
class Unreadable:
    """understand() raised in the helper: the error, as the apply step would have recorded it."""

    error: str


_options: Options | None = None
_cpu_seconds: int | None = None
_memory_bytes: int | None = None


def _start_helper(options: Options, log_level: int, log_format: str,
                  cpu_seconds: int | None = None, memory_bytes: int | None = None) -> None:
    global _options, _cpu_seconds, _memory_bytes
    _options, _cpu_seconds, _memory_bytes = options, cpu_seconds, memory_bytes
    if memory_bytes:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes if hard == resource.RLIM_INFINITY
                                                 else min(memory_bytes, hard), hard))
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
    readings = []
    for raw in raws:
        if _cpu_seconds:
            # The limit is on the process's total CPU time: moved up before each mail, it is
            # this mail's budget. SIGXCPU's default action ends the helper, even inside a regex.
            usage = resource.getrusage(resource.RUSAGE_SELF)
            _, hard = resource.getrlimit(resource.RLIMIT_CPU)
            soft = math.ceil(usage.ru_utime + usage.ru_stime) + _cpu_seconds
            if hard == resource.RLIM_INFINITY or soft <= hard:
                resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
        readings.append(read_one(raw, _options))
    return readings


def read_one(raw: bytes, options: Options) -> Reading | Unreadable:
    try:
        return understand(raw, options)
    except MemoryError:
        return Unreadable(over_budget_reason(_cpu_seconds or MAIL_CPU_SECONDS,
                                             _memory_bytes or HELPER_MEMORY_BYTES))
    except Exception as exc:
        return Unreadable("".join(traceback.format_exception_only(exc)).strip())


class Reader:
    """`readings(ids)` yields (id, reading) in the order given. With a helper, chunks are
    understood there while this process applies the ones before; a chunk the helper has not
    started yet when its turn comes is read here instead (so the helper's start-up costs
    nothing), and a helper that dies leaves the rest to this process."""

    def __init__(self, options: Options, raw_of: Callable[[int], bytes], *, helper: bool,
                 guarded: bool = False):
        self.options, self.raw_of = options, raw_of
        self.pool: cf.ProcessPoolExecutor | None = None
        self.by_helper = 0
        # Guarded: every mail is read in the helper under its budget, never here.
        self.guarded = guarded
        self.budget = (MAIL_CPU_SECONDS, HELPER_MEMORY_BYTES)
        if helper:
            self._start(starting=True)

    def _start(self, starting: bool = False) -> None:
        try:
            # spawn, not fork: the worker has threads (scheduler, IDLE), and a forked copy
            # of a held lock would hang the helper.
            self.pool = cf.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_helper,
                initargs=(self.options, *logs.current(), *(self.budget if self.guarded else (None, None))))
            # Work goes to the helper once it answers; until then this process reads. The
            # process is started here, so this is where it fails (no memory, no pipes…).
            self.warm = self.pool.submit(_ready)
            if self.guarded:
                self.warm.result(timeout=HELPER_START_SECONDS)
        except Exception as exc:
            self._lost(exc, starting=starting)

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
            if not self.guarded:  # guarded: _result reads it mail by mail in a new helper
                self._lost(exc)
            return None

    def _result(self, future: cf.Future | None, raws: list[bytes]) -> list[Reading | Unreadable]:
        if future is not None and not future.cancel():
            # Running (or done) in the helper: waiting for it beats reading it a second time.
            try:
                readings = future.result(timeout=MAIL_WALL_SECONDS)
                self.by_helper += len(readings)
                return readings
            except cf.BrokenExecutor as exc:
                if self.guarded:
                    return self._one_by_one(raws)
                self._lost(exc)
            except cf.TimeoutError as exc:
                # One of these mails blocks the helper: it is killed (nothing else stops it), and
                # the chunk is read again mail by mail to find the one.
                log.error("the helper process gave no answer for %s s; killed", MAIL_WALL_SECONDS)
                self._kill()
                if self.guarded:
                    return self._one_by_one(raws)
                self._lost(exc)
        elif self.guarded and self.pool is not None:
            return self._one_by_one(raws)
        # Not started yet (or the helper is gone): cheaper to read it here than to wait.
        return [read_one(raw, self.options) for raw in raws]

    def _one_by_one(self, raws: list[bytes]) -> list[Reading | Unreadable]:
        """The helper died on this chunk (over a budget): each mail again in a fresh helper,
        alone, so that only the one that kills it again is set aside."""
        readings: list[Reading | Unreadable] = []
        for raw in raws:
            if self.pool is not None and getattr(self.pool, "_broken", False):
                self.pool.shutdown(wait=False, cancel_futures=True)
                self.pool = None
            if self.pool is None:
                self._start()
                if self.pool is None:  # cannot start one: read here, as without a helper
                    readings.append(read_one(raw, self.options))
                    continue
            try:
                readings.append(self.pool.submit(_read_chunk, [raw]).result(
                    timeout=MAIL_WALL_SECONDS)[0])
                self.by_helper += 1
            except cf.BrokenExecutor:
                log.error("a mail went over its budget in the helper process; set aside, "
                          "helper restarted")
                readings.append(Unreadable(over_budget_reason(*self.budget)))
            except cf.TimeoutError:
                log.error("a mail gave no answer in %s s in the helper process; set aside, "
                          "helper restarted", MAIL_WALL_SECONDS)
                readings.append(Unreadable(over_time_reason(MAIL_WALL_SECONDS)))
                # Started again at once, so that the chunks after this one are read guarded too.
                self._kill()
                self._start()
        return readings

    def _kill(self) -> None:
        """End the helper now, whatever it is doing (shutdown alone would wait for the mail it
        is stuck on). The executor offers no kill before Python 3.14: its processes are ended
        one by one."""
        pool, self.pool = self.pool, None
        if pool is None:
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for process in processes:
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.join(5)

    def _lost(self, exc: Exception, starting: bool = False) -> None:
        if self.pool is None and not starting:
            return  # already noticed
        log.warning("the helper process for reading mail %s (%s: %s): reading the rest here",
                    "could not start" if starting else "stopped", type(exc).__name__, exc)
        # Killed, not just shut down: a helper that did not answer in time may still be stuck.
        self._kill()
