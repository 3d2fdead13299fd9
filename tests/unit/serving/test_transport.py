"""Fences around the two places where the worker extends Faust beyond its settings
(:mod:`stream_app.transport`): they fail when the installed Faust or aiokafka changes
under the copied code, instead of letting the worker misbehave at run time."""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from importlib.metadata import version

import aiokafka
import faust.transport.consumer as faust_consumer
import faust.transport.drivers.aiokafka as faust_aiokafka

from stream_app import transport


def _function(src: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    node = ast.parse(textwrap.dedent(src)).body[0]
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    return node


def _without_fast_path(fn: ast.AsyncFunctionDef) -> ast.AsyncFunctionDef:
    """Our copy with the marked change taken out: the docstring, the statements binding the
    fast path's own names, and ``if <fast topic>: ... else: <Faust's line>`` -> Faust's line."""

    class Strip(ast.NodeTransformer):
        def visit_If(self, node: ast.If) -> object:
            self.generic_visit(node)
            names = {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
            if names & transport.FAST_PATH_NAMES:
                return node.orelse
            return node

    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # docstring

    def binds_fast_name(stmt: ast.stmt) -> bool:
        targets = (
            stmt.targets
            if isinstance(stmt, ast.Assign)
            else [stmt.target]
            if isinstance(stmt, ast.AnnAssign)
            else []
        )
        return any(isinstance(t, ast.Name) and t.id in transport.FAST_PATH_NAMES for t in targets)

    fn.body = [s for s in body if not binds_fast_name(s)]
    return Strip().visit(fn)


def test_pinned_versions_are_installed() -> None:
    # pyproject pins exactly these: the copied loop and the attribute below are checked
    # against them, and a newer release needs a new look at stream_app/transport.py
    assert version("faust-streaming") == "0.15.3"
    assert version("aiokafka") == "0.14.0"


def test_faust_drain_loop_is_the_one_we_copied() -> None:
    upstream = textwrap.dedent(inspect.getsource(faust_consumer.Consumer._drain_messages))
    assert hashlib.sha256(upstream.encode()).hexdigest() == transport.UPSTREAM_DRAIN_SHA256, (
        "Faust's Consumer._drain_messages changed: copy it again into stream_app/transport.py "
        "(keep the marked fast-path change) and update UPSTREAM_DRAIN_SHA256"
    )


def test_our_loop_is_faust_plus_the_marked_change_only() -> None:
    ours = _without_fast_path(_function(inspect.getsource(transport.Consumer._drain_messages)))
    upstream = _function(inspect.getsource(faust_consumer.Consumer._drain_messages))
    ours.returns = upstream.returns = None
    ours.decorator_list = upstream.decorator_list = []
    assert [a.arg for a in ours.args.args] == [
        a.arg for a in upstream.args.args
    ]  # annotations aside
    assert [ast.dump(s) for s in ours.body] == [ast.dump(s) for s in upstream.body]


def test_strip_notices_any_other_change() -> None:
    # the comparison above is not vacuous: one changed line in our copy makes it differ
    src = inspect.getsource(transport.Consumer._drain_messages).replace(
        "yield_every = 100", "yield_every = 99"
    )
    ours = _without_fast_path(_function(src))
    upstream = _function(inspect.getsource(faust_consumer.Consumer._drain_messages))
    assert [ast.dump(s) for s in ours.body] != [ast.dump(s) for s in upstream.body]


def test_fetch_wait_is_still_hard_coded_by_faust_and_read_by_aiokafka() -> None:
    # Faust: the worker consumer is built with a literal 1500 ms (else use its setting)
    faust_src = inspect.getsource(faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer)
    assert "fetch_max_wait_ms=1500" in faust_src
    # aiokafka: the constructor keeps the argument in the attribute we set, and start()
    # builds the fetcher from that attribute
    init_src = inspect.getsource(aiokafka.AIOKafkaConsumer.__init__)
    start_src = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in init_src
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in start_src
    # the same for the minimum bytes of a fetch
    assert "self._fetch_min_bytes = fetch_min_bytes" in init_src
    assert "fetch_min_bytes=self._fetch_min_bytes" in start_src


def test_isolation_level_is_read_by_aiokafka_and_faust_recovery_fixup_needs_its_eos() -> None:
    # exactly_once sets the attribute the constructor keeps; start() builds the fetcher with it
    init_src = inspect.getsource(aiokafka.AIOKafkaConsumer.__init__)
    start_src = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "self._isolation_level = isolation_level" in init_src
    assert "isolation_level=self._isolation_level" in start_src
    # Faust reads committed only in its own exactly-once mode (which we do not use)
    faust_src = inspect.getsource(faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer)
    assert 'isolation_level = "read_committed"' in faust_src
    assert "if self.consumer.in_transaction:" in faust_src


def test_every_faust_offset_commit_goes_through_the_commit_we_override() -> None:
    # exactly_once: stream_app.transport.Consumer._commit commits nothing (the transactions
    # commit the offsets); Faust's periodic and rebalance commits must all go through it
    src = inspect.getsource(faust_consumer.Consumer._commit_offsets)
    assert "did_commit = await self._commit(committable_offsets)" in src
    assert "_commit(" not in inspect.getsource(faust_consumer.Consumer._commit_tps).replace(
        "self._commit_offsets(", ""
    )


async def test_exactly_once_consumer_commits_nothing_itself() -> None:
    from stream_app.app import create_app
    from stream_app.settings import Settings

    app = create_app(Settings(bootstrap="127.0.0.1:1", processing_guarantee="exactly_once"))
    assert await app.consumer._commit({}) is False  # no broker asked


def test_track_message_is_faust_pending_ack_plus_sensors() -> None:
    # the fast path calls Consumer.track_message for every record it buffers: it must keep
    # adding the message to the unacked set (graceful stop and rebalances wait for our acks)
    # and feed the sensors (input counts)
    src = inspect.getsource(faust_consumer.Consumer.track_message)
    assert "self._unacked_messages.add(message)" in src
    assert "self._on_message_in(" in src


def test_faust_producer_settings_are_where_our_producer_extends_them():
    # Faust's producer merges _settings_extra() into the aiokafka producer's arguments and
    # returns {} outside transactions: our Producer adds the idempotent settings there
    src = inspect.getsource(faust_aiokafka.Producer._new_producer)
    assert "**self._settings_extra()" in src
    extra_src = inspect.getsource(faust_aiokafka.Producer._settings_extra)
    assert "if self.app.in_transaction" in extra_src and "return {}" in extra_src
    assert transport.Transport.Producer is transport.Producer


def test_our_producer_asks_for_idempotence_when_the_app_declares_it():
    class App:
        in_transaction = False
        idempotent_producer = True

    p = transport.Producer.__new__(transport.Producer)
    p.app = App()  # the one attribute _settings_extra reads
    assert p._settings_extra() == {"acks": "all", "enable_idempotence": True}
    App.idempotent_producer = False
    assert p._settings_extra() == {}


def _module_attributes_read(module: object, name: str) -> set[str]:
    """The attributes that ``module``'s source reads from its global ``name``."""
    return {
        node.attr
        for node in ast.walk(ast.parse(inspect.getsource(module)))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == name
    }


def test_faust_commit_reads_terminal_only_for_its_log_table() -> None:
    """Change 5 replaces ``terminal`` in Faust's consumer module: it must use nothing else."""
    assert _module_attributes_read(faust_consumer, "terminal") == {"logtable"}
    assert faust_consumer.terminal is transport.COMMIT_TERMINAL


def test_the_commit_table_is_built_only_when_formatted(monkeypatch) -> None:
    from faust.utils import terminal

    built: list[object] = []
    real = terminal.logtable

    def counting(*a, **kw):
        built.append(a)
        return real(*a, **kw)

    monkeypatch.setattr(terminal, "logtable", counting)
    rows = [("TopicPartition(topic='clicks', partition=0)", "42")]
    table = faust_consumer.terminal.logtable(rows, title="Commit Offsets", headers=["TP", "Offset"])
    assert built == []  # a commit whose dev-level line is not logged builds nothing
    text = str(table)
    assert built and text == real(rows, title="Commit Offsets", headers=["TP", "Offset"])
    assert "Commit Offsets" in text and "42" in text


def test_faust_wait_empty_reads_gc_only_to_collect() -> None:
    """Change 6 replaces ``gc`` in Faust's consumer module: it must use nothing else."""
    assert _module_attributes_read(faust_consumer, "gc") == {"collect"}
    assert faust_consumer.gc is transport.WAIT_EMPTY_GC


def test_wait_empty_collects_fully_at_most_every_few_seconds(monkeypatch) -> None:
    import gc

    asked: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: asked.append(generation) or 0)
    now = [100.0]
    paced = transport.PacedCollect(clock=lambda: now[0])
    paced.collect()  # the first wait of a rebalance: a full collection
    now[0] += 1.0
    paced.collect()  # the same wait's next turn: the young generations only
    paced.collect()
    now[0] += paced.FULL_EVERY_S
    paced.collect()  # still waiting after that long: full again
    paced.collect(0)
    assert asked == [2, 1, 1, 2, 0]
