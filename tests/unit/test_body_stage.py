"""Request-body staging: which held chunks a try gets, what replay keeps, the cap's message."""

from __future__ import annotations

from gateway.proxy.body_stage import RequestBody, _human


def test_chunks_are_forgotten_once_sent_unless_they_may_be_replayed() -> None:
    held = RequestBody()
    held.chunks = [b"a", b"b"]
    assert held.unsent() == [b"a", b"b"]
    held.sent_all()
    assert held.chunks == [] and held.unsent() == []

    replayed = RequestBody()
    replayed.replay = True
    replayed.chunks = [b"a", b"b"]
    replayed.sent_all()
    replayed.chunks.append(b"c")
    assert replayed.unsent() == [b"c"]  # only what the current try has not had
    replayed.sent = 0  # a new try
    assert replayed.unsent() == [b"a", b"b", b"c"]
    assert replayed.join() == b"abc"


def test_the_cap_is_named_in_the_unit_people_set_it_in() -> None:
    assert _human(4 * 1024 * 1024) == "4 MiB"
    assert _human(1536) == "1.5 KiB"
    assert _human(999) == "999 B"
    assert _human(3 << 30) == "3 GiB"
