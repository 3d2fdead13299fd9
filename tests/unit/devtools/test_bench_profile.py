"""``coldstream bench profile``: py-spy's collapsed stacks split into stages."""

from __future__ import annotations

from devtools.bench.profile import attribute

RAW = """\
<module> (coldstream/__main__.py:3);serve_fast (stream_app/agents.py:239);search_unseen (stream_app/recommender.py:410);search (faiss/class_wrappers.py:329) 7
<module> (coldstream/__main__.py:3);handle_batch (stream_app/agents.py:528);BatchProcessor.process (stream_app/batch.py:249);validate_event (coldstream/core/events.py:301);decode (msgspec) 5
<module> (coldstream/__main__.py:3);handle_batch (stream_app/agents.py:528);BatchProcessor.process (stream_app/batch.py:249) 4
<module> (coldstream/__main__.py:3);BaseEventLoop._run_once (asyncio/base_events.py:1907);EpollSelector.select (selectors.py:468) 3
<module> (coldstream/__main__.py:3);flush (stream_app/produce.py:120);send_batch (aiokafka/producer/producer.py:552) 2
not a stack line
"""


def test_each_stack_goes_to_the_stage_nearest_its_leaf() -> None:
    got = attribute(RAW)
    assert got == {
        "FAISS search + post-filter": 7,
        "JSON decode + validation": 5,  # not the batch logic that called it
        "batch logic + online quality": 4,
        "other (event loop, Faust services)": 3,
        "produce (batches, sender, acks)": 2,
    }


RANKING = """\
<module> (coldstream/__main__.py:3);Recommender.rank_batch (stream_app/recommender.py:418);context_decorator.<locals>.decorate_context (torch/utils/_contextlib.py:116);Recommender._rank_batch (stream_app/recommender.py:460);Recommender._search (stream_app/recommender.py:477);_listed (stream_app/recommender.py:690) 6
<module> (coldstream/__main__.py:3);Recommender.rank_batch (stream_app/recommender.py:418);context_decorator.<locals>.decorate_context (torch/utils/_contextlib.py:116);Recommender._rank_batch (stream_app/recommender.py:434) 4
<module> (coldstream/__main__.py:3);Recommender.rank_batch (stream_app/recommender.py:418);context_decorator.<locals>.decorate_context (torch/utils/_contextlib.py:116);context_decorator.<locals>.decorate_context (torch/utils/_contextlib.py:115) 1
<module> (coldstream/__main__.py:3);Recommender.rank_batch (stream_app/recommender.py:418);context_decorator.<locals>.decorate_context (torch/utils/_contextlib.py:116);Recommender._rank_batch (stream_app/recommender.py:451);NumpyEncoder.encode (coldstream/core/student.py:291) 3
<module> (coldstream/__main__.py:3);Recommender._search (stream_app/recommender.py:476);search_unseen (stream_app/recommender.py:556);_take (stream_app/recommender.py:607) 2
"""


def test_the_ranking_own_python_is_not_the_student() -> None:
    # torch's inference_mode decorator wraps the ranking: a sample in the ranking's own
    # Python (history rows, result lists) passes through it to the recommender, and only
    # the encoder's frames are the student's; the seen-item filter is the search's
    got = attribute(RANKING)
    assert got == {
        "ranking: history rows, result lists": 11,
        "student forward": 3,
        "FAISS search + post-filter": 2,
    }
