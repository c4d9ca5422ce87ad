"""The global call budget and the driver service executors talk to."""
from __future__ import annotations

import threading
import time

import pytest

from moodlake.coordinator import AbortedError, CallBudget, Coordinator


class FakeClock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_gcra_allows_burst_then_exact_rate():
    clock = FakeClock()
    b = CallBudget(calls_per_hour=3600, burst=5, clock=clock)  # 1 call/s
    waits = [b.reserve() for _ in range(8)]
    assert waits[:5] == [0, 0, 0, 0, 0]
    assert waits[5:] == pytest.approx([1.0, 2.0, 3.0])


def test_gcra_never_exceeds_budget_in_any_window():
    """Simulate callers that make their call exactly when told: count calls per sliding window."""
    clock = FakeClock(0.0)
    rate, burst = 7200, 3  # 2 calls/s
    b = CallBudget(calls_per_hour=rate, burst=burst, clock=clock)
    call_times = []
    for step in range(2000):  # callers arrive in clumps of 5 every 0.37 s
        clock.t = (step // 5) * 0.37
        call_times.append(clock.t + b.reserve())
    call_times.sort()
    window = 10.0
    j = 0
    worst = 0
    for i, t in enumerate(call_times):
        while call_times[j] <= t - window:
            j += 1
        worst = max(worst, i - j + 1)
    assert worst <= burst + window * rate / 3600 + 1e-9
    # and with demand above the rate, it is used fully: calls = burst + elapsed * rate
    elapsed = call_times[-1] - call_times[0]
    assert len(call_times) == pytest.approx(burst + elapsed * 2, abs=1)


def test_budget_state_survives_a_restart(tmp_path):
    clock = FakeClock()
    state = tmp_path / "budget.json"
    b = CallBudget(3600, 2, state_file=state, clock=clock)
    for _ in range(10):
        b.reserve()
    b.save()
    b2 = CallBudget(3600, 2, state_file=state, clock=clock)
    assert b2.reserve() == pytest.approx(9.0)  # the restarted job waits for the slots already spent


def test_coordinator_over_http_shares_one_budget_between_threads():
    rate_per_s = 40
    with Coordinator(CallBudget(rate_per_s * 3600, burst=1)) as c:
        ep = c.endpoint
        stamps: list[float] = []
        lock = threading.Lock()

        def worker():
            client = ep.client()
            for _ in range(10):
                client.acquire()
                with lock:
                    stamps.append(time.monotonic())
                client.add(calls=1)
            client.flush()

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert c.progress.calls == 60
        stamps.sort()
        span = stamps[-1] - stamps[0]
        assert span >= (60 - 1) / rate_per_s * 0.95  # 60 calls cannot go faster than the rate


def test_abort_stops_other_clients_and_rejects_bad_tokens():
    with Coordinator() as c:
        a, b = c.endpoint.client(), c.endpoint.client()
        a.acquire()
        a.abort("Flickr rejected the credentials")
        with pytest.raises(AbortedError, match="rejected the credentials"):
            b.acquire()
        assert c.abort_reason == "Flickr rejected the credentials"
        from moodlake.coordinator import Endpoint

        intruder = Endpoint(c.endpoint.url, "wrong-token").client()
        with pytest.raises(OSError):
            intruder._post("/acquire", {})
