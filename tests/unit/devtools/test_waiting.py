"""``devtools.waiting.wait_until``: the one poll loop of the dev tooling."""

from __future__ import annotations

import time

import pytest

from devtools.waiting import log_tail, wait_until


def test_returns_the_first_truthy_value_as_soon_as_it_comes() -> None:
    calls: list[float] = []

    def third_time_lucky() -> str | None:
        calls.append(time.monotonic())
        return "ready" if len(calls) == 3 else None

    t0 = time.monotonic()
    assert wait_until(third_time_lucky, 10.0, "a third call", interval_s=0.01) == "ready"
    assert len(calls) == 3
    assert time.monotonic() - t0 < 1.0  # early: nowhere near the 10 s timeout


def test_times_out_saying_what_for_how_long_and_the_last_value() -> None:
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        wait_until(
            lambda: 0,
            0.2,
            "the answer to appear",
            interval_s=0.02,
            detail=lambda: "\n--- the log ---",
        )
    took = time.monotonic() - t0
    assert 0.2 <= took < 2.0
    msg = str(info.value)
    assert msg.startswith("timed out after 0.2 s waiting for the answer to appear (last: 0)")
    assert msg.endswith("--- the log ---")


def test_ignored_errors_count_as_not_yet_and_show_up_as_last() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(TimeoutError, match=r"last: ConnectionRefusedError\('nobody home'\)"):
        wait_until(refused, 0.1, "a listener", interval_s=0.02, ignore=(OSError,))
    with pytest.raises(ZeroDivisionError):  # not ignored: raised at once
        wait_until(lambda: 1 / 0, 5.0, "arithmetic", ignore=(OSError,))


def test_abort_stops_the_wait_with_its_own_error() -> None:
    seen = []

    def abort() -> None:
        if len(seen) >= 2:
            raise RuntimeError("the child exited")

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="the child exited"):
        wait_until(lambda: seen.append(1), 10.0, "never", interval_s=0.01, abort=abort)
    assert len(seen) == 2 and time.monotonic() - t0 < 1.0


def test_log_tail(tmp_path) -> None:
    log = tmp_path / "x.log"
    assert log_tail(log) == ""
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    tail = log_tail(log, lines=3)
    assert tail == f"\n--- last 3 lines of {log} ---\nline 97\nline 98\nline 99"
