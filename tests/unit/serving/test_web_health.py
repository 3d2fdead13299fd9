"""Stall detection and liveness (``stream_app.health.Health``): pure state, a given clock."""

from __future__ import annotations

from stream_app.health import Health

C0, C1 = ("clicks", 0), ("clicks", 1)


def _health(stall: float = 10.0, live: float = 30.0, interval: float = 1.0) -> Health:
    return Health(stall_after_s=stall, liveness_after_s=live, interval_s=interval, clock=lambda: 0)


def _feed(h: Health, t: float, ends: dict, progress: dict, consuming: bool = True) -> None:
    h.observe(ends, progress, consuming=consuming, now=t)


def test_lag_without_progress_is_a_stall_after_the_configured_time() -> None:
    h = _health(stall=10)
    h.assign({C0: 100, C1: 50}, now=0)
    progress: dict = {}
    for t in range(0, 10):  # clicks[0]: 6 records wait, nothing is processed
        _feed(h, t, {C0: 106, C1: 50}, progress)
        assert h.stalled(progress, now=t) == []
    _feed(h, 10, {C0: 106, C1: 50}, progress)
    (s,) = h.stalled(progress, now=10)
    assert (s.topic, s.partition, s.lag) == ("clicks", 0, 6)
    assert s.seconds_since_progress == 10
    assert h.seconds_since_progress(C1, progress, now=10) == 0.0  # caught up


def test_progress_resets_the_clock_and_catching_up_clears_it() -> None:
    h = _health(stall=10)
    h.assign({C0: 0}, now=0)
    progress = {C0: (4, 0.0)}
    _feed(h, 0, {C0: 20}, progress)
    progress[C0] = (9, 8.0)  # processed up to offset 9 at t=8: moving, though lag remains
    _feed(h, 12, {C0: 20}, progress)
    assert h.stalled(progress, now=12) == []
    assert h.seconds_since_progress(C0, progress, now=12) == 4.0
    _feed(h, 19, {C0: 20}, progress)
    assert [s.partition for s in h.stalled(progress, now=19)] == [0]
    progress[C0] = (19, 19.5)  # caught up
    _feed(h, 20, {C0: 20}, progress)
    assert h.stalled(progress, now=20) == []
    assert h.seconds_since_progress(C0, progress, now=20) == 0.0


def test_new_records_after_an_idle_hour_are_not_an_instant_stall() -> None:
    h = _health(stall=10)
    h.assign({C0: 0}, now=0)
    progress = {C0: (9, 1.0)}
    _feed(h, 1, {C0: 10}, progress)  # caught up at t=1
    _feed(h, 3600, {C0: 15}, progress)  # records arrive an hour later
    assert h.stalled(progress, now=3601) == []
    assert h.seconds_since_progress(C0, progress, now=3601) == 1.0


def test_recovering_or_paused_flow_is_not_a_stall() -> None:
    h = _health(stall=10)
    h.assign({C0: 0}, now=0)
    for t in range(0, 30):
        _feed(h, t, {C0: 5}, {}, consuming=False)  # recovering tables the whole time
    assert h.stalled({}, now=30) == []
    for t in range(30, 45):  # consuming again, still no progress: counted from t=29
        _feed(h, t, {C0: 5}, {})
    assert h.seconds_since_progress(C0, {}, now=44) == 15.0


def test_stale_lag_is_unknown_not_a_stall() -> None:
    h = _health(stall=10, interval=1)
    h.assign({C0: 0}, now=0)
    _feed(h, 0, {C0: 5}, {})
    # the broker stopped answering: no end offsets since t=0
    assert h.seconds_since_progress(C0, {}, now=60) is None
    assert h.stalled({}, now=60) == []
    assert h.liveness({}, consuming=True, now=60) == (True, None)


def test_a_partition_reassigned_starts_from_its_new_position() -> None:
    h = _health(stall=10)
    h.assign({C0: 0}, now=0)
    progress = {C0: (99, 0.5)}  # processed before a rebalance took it away
    h.assign({}, now=1)
    assert h.partitions == {}
    h.assign({C0: 200}, now=2)  # back, at the position another worker committed
    _feed(h, 2, {C0: 200}, progress)
    assert h.seconds_since_progress(C0, progress, now=2) == 0.0  # no lag from offset 100
    _feed(h, 3, {C0: 203}, progress)  # three new records, none processed
    _feed(h, 13, {C0: 203}, progress)
    assert [s.lag for s in h.stalled(progress, now=13)] == [3]


def test_liveness_fails_only_when_no_batch_runs_while_input_waits() -> None:
    h = _health(stall=10, live=30)
    h.assign({C0: 0, C1: 0}, now=0)
    progress: dict = {C1: (9, 0.0)}
    _feed(h, 0, {C0: 0, C1: 10}, progress)
    assert h.liveness(progress, consuming=True, now=0) == (True, None)  # nothing waits
    # input arrives on both partitions; clicks[1] keeps being processed, clicks[0] stalls
    for t in range(1, 40):
        progress[C1] = (9 + t, float(t))
        _feed(h, t, {C0: 5, C1: 11 + t}, progress)
    live, waited = h.liveness(progress, consuming=True, now=39)
    assert live and waited == 0.0  # one stalled partition is not a wedged worker
    assert [s.partition for s in h.stalled(progress, now=39)] == [0]
    # now nothing is processed at all
    for t in range(40, 70):
        _feed(h, t, {C0: 5, C1: 60 + t}, progress)
    live, waited = h.liveness(progress, consuming=True, now=69)
    assert not live and waited == 30.0
    assert h.liveness(progress, consuming=False, now=69) == (True, None)  # recovering: live


def test_liveness_measures_from_when_input_started_waiting() -> None:
    h = _health(stall=10, live=30)
    h.assign({C0: 0}, now=0)
    progress = {C0: (9, 0.0)}
    _feed(h, 0, {C0: 10}, progress)
    _feed(h, 1000, {C0: 11}, progress)  # idle for 1000 s, then one record
    assert h.liveness(progress, consuming=True, now=1010)[0] is True
    _feed(h, 1031, {C0: 11}, progress)
    assert h.liveness(progress, consuming=True, now=1031) == (False, 31.0)
