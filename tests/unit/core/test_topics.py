"""kafka/topics.yaml and its loader (coldstream/core/topics.py); no broker."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from coldstream.core import topics as topics_mod
from coldstream.core.topics import TopicsError, find_topics_file, load_topics, prefixed, topic_names

# The topic table of shared/DESIGN.md: name -> (key field, value fields)
DESIGN = {
    "clicks": ("user_id", {"event_id", "user_id", "item_id", "ts"}),
    "purchases": ("user_id", {"event_id", "user_id", "item_id", "ts", "price", "quantity"}),
    "items": ("item_id", {"item_id", "title", "description", "category", "ts"}),
    "recommendations": (
        "user_id",
        {
            "event_id",
            "user_id",
            "items",
            "model_version",
            "cold_start",
            "produced_at",
            "latency_ms",
        },
    ),
    # + the Ed25519 control plane (coldstream/core/signing.py): the key id of the signature,
    # and the store pointer's sequence number that makes replays skippable and rollbacks work
    "model-updates": (
        None,
        {"version", "seq", "uri", "sha256", "created_at", "metrics", "key_id", "signature"},
    ),
    "item-vectors": ("item_id", {"item_id", "model_version", "vector", "key_id", "signature"}),
    "events-dlq": (None, {"source_topic", "partition", "offset", "error", "payload"}),
}

#: Topics coldstream adds to DESIGN.md's, with why (the design names its topics; these are
#: additions, not renames).
ADDED = {
    # deletion requests on their own topic, so that only the privacy service's principal can
    # write them (an ACL); on the event topics any producer could forget any user
    "forget-requests": ("user_id", {"event_id", "user_id", "ts"}),
}


VALID = """\
version: 1
topics:
  a:
    partitions: 2
    replication_factor: 1
    configs: {cleanup.policy: compact, retention.ms: 1000, preallocate: true}
    key: id
    value: {format: json, fields: {id: string, note: "string?"}}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "topics.yaml"
    p.write_text(text)
    return p


def test_file_is_found_in_the_source_tree() -> None:
    assert (
        find_topics_file()
        == Path(topics_mod.__file__).resolve().parents[2] / "kafka" / "topics.yaml"
    )


def test_all_design_topics_with_keys_and_fields() -> None:
    specs = load_topics()
    assert [n for n in specs if n not in ADDED] == list(DESIGN)
    for name, (key, fields) in {**DESIGN, **ADDED}.items():
        spec = specs[name]
        assert spec.name == name
        assert spec.key == key, name
        declared = set(spec.value.field_names())
        assert fields <= declared, (name, fields - declared)
        extra = declared - fields  # e.g. the optional context of clicks
        assert extra <= set(spec.value.field_names()) - set(
            spec.value.field_names(required_only=True)
        )
        assert spec.value.format == "json"
        assert spec.description


def test_optional_fields_are_marked() -> None:
    purchases = {f.name: f for f in load_topics()["purchases"].value.fields}
    assert not purchases["price"].required and not purchases["quantity"].required
    assert purchases["event_id"].required and purchases["event_id"].type == "string"


def test_partitions_and_replication() -> None:
    specs = load_topics()
    for name in ("clicks", "purchases", "recommendations", "events-dlq", "items", "item-vectors"):
        assert specs[name].partitions == 6, name
    assert specs["model-updates"].partitions == 1  # versions stay in order
    assert all(s.replication_factor >= 1 for s in specs.values())


def test_compaction_only_on_items_and_item_vectors() -> None:
    specs = load_topics()
    compacted = {name for name, s in specs.items() if s.compacted}
    assert compacted == {"items", "item-vectors"}
    for name in set(specs) - compacted:
        assert specs[name].configs["cleanup.policy"] == "delete"
        assert int(specs[name].configs["retention.ms"]) > 0


def test_specs_are_frozen() -> None:
    spec = load_topics()["clicks"]
    with pytest.raises(AttributeError):
        spec.partitions = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.configs["cleanup.policy"] = "compact"  # type: ignore[index]


def test_prefixing() -> None:
    names = topic_names("t-1a2b-")
    assert names["clicks"] == "t-1a2b-clicks"
    assert names["model-updates"] == "t-1a2b-model-updates"
    assert set(names) == set(DESIGN) | set(ADDED)
    assert topic_names() == {n: n for n in {**DESIGN, **ADDED}}
    specs = prefixed(None, "x-")
    assert specs["items"].name == "x-items" and specs["items"].compacted
    assert specs["items"].partitions == load_topics()["items"].partitions


def test_illegal_prefix_is_refused() -> None:
    with pytest.raises(TopicsError, match="illegal"):
        topic_names("bad prefix/")
    with pytest.raises(TopicsError, match="illegal"):
        topic_names("x" * 250)


def test_new_topic_override_caps_min_insync_replicas() -> None:
    spec = load_topics()["clicks"]
    assert int(spec.configs["min.insync.replicas"]) > 1
    nt = spec.new_topic(replication_factor=1)
    assert nt.replication_factor == 1 and nt.num_partitions == 6
    assert nt.topic_configs["min.insync.replicas"] == "1"
    assert nt.topic_configs["cleanup.policy"] == "delete"
    assert spec.new_topic().replication_factor == spec.replication_factor


def test_config_scalars_become_strings(tmp_path: Path) -> None:
    spec = load_topics(write(tmp_path, VALID))["a"]
    assert dict(spec.configs) == {
        "cleanup.policy": "compact",
        "retention.ms": "1000",
        "preallocate": "true",
    }
    assert spec.value.field_names(required_only=True) == ("id",)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (VALID.replace("partitions: 2", "partitions: 0"), "positive integer"),
        (VALID.replace("key: id", "key: nope"), "key 'nope'"),
        (VALID.replace("key: id", "key: note"), "key 'note'"),  # optional field as key
        (VALID.replace("    key: id\n", "    key: id\n    retention: 1\n"), "unknown keys"),
        (VALID.replace("format: json", "format: avro"), "format"),
        (VALID.replace("  a:\n", "  'bad name':\n"), "illegal"),
        (VALID.replace("version: 1", "version: 2"), "version"),
        (VALID + "  a:\n    partitions: 1\n", "duplicate key 'a'"),
        ("topics: [", "not valid YAML"),
    ],
)
def test_invalid_files_are_refused(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(TopicsError, match=match):
        load_topics(write(tmp_path, text))


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(TopicsError, match="not found"):
        load_topics(tmp_path / "nope.yaml")


def test_installed_copy_under_sys_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed = tmp_path / "share" / "coldstream" / "kafka" / "topics.yaml"
    installed.parent.mkdir(parents=True)
    shutil.copy(find_topics_file(), installed)
    monkeypatch.setattr(topics_mod, "TOPICS_FILE", Path("no-such-dir") / "topics.yaml")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert find_topics_file() == installed
    assert list(load_topics()) == list(DESIGN)[:2] + list(ADDED) + list(DESIGN)[2:]
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(topics_mod.site, "getuserbase", lambda: str(tmp_path / "nobody"))
    with pytest.raises(TopicsError, match="share/coldstream/kafka/topics.yaml"):
        find_topics_file()
