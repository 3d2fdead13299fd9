"""The online judge as a process: ``coldstream judge`` (docs/rollout.md).

It follows the model store's running rollout (``ROLLOUT.json``, written by
``coldstream rollout start``; a ``canary``: a shadow's lists are never published, so a
shadow is judged on the workers' online hit rate instead) and feeds one
:class:`~trainer.service.judge.Judge` from Kafka:

* ``recommendations``: every record served by the candidate (``arm: canary``) or the
  incumbent (``live``), with the user's cohort from its ``cold_start`` flag;
* ``clicks`` / ``purchases``: each user's next event scores the recommendation before it;
* ``forget-requests``: a forgotten user is taken out of the judge's data.

Inputs are read with manual assignment (no group: the judge is one process) from the
rollout's start (``offsets_for_times``), held back ``delay_s`` and applied in record
timestamp order (create time, stamped by the worker and by the event producers: a click
is never applied before the recommendation that preceded it in another topic).

**State survives a restart**: the judge's state and, per input partition, the offset of
the first record not yet applied are written together, atomically, to
``ROLLOUT-JUDGE.json`` in the store every ``save_every_s``; a restarted judge restores
them and seeks there, so no observation is counted twice or lost.

**Decisions**: on a verdict (or ``check(now)`` on the time budget) the judge signs its
decision record, counts ``coldstream_rollout_decisions_total{decision}``, logs the figures,
writes them to ``reports/rollout-decisions/<rollout id>.json`` and ends the rollout through
:func:`trainer.service.rollout.end`: ``promote`` makes the candidate live,
``rollback``/``give_up`` re-point the store at the incumbent (the workers drop the candidate
on the decision record). Each record failing to parse is counted and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from coldstream.core.topics import topic_names, topic_partitions
from trainer.service import rollout
from trainer.service.judge import Judge, JudgeConfig, Verdict
from trainer.service.promote import publish_records, require_signer

log = logging.getLogger(__name__)

STATE_FILE = "ROLLOUT-JUDGE.json"
INPUTS = ("recommendations", "clicks", "purchases", "forget-requests")


class JudgeMetrics:
    """``coldstream_rollout_*``: decisions, and per arm and cohort the observations, the
    next-event hit rate@10 and the interval of the cold/warm difference (Grafana)."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge

        r = registry or REGISTRY
        self.registry = r
        self.decisions = Counter(
            "coldstream_rollout_decisions",
            "Rollout decisions of the online judge and by hand",
            ["decision"],
            registry=r,
        )
        self.observations = Gauge(
            "coldstream_rollout_observations",
            "Next-event observations of the running rollout",
            ["arm", "cohort"],
            registry=r,
        )
        self.hit_rate = Gauge(
            "coldstream_rollout_hit_rate",
            "Next-event hit rate@10 of the running rollout",
            ["arm", "cohort"],
            registry=r,
        )
        self.diff = Gauge(
            "coldstream_rollout_hit_rate_diff",
            "Candidate minus incumbent hit rate@10 with its always-valid interval",
            ["cohort", "bound"],
            registry=r,
        )
        self.records = Counter(
            "coldstream_rollout_judge_records",
            "Input records read by the judge, by topic and outcome (applied, skipped, bad)",
            ["topic", "outcome"],
            registry=r,
        )
        # every series exists before the first rollout: rate() and the dashboard have a
        # sample (the hit rates and the interval are NaN, no line, until a canary is judged)
        for decision in ("promote", "rollback", "give_up"):
            self.decisions.labels(decision)
        for topic in INPUTS:
            for outcome in ("applied", "skipped", "bad"):
                self.records.labels(topic, outcome)
        for cohort in ("cold", "warm"):
            for arm in ("canary", "live"):
                self.observations.labels(arm, cohort).set(0)
                self.hit_rate.labels(arm, cohort).set(float("nan"))
            for bound in ("diff", "lower", "upper"):
                self.diff.labels(cohort, bound).set(float("nan"))

    def show(self, judge: Judge) -> None:
        f = judge.figures()
        for cohort in ("cold", "warm"):
            c = f[cohort]
            for arm, n, hit in (
                ("canary", c["n_candidate"], c["hit_candidate"]),
                ("live", c["n_incumbent"], c["hit_incumbent"]),
            ):
                self.observations.labels(arm, cohort).set(n)
                self.hit_rate.labels(arm, cohort).set(hit if hit is not None else float("nan"))
            for bound in ("diff", "lower", "upper"):
                self.diff.labels(cohort, bound).set(c[bound])


