"""`qflow_node.appendlog`: framed entries in one file, whole or not there."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from qflow_node.appendlog import FRAME, MAGIC, AppendLog, LogFormatError, frame, parse, scan

PAYLOADS = [b"first", b"x", b"third entry", bytes(range(256))]


def written(path: Path, batches: list[list[bytes]]) -> list[list[int]]:
    log = AppendLog.open(path)
    try:
        return [log.append(batch) for batch in batches]
    finally:
        log.close()


def test_entries_round_trip_and_offsets_point_at_the_payloads(tmp_path: Path) -> None:
    path = tmp_path / "log"
    offsets = written(path, [PAYLOADS[:1], PAYLOADS[1:]])
    data = path.read_bytes()
    assert data.startswith(MAGIC)
    flat = [offset for batch in offsets for offset in batch]
    assert [data[o : o + len(p)] for o, p in zip(flat, PAYLOADS, strict=True)] == PAYLOADS
    entries, end = scan(path)
    assert entries == list(zip(flat, PAYLOADS, strict=True))
    assert end == len(data) == len(MAGIC) + sum(FRAME.size + len(p) for p in PAYLOADS)
    # Reopened: appends go after the existing entries.
    more = written(path, [[b"later"]])
    assert scan(path)[0] == [*entries, (more[0][0], b"later")]


def test_a_missing_or_empty_file_is_an_empty_log(tmp_path: Path) -> None:
    assert scan(tmp_path / "absent") == ([], 0)
    (tmp_path / "empty").write_bytes(b"")
    assert scan(tmp_path / "empty") == ([], 0)
    log = AppendLog.open(tmp_path / "new")
    log.close()
    assert (tmp_path / "new").read_bytes() == MAGIC
    assert scan(tmp_path / "new") == ([], len(MAGIC))


def torn(whole: bytes, kind: str) -> bytes:
    """`whole` (a log) followed by a last entry torn as a crash leaves it."""
    last = frame(b"the torn batch")
    if kind == "short frame":
        return whole + last[: FRAME.size - 3]
    if kind == "cut payload":
        return whole + last[:-4]
    if kind == "bad crc":
        return whole + last[:-1] + b"?"
    if kind == "huge length":
        return whole + FRAME.pack(2**31, 0) + b"x" * 16
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["short frame", "cut payload", "bad crc", "huge length"])
def test_a_torn_tail_is_not_an_entry_and_the_writer_cuts_it_off(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "log"
    written(path, [PAYLOADS])
    whole = path.read_bytes()
    path.write_bytes(torn(whole, kind))
    entries, end = scan(path)
    assert [payload for _, payload in entries] == PAYLOADS and end == len(whole)

    log = AppendLog.open(path)
    assert path.read_bytes() == whole  # cut off before anything is appended
    (offset,) = log.append([b"after"])
    log.close()
    assert offset == len(whole) + FRAME.size
    assert [payload for _, payload in scan(path)[0]] == [*PAYLOADS, b"after"]


def test_the_caller_may_pass_the_end_it_scanned(tmp_path: Path) -> None:
    path = tmp_path / "log"
    written(path, [PAYLOADS])
    whole = path.read_bytes()
    path.write_bytes(torn(whole, "cut payload"))
    _, end = scan(path)
    log = AppendLog.open(path, end)
    assert log.size == end == len(whole) and path.read_bytes() == whole
    log.close()


@pytest.mark.parametrize("cut", range(1, len(MAGIC)))
def test_a_torn_header_is_an_empty_log_written_again(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "log"
    path.write_bytes(MAGIC[:cut])
    assert scan(path) == ([], 0)
    offsets = written(path, [[b"one"]])
    assert path.read_bytes() == MAGIC + frame(b"one")
    assert scan(path)[0] == [(offsets[0][0], b"one")]


@pytest.mark.parametrize("data", [b"QFLOG\x00\x02\n", b"not a log at all", b"X"])
def test_a_wrong_header_is_a_format_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "log"
    path.write_bytes(data + frame(b"entry"))
    with pytest.raises(LogFormatError, match="bad header"):
        scan(path)
    with pytest.raises(LogFormatError):
        AppendLog.open(path)
    assert path.read_bytes() == data + frame(b"entry")  # left as it was


def test_frames_are_length_crc_payload() -> None:
    payload = b"payload"
    assert frame(payload) == FRAME.pack(len(payload), zlib.crc32(payload)) + payload
    assert parse(Path("x"), MAGIC + frame(payload)) == ([(len(MAGIC) + FRAME.size, payload)], 23)


def test_a_failed_sync_cuts_the_batch_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "log"
    log = AppendLog.open(path)
    log.append([b"kept"])
    size = log.size

    def fail(fd: int) -> None:
        raise OSError("I/O error")

    monkeypatch.setattr("qflow_node.appendlog.os.fdatasync", fail)
    with pytest.raises(OSError, match="I/O error"):
        log.append([b"lost"])
    monkeypatch.undo()
    assert log.size == size and path.stat().st_size == size
    log.append([b"next"])
    log.close()
    assert [payload for _, payload in scan(path)[0]] == [b"kept", b"next"]


def test_an_empty_entry_is_refused_and_zeros_are_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = AppendLog.open(path)
    log.append([b"kept"])
    with pytest.raises(ValueError, match="empty entry"):
        log.append([b"ok", b""])
    assert scan(path)[0] == [(16, b"kept")]
    with path.open("ab") as fh:  # a crash left zero-filled pages after the last entry
        fh.write(bytes(64))
    entries, end = scan(path)
    assert [payload for _, payload in entries] == [b"kept"]
    assert end == 16 + 4
    log.close()
    reopened = AppendLog.open(path)
    assert path.stat().st_size == end
    reopened.append([b"next"])
    assert [payload for _, payload in scan(path)[0]] == [b"kept", b"next"]
    reopened.close()


def test_an_entry_damaged_in_place_is_skipped_and_the_rest_still_read(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = AppendLog.open(path)
    offsets = log.append([b"first", b"second", b"third"])
    log.close()
    data = bytearray(path.read_bytes())
    data[offsets[1] + 2] ^= 0x01  # bit rot inside the second payload
    path.write_bytes(bytes(data))
    entries, end = scan(path)
    assert [payload for _, payload in entries] == [b"first", b"third"]
    assert end == len(data)  # nothing to cut: the writer keeps the third entry
    again = AppendLog.open(path)
    assert path.stat().st_size == len(data)
    again.append([b"fourth"])
    assert [payload for _, payload in scan(path)[0]] == [b"first", b"third", b"fourth"]
    again.close()
