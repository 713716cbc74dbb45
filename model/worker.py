"""The model worker: one thread owns the model, asyncio code awaits its results.

Why a thread of its own: sampling is seconds of torch work, and a chat bot's
event loop must keep answering heartbeats and other messages meanwhile.  Why
exactly one: the models share the process's (or GPU's) memory, and torch
models are not safe to drive from several threads at once.  So every request
goes through one FIFO queue into one thread, and each answer is handed back to
the asking coroutine's future with ``loop.call_soon_threadsafe``.  What the
thread drives is one sampler, or a model.pool.Pool of runs (it loads, reloads
and unloads them in this thread).

Usage::

    async with ModelWorker(load_sampler) as worker:
        result = await worker.sample(request, on_queued=lambda n: print(f"#{n}"))
        old, new = await worker.call(lambda pool: pool.reload("mybot"))   # any work on what load() returned
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, Self

from model.errors import BusyError, ModelError, ProverbotError, SamplingError

log = logging.getLogger(__name__)

_STOP = object()  # put on the queue to make the thread exit


class Generator(Protocol):
    """What the worker drives: the project's sampler, or anything shaped like it."""

    def candidates(self, request: Any) -> Any: ...


@dataclasses.dataclass(eq=False)
class _Job:
    """One request on its way through the queue, and where its answer must go."""

    request: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    call: Callable[[Any], Any] | None = None    # run call(generator) instead of sampling the request
    submitted: float = dataclasses.field(default_factory=time.monotonic)
    # Set once the caller stops waiting; a result finished after that is dropped.
    caller_gone: bool = False