class JudgeRunner:
    """Follows the store's rollout and judges it from the topics (module docstring)."""

    def __init__(
        self,
        settings: Any,
        *,
        config: JudgeConfig | None = None,
        metrics: JudgeMetrics | None = None,
        delay_s: float = 2.0,
        save_every_s: float = 5.0,
        reports: Path | str = Path("reports/rollout-decisions"),
        clock: Any = time.time,
    ) -> None:
        self.settings = settings
        self.store = Path(settings.model_store)
        self.config = config or JudgeConfig()
        self.metrics = metrics
        self.delay_s = delay_s
        self.save_every_s = save_every_s
        self.reports = Path(reports)
        self.clock = clock
        self.names = topic_names(settings.topic_prefix)
        self.judge: Judge | None = None
        self.decided: list[tuple[Verdict, Judge]] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        self._held: list[tuple[int, int, str, int, Any]] = []
        self._seq = 0
        self._next: dict[tuple[str, int], int] = {}
        """Per input partition: the offset of the first record not applied yet."""
        self.retry_s = 5.0
        self.errors = 0

    # -- state -----------------------------------------------------------------------------
    def _state_path(self) -> Path:
        return self.store / STATE_FILE

    def save(self) -> None:
        if self.judge is None:
            return
        pending: dict[tuple[str, int], int] = {}
        for _, _, topic, part, msg in self._held:
            tp = (topic, part)
            pending[tp] = min(pending.get(tp, msg.offset), msg.offset)
        offsets = {f"{t}:{p}": pending.get((t, p), o) for (t, p), o in self._next.items()}
        body = {"judge": json.loads(self.judge.to_json()), "offsets": offsets}
        fd, tmp = tempfile.mkstemp(prefix=".judge-", dir=self.store)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, sort_keys=True)
        os.replace(tmp, self._state_path())

    def restore(self, rollout_id: str) -> dict[tuple[str, int], int] | None:
        """The saved judge of ``rollout_id`` and its offsets, or ``None``."""
        path = self._state_path()
        if not path.is_file():
            return None
        try:
            body = json.loads(path.read_text())
            judge = Judge.from_json(json.dumps(body["judge"]))
        except (ValueError, KeyError, TypeError) as e:
            log.error(
                "judge state %s unreadable (%s): starting the rollout's judge afresh", path, e
            )
            return None
        if judge.rollout_id != rollout_id:
            return None
        self.judge = judge
        out = {}
        for key, off in body["offsets"].items():
            topic, part = key.rsplit(":", 1)
            out[(topic, int(part))] = int(off)
        return out

    # -- input -----------------------------------------------------------------------------
    def hold(self, topic: str, msg: Any) -> None:
        """Keep a record until it is ``delay_s`` old, in timestamp order."""
        self._seq += 1
        heapq.heappush(self._held, (int(msg.timestamp), self._seq, topic, msg.partition, msg))
        self._next[(topic, msg.partition)] = msg.offset + 1

    def release(self, now: float) -> Verdict | None:
        """Apply held records older than ``now - delay_s``, oldest first."""
        cut = (now - self.delay_s) * 1000.0
        verdict = None
        while self._held and self._held[0][0] <= cut and verdict is None:
            _, _, topic, _, msg = heapq.heappop(self._held)
            verdict = self.apply(topic, msg)
        return verdict

    def apply(self, topic: str, msg: Any) -> Verdict | None:
        """One input record (its topic's role), isolated: a bad one is counted, skipped."""
        assert self.judge is not None
        j, name = self.judge, self._role(topic)
        ts = msg.timestamp / 1000.0
        try:
            v = json.loads(msg.value)
            if name == "recommendations":
                if v.get("fallback") == "forgotten" or not v.get("items"):
                    return self._count(name, "skipped")
                j.served(
                    str(v["user_id"]),
                    int(v["model_version"]),
                    str(v.get("arm", "live")),
                    [str(i["item_id"]) for i in v["items"]],
                    1 if v["cold_start"] else self.config.cold_max_events + 1,
                    ts,
                )
                return self._count(name, "applied")
            if name == "forget-requests":
                j.forget(str(v["user_id"]), ts)
                return self._count(name, "applied")
            verdict = j.event(str(v["user_id"]), str(v["item_id"]), ts)
            self._count(name, "applied")
            return verdict
        except (ValueError, KeyError, TypeError) as e:
            log.warning("judge: %s record at %s:%d skipped (%s)", name, topic, msg.offset, e)
            return self._count(name, "bad")

    def _role(self, topic: str) -> str:
        for role in INPUTS:
            if self.names[role] == topic:
                return role
        return topic

    def _count(self, name: str, outcome: str) -> None:
        self.counts[(name, outcome)] += 1
        if self.metrics is not None:
            self.metrics.records.labels(name, outcome).inc()
        return None

    def superseded(self, r: rollout.Rollout) -> bool:
        """Whether the live model moved away from the rollout's incumbent (another version
        was promoted; the workers dropped the candidate on its live record)."""
        from coldstream.core.pointer import PointerError, read_pointer
        from trainer.service.promote import keyring_of

        signer = require_signer(self.settings)
        try:
            ptr = read_pointer(self.store, keyring_of(self.settings, signer))
        except PointerError:
            return False
        return ptr.version != r.incumbent and ptr.version != r.candidate

    # -- decisions -------------------------------------------------------------------------
    async def act(self, verdict: Verdict, *, publish: bool = True) -> list[bytes]:
        """Sign and send the verdict, end the rollout, report it."""
        assert self.judge is not None
        judge = self.judge
        signer = require_signer(self.settings)
        record = judge.decision_record(signer)
        how = "promote" if verdict.decision in ("promote", "manual_promote") else "abort"
        _, records, finish = rollout.prepare_end(self.settings, how, decision=record)
        if publish:
            await publish_records(self.settings, records)
        finish()
        sent = json.loads(records[0])["decision"]
        if sent != verdict.decision:  # the live model moved meanwhile: ended, not promoted
            verdict = Verdict(sent, "superseded", verdict.figures)
        if self.metrics is not None:
            self.metrics.decisions.labels(verdict.decision).inc()
            self.metrics.show(judge)
        self.reports.mkdir(parents=True, exist_ok=True)
        (self.reports / f"{judge.rollout_id}.json").write_text(
            json.dumps(
                {"decision": verdict.decision, "rule": verdict.rule, "figures": verdict.figures},
                indent=1,
            )
        )
        log.warning(
            "rollout %s: %s (%s); cold %s", judge.rollout_id, verdict.decision, verdict.rule,
            verdict.figures.get("cold"),
        )  # fmt: skip
        self.decided.append((verdict, judge))
        self._state_path().unlink(missing_ok=True)
        self.judge, self._held, self._next = None, [], {}
        return records

    # -- the loop --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, *, poll_s: float = 0.5, publish: bool = True) -> None:
        """Judge rollouts until ``stop``. An error (the broker away, a decision that could
        not be published) is logged, the judge's memory dropped, and after ``retry_s`` it
        starts again from its last saved state and offsets: the trainer it runs in never
        goes down for it, and no observation is counted twice."""
        while not stop.is_set():
            try:
                await self._run(stop, poll_s=poll_s, publish=publish)
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the judge must not take its host down
                log.exception("the rollout judge failed; retrying in %.0f s", self.retry_s)
                self.errors += 1
                self.judge, self._held, self._next = None, [], {}
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.retry_s)

    async def _run(self, stop: asyncio.Event, *, poll_s: float, publish: bool) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            **s.kafka_client_kwargs(),
        )
        await consumer.start()
        last_save = self.clock()
        tps: list[Any] = []
        try:
            while not stop.is_set():
                r = rollout.running(self.store)
                if r is None or r.arm != "canary":
                    if self.judge is not None:  # ended by hand: nothing left to judge
                        log.warning("rollout %s ended elsewhere", self.judge.rollout_id)
                        self._state_path().unlink(missing_ok=True)
                        self.judge, self._held, self._next = None, [], {}
                        consumer.assign([])
                    await asyncio.sleep(poll_s)
                    continue
                if self.judge is None or self.judge.rollout_id != r.rollout_id:
                    if not tps:
                        tps = [
                            TopicPartition(self.names[t], p)
                            for t in INPUTS
                            for p in await topic_partitions(
                                s.bootstrap, self.names[t], client_kwargs=s.kafka_client_kwargs()
                            )
                        ]
                    consumer.assign(tps)
                    saved = self.restore(r.rollout_id)
                    if saved is None:
                        self.judge = Judge(
                            r.rollout_id,
                            r.candidate,
                            r.incumbent,
                            "canary",
                            r.share,
                            started_at=r.started_at,
                            config=self.config,
                        )
                        at = await consumer.offsets_for_times(
                            {tp: int(r.started_at * 1000) for tp in tps}
                        )
                        for tp in tps:
                            if at.get(tp) is not None:
                                consumer.seek(tp, at[tp].offset)
                            else:
                                await consumer.seek_to_end(tp)
                    else:
                        for tp in tps:
                            off = saved.get((tp.topic, tp.partition))
                            if off is not None:
                                consumer.seek(tp, off)
                            else:
                                await consumer.seek_to_end(tp)
                    log.warning("judging rollout %s (v%s canary)", r.rollout_id, r.candidate)
                got = await consumer.getmany(timeout_ms=int(poll_s * 1000), max_records=5000)
                for tp, msgs in got.items():
                    for m in msgs:
                        self.hold(tp.topic, m)
                now = self.clock()
                assert self.judge is not None
                verdict = self.release(now) or self.judge.check(now)
                if verdict is not None:
                    await self.act(verdict, publish=publish)
                    consumer.assign([])
                    continue
                if self.metrics is not None:
                    self.metrics.show(self.judge)
                if now - last_save >= self.save_every_s:
                    self.save()
                    last_save = now
                    if self.superseded(r):
                        await self.act(
                            self.judge.end("give_up", "superseded", now), publish=publish
                        )
                        consumer.assign([])
        finally:
            with contextlib.suppress(Exception):
                self.save()
            await consumer.stop()
