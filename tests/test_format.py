"""How names, paths and process names become text: one rule for labels, JSON and terminals."""

from __future__ import annotations

import json

from pysockopt._format import escape, for_json, label, printable


def test_undecodable_bytes_are_written_as_x_escapes_everywhere() -> None:
    # Issue 19 item 1: a name with a non-UTF-8 byte (os.fsdecode keeps it as a surrogate)
    # crashed prometheus_client and put a lone surrogate into JSON.
    name = b"t3s-odd\xff".decode("utf-8", "surrogateescape")
    assert escape(name) == escape(b"t3s-odd\xff") == "t3s-odd\\xff"
    assert printable(name) == "t3s-odd\\xff"
    assert label(name) == "t3s-odd\\xff"
    text = json.dumps(for_json({"name": name, name: [name, 1, None]}), ensure_ascii=False)
    text.encode("utf-8")  # valid UTF-8: no lone surrogate left
    assert json.loads(text) == {"name": "t3s-odd\\xff", "t3s-odd\\xff": ["t3s-odd\\xff", 1, None]}


def test_backslashes_are_escaped_so_no_two_names_read_alike() -> None:
    # Issue 19 item 8: a literal backslash-t printed like a tab, and a name spelled with a
    # backslash could read like an escaped byte.
    assert printable("a\\tb") == "a\\\\tb" != printable("a\tb") == "a\\tb"
    assert escape("odd\\xff") != escape(b"odd\xff")
    assert escape("plain name") == "plain name" and printable("ünïcode") == "ünïcode"


def test_labels_never_take_a_reserved_spelling() -> None:
    def reserved(t: str) -> bool:
        return t == "other"

    assert label("other", reserved) == "\\x6fther" != label("\\x6fther", reserved)
    assert label("others", reserved) == "others"
