"""ModelWorker: one thread serves the model while the event loop stays responsive.

The generators here are small real ones (torch work, time.sleep, or waiting on
a gate the test opens), so the worker's threading is exercised for real.
"""

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import pytest
import torch

from model.errors import BusyError, ModelError, ProverbotError, SamplingError
from model.worker import ModelWorker


@dataclass(frozen=True)
class Req:
    """Shaped like the sampler's request: frozen, with an int batch_size."""

    id: int
    batch_size: int = 4
    gated: bool = False  # wait for the test to open the gate before answering
    error: Exception | None = None  # raise this instead of answering
    work: str = ""  # "matmul" or "sleep": some real work before answering


class EchoGenerator:
    """Answers each request with its own id; records what ran, in order."""

    def __init__(self, oom_above: int | None = None):
        self.seen: list[int] = []
        self.batch_sizes: list[int] = []
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.running = threading.Event()  # set when a gated request has started
        self.oom_above = oom_above
        self.matrix = torch.rand(512, 512)

    def candidates(self, req: Req) -> tuple[str, int, int]:
        self.seen.append(req.id)
        self.batch_sizes.append(req.batch_size)
        self.threads.add(threading.current_thread().name)
        if self.oom_above is not None and req.batch_size > self.oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if req.gated:
            self.running.set()
            assert self.gate.wait(5), "the test never opened the gate"
        if req.error is not None:
            raise req.error
        if req.work == "matmul":
            x = self.matrix
            for _ in range(4):
                x = torch.tanh(torch.matmul(x, self.matrix))
        elif req.work == "sleep":
            time.sleep(0.01)
        return ("result", req.id, req.batch_size)


def loader(generator: EchoGenerator):
    """A load() that also remembers which thread ran it."""
    threads: list[threading.Thread] = []

    def load() -> EchoGenerator:
        threads.append(threading.current_thread())
        return generator

    load.threads = threads
    return load


async def wait_until_running(generator: EchoGenerator) -> None:
    """Wait (off the loop) until the worker thread is inside a gated request."""
    assert await asyncio.to_thread(generator.running.wait, 5)


