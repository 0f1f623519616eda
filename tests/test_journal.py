"""The journal keeps every fsync'd record and drops a torn tail, never what follows elsewhere."""

from __future__ import annotations

from pathlib import Path

from decisionloop.storage.journal import Journal, encode


def test_recovery_stops_at_a_torn_line_and_keeps_later_segments(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append([encode([0, "a"]), encode([1, "b"])], last_seq=1)
    journal.close()
    first = journal.segments[-1].path
    with first.open("ab") as handle:  # a crash in the middle of a write
        handle.write(encode([2, "c"])[:-7])
    journal = Journal(tmp_path)
    assert [row[1] for row in journal.recover()] == ["a", "b"]
    journal.abandon_segment()
    journal.append([encode([3, "d"])], last_seq=3)  # goes to a new segment
    journal.close()
    again = Journal(tmp_path)
    assert [row[1] for row in again.recover()] == ["a", "b", "d"]


def test_corrupt_line_fails_its_checksum(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append([encode([0, "a"]), encode([1, "b"])], last_seq=1)
    journal.close()
    path = journal.segments[-1].path
    path.write_bytes(path.read_bytes().replace(b'"b"', b'"x"'))
    assert [row[1] for row in Journal(tmp_path).recover()] == ["a"]


def test_release_deletes_only_loaded_closed_segments(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append([encode([0, "a"])], last_seq=0)
    journal.abandon_segment()
    journal.append([encode([1, "b"])], last_seq=1)
    assert len(journal.segments) == 2
    journal.release(loaded_seq=0)
    assert len(journal.segments) == 1
    journal.release(loaded_seq=1)  # the open segment stays
    assert [row[1] for row in Journal(tmp_path).recover()] == ["b"]
    journal.close()
