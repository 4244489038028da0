"""The server's generations, batched: one loop thread feeds the C++ ContinuousBatch (one forward pass per decode
step for every running generation, a KV-cache row each) and hands each step's tokens to their requests.

    batcher = Batcher(engine, slots=8, queue_size=64)
    ticket = batcher.submit(ids, Sampling(max_tokens=32), chat=True, deliver=callback)  # 400 / 429 here
    ... callback((token_ids, ended, stopped)), or callback(exception), from the loop thread (or, given an
    asyncio `loop`, on that loop: one wake-up per step for all of its requests) ...
    ticket.cancel()  # the client went away, a stop string matched: its slot is free at once

At most `slots` generations run at once; up to `queue_size` more wait for a slot in arrival order; beyond that a
request gets 429 with Retry-After. Requests join between decode steps (their prompt is prefilled in the step
they join), so a long generation never holds a short one back.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable

import numpy as np

from nanowhale import _C
from nanowhale.serve.engine import Engine, RequestError, Sampling

RETRY_AFTER_SECONDS = 1


class Ticket:
    """One submitted generation: waiting for a slot (id None), then running, then done."""

    def __init__(self, batcher: Batcher, prompt: np.ndarray, max_new: int, s: Sampling, stops: list[int],
                 deliver: Callable, loop: asyncio.AbstractEventLoop | None):
        self.batcher, self.prompt, self.max_new, self.sampling, self.stops = batcher, prompt, max_new, s, stops
        self.deliver, self.loop = deliver, loop
        self.id: int | None = None
        self.done = False

    def cancel(self) -> None:
        """Ends the generation (idempotent); nothing more is delivered."""
        self.batcher._cancel(self)


class Batcher:
    def __init__(self, engine: Engine, slots: int = 8, queue_size: int = 64):
        if slots < 1 or queue_size < 0:
            raise ValueError(f"slots must be >= 1 and the queue size >= 0, got {slots} and {queue_size}")
        self.engine, self.slots, self.queue_size = engine, slots, queue_size
        self.batch = _C.ContinuousBatch(engine.model, slots)
        self.lock = threading.Condition()
        self.waiting: collections.deque[Ticket] = collections.deque()
        self.running: dict[int, Ticket] = {}
        self.thread: threading.Thread | None = None

    def submit(self, ids: list[int], s: Sampling, chat: bool, deliver: Callable,
               loop: asyncio.AbstractEventLoop | None = None) -> Ticket:
        """Queues a generation of `ids`; RequestError (400) for a bad request, (429) when the queue is full.
        deliver runs on `loop` when one is given, else on the batcher's thread."""
        max_new = self.engine.prepare(ids, s)
        ticket = Ticket(self, np.asarray(ids, dtype=np.int32), max_new, s, self.engine.stop_tokens(s, chat), deliver,
                        loop)
        with self.lock:
            if len(self.waiting) + len(self.running) >= self.slots + self.queue_size:
                raise RequestError(f"{self.slots} generations are running and {len(self.waiting)} are waiting on "
                                   f"this server; retry shortly", status=429, code="rate_limit_exceeded",
                                   type="rate_limit_error", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
            self.waiting.append(ticket)
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
                self.thread.start()
            self.lock.notify()
        return ticket

    @property
    def pending(self) -> int:
        """Generations waiting or running."""
        with self.lock:
            return len(self.waiting) + len(self.running)

    def step(self):
        """One step of the batch: (ids, tokens, finished, stopped) arrays, one entry per running generation."""
        return self.batch.step()

    def _cancel(self, ticket: Ticket) -> None:
        with self.lock:
            if ticket.done:
                return
            ticket.done = True
            if ticket.id is None:
                self.waiting.remove(ticket)
            else:
                del self.running[ticket.id]
                self.batch.cancel(ticket.id)

    def _admit(self) -> None:
        """Moves waiting generations into free slots (under the lock)."""
        while self.waiting and len(self.running) < self.slots:
            t = self.waiting.popleft()
            s = t.sampling
            try:
                t.id = self.batch.add(t.prompt, t.max_new, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                      seed=s.seed % 2**64, stop_tokens=t.stops)
            except ValueError as e:  # prepare() checked the request: a bug, reported to its client
                t.done = True
                _deliver_all([(t, e)])
                continue
            self.running[t.id] = t

    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.waiting and not self.running:
                    self.lock.wait()
                self._admit()
            try:
                ids, tokens, finished, stopped = self.step()
            except Exception as e:  # noqa: BLE001  (a bug: every running generation reports it, the loop goes on)
                with self.lock:
                    for t in self.running.values():
                        t.done = True
                        self.batch.cancel(t.id)
                    _deliver_all([(t, e) for t in self.running.values()])
                    self.running.clear()
                continue
            with self.lock:
                out = []
                for gid, token, end, stop in zip(ids.tolist(), tokens.tolist(), finished.tolist(), stopped.tolist()):
                    t = self.running.get(gid)
                    if t is None:  # cancelled during the step
                        continue
                    if end:
                        t.done = True
                        del self.running[gid]
                    out.append((t, ([token], end, stop)))
                _deliver_all(out)


def _deliver_all(items: list[tuple[Ticket, object]]) -> None:
    """Hands out (ticket, item) pairs: directly, or with one call per event loop for the tickets that have one."""
    by_loop: dict = {}
    for t, item in items:
        by_loop.setdefault(t.loop, []).append((t.deliver, item))
    for loop, calls in by_loop.items():
        if loop is None:
            _call_all(calls)
        else:
            loop.call_soon_threadsafe(_call_all, calls)


def _call_all(calls) -> None:
    for deliver, item in calls:
        deliver(item)


__all__ = ["Batcher", "Ticket"]
