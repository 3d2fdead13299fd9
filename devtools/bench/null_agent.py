"""A stock Faust app whose one agent only counts: the ceiling of any Faust agent here.

``coldstream bench pod`` runs it as a process over the same backlog as the workers, so the
full pipeline can be stated as a multiple of stock Faust doing nothing. Configured by the
environment (``NULL_AGENT_*``: bootstrap, app id, topics, events, web port, out); it
writes ``{"events": n, "seconds": first to last event}`` to ``NULL_AGENT_OUT`` once it
has counted ``NULL_AGENT_EVENTS`` events, and goes on running until it is stopped.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]


def main() -> None:
    import faust

    env = os.environ
    n_events = int(env["NULL_AGENT_EVENTS"])
    out = Path(env["NULL_AGENT_OUT"])
    app = faust.App(
        env["NULL_AGENT_APP_ID"],
        broker=f"kafka://{env['NULL_AGENT_BOOTSTRAP']}",
        store="memory://",
        web_port=int(env["NULL_AGENT_WEB_PORT"]),
        web_host="127.0.0.1",
    )
    source = app.topic(
        *env["NULL_AGENT_TOPICS"].split(","), key_serializer="raw", value_serializer="raw"
    )
    state: dict[str, float] = {"n": 0}

    @app.agent(source)
    async def count(stream):  # noqa: ANN001, ANN202 - a Faust agent
        async for _ in stream:
            state["n"] += 1
            if state["n"] == 1:
                state["t0"] = time.perf_counter()
            elif state["n"] == n_events:
                seconds = time.perf_counter() - state["t0"]
                out.write_text(json.dumps({"events": n_events, "seconds": seconds}))

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


if __name__ == "__main__":
    main()
