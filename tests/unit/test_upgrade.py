"""The one-time upgrade of an older data dir: objects/<repo>.git/<aa>/<bb>/<oid>
become one file per oid at objects/<aa>/<bb>/<oid> plus object index rows,
restartably. tests/integration/test_upgrade.py runs it on a data dir that
the previous version's server wrote."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from lfs_server import fsck, upgrade
from lfs_server.db import IndexedObject, SQLiteDatabase
from lfs_server.settings import Settings
from tests.unit.conftest import make_settings


def oid_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def old_object(objects: Path, repo: str, data: bytes) -> Path:
    """A file where the previous version stored `data` for `repo`."""
    oid = oid_of(data)
    path = objects / f"{repo}.git" / oid[:2] / oid[2:4] / oid
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


OLD = {
    "team/a": [b"alpha", b"shared by two", b""],
    "team/b": [b"shared by two", b"beta" * 1000],
    "ab/cd": [b"a team named like a fan-out folder"],
    "ab/cd/ef/gh": [b"nested deep"],
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path / "data")
    for repo, payloads in OLD.items():
        for data in payloads:
            old_object(settings.objects_dir, repo, data)
    return settings


def expected_rows() -> set[tuple[str, str, int]]:
    return {(repo, oid_of(data), len(data)) for repo, payloads in OLD.items() for data in payloads}


def rows(settings: Settings) -> set[tuple[str, str, int]]:
    listed = SQLiteDatabase(settings.database_path).list_objects(limit=10**6)
    return {(row.repo, row.oid, row.size) for row in listed}


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


def assert_upgraded(settings: Settings) -> None:
    objects = settings.objects_dir
    oids = {oid_of(data) for payloads in OLD.values() for data in payloads}
    assert files(objects) == sorted(f"{o[:2]}/{o[2:4]}/{o}" for o in oids)
    for payloads in OLD.values():
        for data in payloads:
            oid = oid_of(data)
            assert (objects / oid[:2] / oid[2:4] / oid).read_bytes() == data
    assert rows(settings) == expected_rows()
    assert not [p for p in objects.rglob("*.git")], "an old repository folder is left"
    assert SQLiteDatabase(settings.database_path).upgrade_done(upgrade.NAME)


def test_an_old_store_is_moved_once_per_oid_into_the_index(settings: Settings) -> None:
    shared = oid_of(b"shared by two")
    mtime = (settings.objects_dir / "team/b.git" / shared[:2] / shared[2:4] / shared).stat()
    out = io.StringIO()
    done = upgrade.upgrade_store(settings, out)
    assert done is not None and (done.objects, done.shared, len(done.repos)) == (7, 1, 4)
    assert_upgraded(settings)
    index = SQLiteDatabase(settings.database_path).list_objects(repo="team/b", limit=10)
    assert IndexedObject("team/b", shared, 13, int(mtime.st_mtime)) in index
    text = out.getvalue()
    assert "upgrading the object store: 7 files" in text
    assert "upgrade done: 7 objects of 4 repositories indexed (1 shared" in text
    # Done is done: later starts do not walk the store again.
    assert upgrade.upgrade_store(settings, out) is None


def test_a_fresh_data_dir_has_nothing_to_upgrade(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "fresh")
    out = io.StringIO()
    assert upgrade.upgrade_store(settings, out) is None
    assert out.getvalue() == ""
    assert SQLiteDatabase(settings.database_path).upgrade_done(upgrade.NAME)


def test_a_differing_copy_of_an_oid_is_quarantined_not_merged(settings: Settings) -> None:
    data = b"shared by two"
    oid = oid_of(data)
    other_size = settings.objects_dir / "team/b.git" / oid[:2] / oid[2:4] / oid
    other_size.write_bytes(data + b"!")  # a copy gone bad: another size
    flipped = old_object(settings.objects_dir, "team/c", data)
    flipped.write_bytes(b"Shared by two")  # same size, other bytes
    stray = settings.objects_dir / "team/a.git" / "notes.txt"
    stray.write_text("not an object")
    out = io.StringIO()
    done = upgrade.upgrade_store(settings, out)
    assert done is not None and len(done.quarantined) == 3
    kept = settings.objects_dir / oid[:2] / oid[2:4] / oid
    assert kept.read_bytes() == data  # team/a's copy, the first one moved
    assert ("team/b", oid, len(data)) not in rows(settings)
    assert ("team/c", oid, len(data)) not in rows(settings)
    assert ("team/a", oid, len(data)) in rows(settings)
    quarantine = settings.data_dir / "quarantine"
    moved = {p.relative_to(quarantine).as_posix().rsplit(".", 1)[0] for p in quarantine.rglob("*")}
    assert f"team/b.git/{oid[:2]}/{oid[2:4]}/{oid}" in moved
    assert f"team/c.git/{oid[:2]}/{oid[2:4]}/{oid}" in moved
    assert "team/a.git/notes" in {m.rsplit(".", 1)[0] for m in moved}
    text = out.getvalue()
    assert "14 bytes, where the stored object of that oid has 13" in text
    assert "its bytes differ from the stored object of that oid" in text
    assert not [p for p in settings.objects_dir.rglob("*.git")]


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", ["index rows", "unlink"])
def test_an_upgrade_cut_short_completes_at_the_next_start(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    monkeypatch.setattr(upgrade, "BATCH", 2)
    calls = 0

    def crash_on_the_second_batch(real):
        def wrapper(*args, **kwargs):
            nonlocal calls
            calls += 1
            if calls == (2 if step == "index rows" else 3):
                raise Crash(step)
            return real(*args, **kwargs)

        return wrapper

    if step == "index rows":
        monkeypatch.setattr(
            SQLiteDatabase, "add_objects", crash_on_the_second_batch(SQLiteDatabase.add_objects)
        )
    else:
        monkeypatch.setattr(upgrade.os, "unlink", crash_on_the_second_batch(os.unlink))
    with pytest.raises(Crash):
        upgrade.upgrade_store(settings, io.StringIO())
    monkeypatch.undo()
    # Half done: some files moved and indexed, some new names linked but not
    # indexed, the rest still in the old place; nothing recorded as done.
    assert 0 < len(rows(settings)) < len(expected_rows())
    assert [p for p in settings.objects_dir.rglob("*.git")]
    assert not SQLiteDatabase(settings.database_path).upgrade_done(upgrade.NAME)
    done = upgrade.upgrade_store(settings, io.StringIO())
    assert done is not None and not done.quarantined
    assert_upgraded(settings)


def test_progress_is_shown_for_large_stores(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upgrade, "BATCH", 2)
    monkeypatch.setattr(upgrade, "PROGRESS_OBJECTS", 4)
    out = io.StringIO()
    upgrade.upgrade_store(settings, out)
    assert "lfs-server: upgrade: 4/7 files" in out.getvalue().splitlines()


def test_fsck_upgrades_first_instead_of_quarantining_old_objects(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LFS_DATA_DIR", str(settings.data_dir))
    report_out = io.StringIO()
    report = fsck.check(Settings.from_env(), progress_out=io.StringIO(), report_out=report_out)
    assert report.problems == [] and report.objects == 6
    assert_upgraded(settings)
