"""The fault-scenario registry behind ``coldstream bench faults`` (no broker needed)."""

from __future__ import annotations

import argparse
import inspect
import json

import pytest

from devtools.faults import command, scenarios
from devtools.faults.scenarios import REGISTRY, UnknownScenario, run_scenario


def _defaults() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    command.add_arguments(p)
    return p.parse_args([])


def test_every_default_scenario_is_registered_in_order() -> None:
    names = _defaults().scenarios.split(",")
    assert names == list(REGISTRY)
    core = [
        "kill9",
        "sigterm",
        "rebalance",
        "broker_restart",
        "tansu_restart",
        "bad_input",
        "fuzz_flood",
        "dlq_breaker_pause",
        "dlq_breaker",
        "delivery_failure",
        "burst",
        "forget",
        "hostile_checkpoint",
        "forged_update",
        "replayed_update",
    ]
    # every scenario the fault suite relies on, in its order (others may sit between them)
    assert [n for n in names if n in core] == core
    for name in names:
        assert REGISTRY[name].name == name
        assert REGISTRY[name].func is getattr(scenarios, name)


@pytest.mark.parametrize("name", list(REGISTRY))
@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_the_bench_arguments_fit_each_scenario(name: str, scale: float) -> None:
    """run_scenario calls func(harness[, private broker], **scaled(scale)): the call must bind."""
    sc = REGISTRY[name]
    positional = {
        "none": ("workdir",),
        "shared": ("h",),
        "kafka": ("h", "broker"),
        "tansu": ("h", "broker"),
    }
    kwargs = sc.scaled(scale)
    inspect.signature(sc.func).bind(*positional[sc.broker], **kwargs)
    assert all(v > 0 for v in kwargs.values())


def test_scaled_sizes_match_the_fault_suite_scale() -> None:
    assert REGISTRY["kill9"].scaled(2.0) == {"n_events": 3000, "rate": 600.0}
    assert REGISTRY["kill9"].scaled(5.0)["rate"] == 900.0  # rate capped at 3x
    assert REGISTRY["rebalance"].scaled(0.01) == {"n_events": 50}  # at least 50 events
    assert REGISTRY["forget"].scaled(2.0) == {"n_users": 5}
    assert REGISTRY["burst"].scaled(10.0) == {"steady_rate": 50.0, "burst_s": 10.0}


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'kill9' registered twice"):
        scenarios.scenario("kill9")(lambda h: None)
    assert REGISTRY["kill9"].func is scenarios.kill9


def test_an_unknown_scenario_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(UnknownScenario) as info:
        run_scenario("kill-9", scale=1.0, workdir=tmp_path, shared={})
    assert str(info.value) == ("unknown scenario 'kill-9'; known: " + ", ".join(REGISTRY))


def test_the_command_refuses_unknown_names_before_running_anything(tmp_path, capsys) -> None:
    args = _defaults()
    args.scenarios, args.out, args.workdir = (
        "bad_input,nope",
        str(tmp_path / "r.json"),
        str(tmp_path / "w"),
    )
    assert command.run(args) == 2
    err = capsys.readouterr().err
    assert "unknown scenarios: ['nope']" in err and "known: kill9, sigterm" in err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "w").exists()


def test_the_table_has_a_header_once() -> None:
    r = scenarios.FaultResult("bad input", 10, 7, 3, 0, 0, 1.234)
    with_header = command.table([r]).splitlines()
    assert with_header[0].split()[:3] == ["scenario", "events", "in"]
    assert with_header[1].split() == ["bad", "input", "10", "7", "3", "0", "0", "1.23"]
    assert command.table([r], header=False).splitlines() == with_header[1:]
    assert json.loads(json.dumps(r.row()))["recovery_seconds"] == 1.23


def test_merge_keeps_other_rows_and_replaces_same_scenarios() -> None:
    old = [{"scenario": "a", "lost": 1}, {"scenario": "b", "lost": 2}]
    new = [{"scenario": "b", "lost": 0}, {"scenario": "c", "lost": 3}]
    merged = command.merge_rows(old, new)
    assert merged == [{"scenario": "a", "lost": 1}, {"scenario": "b", "lost": 0}, new[1]]


def test_every_delivery_scenario_has_an_exactly_once_row() -> None:
    """Issue: the fault suite side by side -- kill -9, SIGTERM, rebalance, broker restart,
    an output topic refusing records and the rolling restart under both guarantees."""
    for base in ("sigterm", "rebalance", "broker_restart", "delivery_failure", "rolling_restart"):
        eos = REGISTRY[f"{base}_exactly_once"]
        assert "guarantee" in inspect.signature(getattr(scenarios, base)).parameters
        assert eos.broker == REGISTRY[base].broker
    assert "kill9_exactly_once" in REGISTRY