class ModelWorker:
    """Serves sampling requests one at a time, FIFO, in a thread that owns the model."""

    def __init__(
        self,
        load: Callable[[], Generator],
        max_queue: int = 8,
        timeout: float = 120.0,
    ) -> None:
        """``load`` builds the generator; it runs in the worker thread so that the
        model is created (and, on a GPU, placed) by the thread that will use it."""
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._load = load
        self._max_queue = max_queue
        self._timeout = timeout
        self._jobs: queue.Queue = queue.Queue()
        # The lock guards _waiting and _running, shared by the loop and the thread.
        # _waiting holds the jobs a caller still waits for; a queued job missing
        # from it (timed out, cancelled, failed by close) is skipped by the thread.
        self._lock = threading.Lock()
        self._waiting: set[_Job] = set()
        self._running: _Job | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future | None = None  # resolved as the thread exits
        self._closed = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the thread and wait until it has loaded the model.

        A failing ``load()`` raises ModelError here, so a bot fails at start-up
        rather than on its first request."""
        if self._thread is not None:
            raise RuntimeError("ModelWorker.start() was already called")
        loop = asyncio.get_running_loop()
        loaded = loop.create_future()
        self._stopped = loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(loop, loaded), name="model-worker", daemon=True
        )
        self._thread.start()
        try:
            await loaded
        except BaseException:
            # Load failed (the thread has exited) or start was cancelled
            # (the thread exits as soon as load() returns).
            self._closed = True
            self._jobs.put(_STOP)
            raise

    async def sample(
        self,
        request: Any,
        on_queued: Callable[[int], None] | None = None,
    ) -> Any:
        """Queue ``request`` and await its result.

        Raises BusyError at once when ``max_queue`` requests already wait, and
        SamplingError when the answer takes longer than ``timeout`` seconds
        counted from now (queue wait included).  ``on_queued(position)`` is
        called, on this event loop, with the 1-based queue position when the
        request has to wait behind others, so a front end can say "you are #3"."""
        loop = asyncio.get_running_loop()
        return await self._submit(_Job(request, loop.create_future(), loop), on_queued)

    async def call(self, work: Callable[[Any], Any]) -> Any:
        """``work(generator)`` run in the worker thread, in turn with the sampling requests (and as they are: queue
        limit, timeout, errors): for what must happen where the model lives, such as a reload."""
        loop = asyncio.get_running_loop()
        return await self._submit(_Job(None, loop.create_future(), loop, call=work))

    async def _submit(self, job: _Job, on_queued: Callable[[int], None] | None = None) -> Any:
        deadline = job.loop.time() + self._timeout
        position = self._enqueue(job)
        try:
            if position and on_queued is not None:
                on_queued(position)
            async with asyncio.timeout_at(deadline):
                return await job.future
        except TimeoutError:
            raise SamplingError(
                f"Sampling took longer than {self._timeout:g} s and was abandoned."
            ) from None
        finally:
            self._forget(job)

    def queue_length(self) -> int:
        """Requests waiting for the model, not counting the one running."""
        with self._lock:
            return len(self._waiting)

    async def close(self) -> None:
        """Stop the thread: waiting requests fail at once with a clear error, the
        running one finishes and gets its result, then the thread exits.
        Calling it again (or before start) does nothing more."""
        self._closed = True
        if self._thread is None or self._stopped is None:
            return
        self._fail_waiting("The model worker shut down before this request ran; try again.")
        if not self._stopped.done():
            self._jobs.put(_STOP)
            await asyncio.shield(self._stopped)
        # _stopped is settled in the thread's last lines: wait (off the loop) until it has returned.
        await asyncio.to_thread(self._thread.join)

    # --- event-loop side helpers ---------------------------------------------

    def _enqueue(self, job: _Job) -> int:
        """Queue a job unless the queue is full; return its position (0: runs now)."""
        if self._closed or self._thread is None or not self._thread.is_alive():
            raise SamplingError("The model worker is not running (not started, or closed).")
        with self._lock:
            waiting = len(self._waiting)
            if waiting >= self._max_queue:
                raise BusyError(
                    f"The model is busy ({waiting} requests waiting); try again shortly."
                )
            behind_others = self._running is not None or waiting > 0
            self._waiting.add(job)
            self._jobs.put(job)
            return waiting + 1 if behind_others else 0

    def _forget(self, job: _Job) -> None:
        """The caller stopped waiting (answered, timed out or cancelled): a job
        still in the queue is taken out of _waiting so the thread skips it."""
        job.caller_gone = True
        with self._lock:
            self._waiting.discard(job)

    def _fail_waiting(self, message: str) -> None:
        """Answer every waiting job with SamplingError(message); callable from either side."""
        with self._lock:
            jobs, self._waiting = self._waiting, set()
        for job in jobs:
            _settle(job.loop, job.future, error=SamplingError(message))

    # --- worker-thread side --------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop, loaded: asyncio.Future) -> None:
        """Thread body: load the model, then serve jobs until _STOP."""
        try:
            try:
                generator = self._load()
            except BaseException as exc:
                if not isinstance(exc, ProverbotError):  # one is already the line to show: no traceback
                    log.exception("Loading the model failed")
                _settle(loop, loaded, error=_load_error(exc))
                return
            _settle(loop, loaded, result=None)
            self._serve_forever(generator)
        finally:
            # Whatever ended the thread, nobody may be left waiting on it.
            self._fail_waiting("The model worker stopped before this request ran; try again.")
            _settle(loop, self._stopped, result=None)

    def _serve_forever(self, generator: Generator) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            if self._claim(job):
                self._serve(generator, job)

    def _claim(self, job: _Job) -> bool:
        """Move a job from waiting to running; False if its caller already gave up."""
        with self._lock:
            if job not in self._waiting:
                return False
            self._waiting.remove(job)
            self._running = job
            return True

    def _serve(self, generator: Generator, job: _Job) -> None:
        """Run one job and hand its result or error to the caller's loop."""
        started = time.monotonic()
        result, error = None, None
        try:
            result = job.call(generator) if job.call else self._candidates(generator, job.request)
        except ProverbotError as exc:  # already written for the person who asked
            error = exc
        except Exception as exc:
            log.exception("Sampling failed")
            error = SamplingError(f"Sampling failed: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._running = None
        dropped = job.caller_gone
        log.info(
            "Served a request in %.2f s after %.2f s in the queue (%s%s)",
            time.monotonic() - started,
            started - job.submitted,
            "failed" if error else "ok",
            ", caller gone: result dropped" if dropped else "",
        )
        if not dropped:
            _settle(job.loop, job.future, result=result, error=error)

    def _candidates(self, generator: Generator, request: Any) -> Any:
        """generator.candidates(request), retried once with half the batch on CUDA OOM."""
        torch = sys.modules.get("torch")  # an in-process sampler loaded it; a remote one needs none, and has no OOM
        out_of_memory = torch.cuda.OutOfMemoryError if torch else ()
        try:
            return generator.candidates(request)
        except out_of_memory:
            log.warning("CUDA out of memory at batch_size=%s; retrying with half", request.batch_size)
        # Retry outside the except block: the exception's traceback keeps the
        # failed attempt's tensors alive, and empty_cache() could not free them.
        torch.cuda.empty_cache()
        smaller = dataclasses.replace(request, batch_size=max(1, request.batch_size // 2))
        try:
            return generator.candidates(smaller)
        except out_of_memory:
            log.warning("CUDA out of memory again at batch_size=%s", smaller.batch_size)
        torch.cuda.empty_cache()
        raise SamplingError(
            f"The GPU ran out of memory, even with batch_size={smaller.batch_size}. "
            "Ask for fewer candidates (a smaller count or batch_size)."
        )


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future,
    result: Any = None,
    error: BaseException | None = None,
) -> None:
    """Resolve a future from any thread; one its caller already gave up on is left alone."""

    def settle() -> None:
        if future.done():  # cancelled or timed out meanwhile
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody is left to tell
        pass


def _load_error(exc: BaseException) -> ModelError:
    """A load failure as ModelError, keeping its message."""
    if isinstance(exc, ModelError):
        return exc
    return ModelError(f"The model could not be loaded: {type(exc).__name__}: {exc}")