@pytest.fixture
def one_torch_thread():
    """The machine is shared and small: keep torch's own thread pool out of the timing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("work", ["matmul", "sleep"])
async def test_concurrent_requests_fifo_own_results_and_loop_stays_responsive(work, one_torch_thread):
    gen = EchoGenerator()
    load = loader(gen)
    lags: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - before - 0.01)

    async with ModelWorker(load, max_queue=32) as worker:
        assert load.threads[0] is not threading.main_thread()
        beat = asyncio.create_task(heartbeat())
        await asyncio.sleep(0.02)  # the heartbeat is ticking before the work starts
        started = time.monotonic()
        results = await asyncio.gather(*(worker.sample(Req(i, work=work)) for i in range(20)))
        elapsed = time.monotonic() - started
        stop.set()
        await beat

    assert results == [("result", i, 4) for i in range(20)]
    assert gen.seen == list(range(20))  # FIFO
    assert gen.threads == {"model-worker"}
    assert len(lags) >= 5, f"heartbeat barely ran ({len(lags)} ticks in {elapsed:.2f} s)"
    print(f"\n[{work}] 20 requests in {elapsed:.3f} s; max loop lag {max(lags) * 1000:.1f} ms "
          f"over {len(lags)} ticks")
    assert max(lags) < 0.050


async def test_full_queue_raises_busy_at_once_then_recovers():
    gen = EchoGenerator()
    positions: dict[int, list[int]] = {}

    def on_queued(req_id):
        return lambda n: positions.setdefault(req_id, []).append(n)

    async with ModelWorker(loader(gen), max_queue=2) as worker:
        running = asyncio.create_task(worker.sample(Req(1, gated=True), on_queued(1)))
        await wait_until_running(gen)
        waiting = [asyncio.create_task(worker.sample(Req(i), on_queued(i))) for i in (2, 3)]
        await asyncio.sleep(0)  # let both tasks enqueue
        assert worker.queue_length() == 2

        started = time.monotonic()
        with pytest.raises(BusyError, match=r"The model is busy \(2 requests waiting\); try again shortly\."):
            await worker.sample(Req(4))
        assert time.monotonic() - started < 0.05
        assert worker.queue_length() == 2  # the refused request was not queued

        gen.gate.set()
        assert await running == ("result", 1, 4)
        assert await asyncio.gather(*waiting) == [("result", 2, 4), ("result", 3, 4)]
        assert worker.queue_length() == 0
        assert await worker.sample(Req(5), on_queued(5)) == ("result", 5, 4)

    assert gen.seen == [1, 2, 3, 5]
    # Only requests that had to wait were told their place in the queue.
    assert positions == {2: [1], 3: [2]}


async def test_timeouts_skip_waiting_requests_and_drop_late_results(caplog):
    caplog.set_level(logging.INFO, logger="model.worker")
    gen = EchoGenerator()
    async with ModelWorker(loader(gen), timeout=0.2) as worker:
        running = asyncio.create_task(worker.sample(Req(1, gated=True)))
        await wait_until_running(gen)
        waiting = asyncio.create_task(worker.sample(Req(2)))

        started = time.monotonic()
        for task in (running, waiting):
            with pytest.raises(SamplingError, match=r"^Sampling took longer than 0.2 s and was abandoned\.$"):
                await task
        assert time.monotonic() - started < 0.5
        assert worker.queue_length() == 0

        gen.gate.set()  # the abandoned request 1 now finishes in the thread
        assert await worker.sample(Req(3)) == ("result", 3, 4)

    assert gen.seen == [1, 3]  # request 2 timed out in the queue and never ran
    assert any("result dropped" in r.getMessage() for r in caplog.records)


async def test_generator_errors_pass_through_or_become_sampling_errors(caplog):
    own = SamplingError("No candidate passed the filters.")
    gen = EchoGenerator()
    async with ModelWorker(loader(gen)) as worker:
        with pytest.raises(SamplingError) as caught:
            await worker.sample(Req(1, error=own))
        assert caught.value is own

        with pytest.raises(SamplingError) as caught:
            await worker.sample(Req(2, error=ValueError("temperature must be positive")))
        assert "ValueError" in str(caught.value)
        assert "temperature must be positive" in str(caught.value)
        assert isinstance(caught.value, ProverbotError)

        assert await worker.sample(Req(3)) == ("result", 3, 4)

    logged = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert len(logged) == 1 and logged[0].exc_info[0] is ValueError


async def test_cuda_out_of_memory_retries_once_with_half_the_batch():
    gen = EchoGenerator(oom_above=2)
    async with ModelWorker(loader(gen)) as worker:
        assert await worker.sample(Req(1, batch_size=4)) == ("result", 1, 2)
        assert gen.batch_sizes == [4, 2]

        with pytest.raises(SamplingError, match=r"GPU ran out of memory.*batch_size=4.*smaller"):
            await worker.sample(Req(2, batch_size=8))
        assert gen.batch_sizes == [4, 2, 8, 4]  # one retry only

        assert await worker.sample(Req(3, batch_size=1)) == ("result", 3, 1)


async def test_load_failure_surfaces_from_start_as_model_error():
    threads = []

    def load():
        threads.append(threading.current_thread())
        raise FileNotFoundError("no checkpoint in runs/demo")

    worker = ModelWorker(load)
    with pytest.raises(ModelError, match="FileNotFoundError: no checkpoint in runs/demo"):
        await worker.start()
    assert threads[0] is not threading.main_thread()  # load() ran in the worker thread
    with pytest.raises(SamplingError, match="not running"):
        await worker.sample(Req(1))
    await worker.close()
    await worker.close()
    threads[0].join(1)
    assert not threads[0].is_alive()


async def test_close_fails_waiting_requests_finishes_running_one_and_is_idempotent():
    gen = EchoGenerator()
    load = loader(gen)
    worker = ModelWorker(load)
    await ModelWorker(load).close()  # closing a worker that never started is fine
    await worker.start()

    running = asyncio.create_task(worker.sample(Req(1, gated=True)))
    await wait_until_running(gen)
    waiting = [asyncio.create_task(worker.sample(Req(i))) for i in (2, 3)]
    await asyncio.sleep(0)
    closing = asyncio.create_task(worker.close())

    errors = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
    for error in errors:
        assert isinstance(error, SamplingError) and "shut down" in str(error)
    assert not closing.done()  # it waits for the running request

    gen.gate.set()
    assert await running == ("result", 1, 4)
    await asyncio.wait_for(closing, 5)
    assert not load.threads[0].is_alive()
    await asyncio.wait_for(worker.close(), 5)  # again: nothing left to do

    with pytest.raises(SamplingError, match="not running"):
        await worker.sample(Req(4))
    assert gen.seen == [1]


async def test_cancelled_callers_leave_the_worker_healthy():
    gen = EchoGenerator()
    async with ModelWorker(loader(gen)) as worker:
        running = asyncio.create_task(worker.sample(Req(1, gated=True)))
        await wait_until_running(gen)
        waiting = asyncio.create_task(worker.sample(Req(2)))
        await asyncio.sleep(0)
        assert worker.queue_length() == 1

        for task in (waiting, running):
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert worker.queue_length() == 0

        gen.gate.set()
        assert await worker.sample(Req(3)) == ("result", 3, 4)

    assert gen.seen == [1, 3]  # the cancelled waiting request never ran


async def test_call_runs_in_the_worker_thread_in_turn_with_the_requests():
    gen = EchoGenerator()
    async with ModelWorker(loader(gen)) as worker:
        first = asyncio.create_task(worker.sample(Req(1, gated=True)))
        await wait_until_running(gen)
        called = asyncio.create_task(worker.call(lambda g: (list(g.seen), threading.current_thread().name)))
        second = asyncio.create_task(worker.sample(Req(2)))
        await asyncio.sleep(0)
        assert worker.queue_length() == 2          # the call waits its turn like a request
        gen.gate.set()
        assert await called == ([1], "model-worker")  # after the running request, before the one behind it
        assert [await first, await second] == [("result", 1, 4), ("result", 2, 4)]

        def refuse(_):
            raise ModelError("Run x is being saved; try again in a moment.")

        with pytest.raises(ModelError, match="^Run x is being saved"):
            await worker.call(refuse)
        with pytest.raises(SamplingError, match="ZeroDivisionError"):
            await worker.call(lambda g: 1 / 0)
        assert await worker.sample(Req(3)) == ("result", 3, 4)      # still serving
