"""The check-only batch on Ray Data: a real local Ray (the machine's 2 CPUs, 2 actors) over dev
photos gives the verdicts and boxes of `check`, the local batch's report byte for byte, an
`unreadable` record for bad bytes, and a rerun that checks nothing again."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, EMO_PREP, labels

pytest.importorskip("ray", reason="the Ray engine needs the extra: pip install -e '.[test,ray]'")

from pipeline.raybatch import PhotoChecker, list_photos  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Twelve dev photos (six passes, six rejects) and a file of bytes named like a photo."""
    rows = labels(DATA)
    chosen = [r for r in rows if r["expected"] == "pass"][:6] + [r for r in rows if r["expected"] != "pass"][:6]
    folder = tmp_path_factory.mktemp("photos")
    for row in chosen:
        shutil.copy2(DATA / row["file"], folder / row["file"])
    (folder / "sub").mkdir()
    (folder / "sub" / "bad.jpg").write_bytes(bytes(range(256)) * 20)
    return folder


def _batch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EMO_PREP, "batch", *args], capture_output=True, text=True, timeout=600)


def test_ray_batch_matches_check_and_the_local_batch_and_reruns_skip(photos, tmp_path, checker):
    ray_out, local_out = tmp_path / "ray", tmp_path / "local"
    proc = _batch(str(photos), "--engine", "ray", "--workers", "2", "--out", str(ray_out))
    assert proc.returncode == 1, proc.stderr  # some dev photos are rejects
    assert "ray: checking 13 photo(s) with 2 actor(s) on a local Ray" in proc.stderr
    assert "Traceback" not in proc.stderr
    records = {r["source"]: r for r in map(json.loads, (ray_out / "report.jsonl").read_text().splitlines())}
    assert len(records) == 13
    bad = records.pop(str(photos / "sub" / "bad.jpg"))
    assert bad["ok"] is False and bad["findings"][0]["code"] == "unreadable"
    for source, record in records.items():
        report = checker.check(source).to_dict()
        assert (record["ok"], record.get("face_bbox"), record.get("ext_bbox")) == (
            report["ok"], report.get("face_bbox"), report.get("ext_bbox")), source
        assert [f["code"] for f in record["findings"]] == [f["code"] for f in report["findings"]]
    assert len(list((ray_out / "thumbs").iterdir())) == 13 and (ray_out / "report.html").is_file()

    local = _batch(str(photos), "--workers", "2", "--out", str(local_out))
    assert local.returncode == 1
    assert (ray_out / "report.jsonl").read_bytes() == (local_out / "report.jsonl").read_bytes()
    assert proc.stdout.split(";")[0] == local.stdout.split(";")[0]  # "13 photos: N passed, M rejected (...)"

    again = _batch(str(photos), "--engine", "ray", "--workers", "2", "--out", str(ray_out))
    assert again.returncode == 1 and "13 photo(s) already checked" in again.stderr
    assert "ray: checking" not in again.stderr  # nothing left to check: Ray is not even started
    assert (ray_out / "report.jsonl").read_bytes() == (local_out / "report.jsonl").read_bytes()


def test_ray_engine_is_check_only_and_address_needs_it(photos, tmp_path):
    refused = _batch(str(photos), "--engine", "ray", "--submit", "--out", str(tmp_path / "o"))
    assert refused.returncode == 2 and "--engine ray only checks" in refused.stderr
    assert _batch(str(photos), "--address", "127.0.0.1:6379").returncode == 2


def test_uri_listing_and_the_actor_read_through_pyarrow(photos, checker):
    """The actor class itself (no Ray needed): file:// URIs are listed and read by pyarrow."""
    uris = list_photos(f"file://{photos}")
    assert uris == sorted(f"file://{p}" for p in photos.rglob("*.jpg"))
    actor = PhotoChecker()
    out = actor({"index": [0, 1], "photo": [uris[0], uris[-1]], "ratio": ["1:1", "3:4"]})
    first, last = (json.loads(r) for r in out["report"])
    local = checker.check(uris[0].removeprefix("file://")).to_dict()
    assert first["source"] == uris[0] and (first["ok"], first.get("ext_bbox")) == (local["ok"], local.get("ext_bbox"))
    assert last["ratio"] == "3:4" and out["thumb"][0][:2] == b"\xff\xd8"
    missing = actor({"index": [0], "photo": [f"file://{photos}/gone.jpg"], "ratio": ["1:1"]})
    assert json.loads(missing["report"][0])["findings"][0]["code"] == "unreadable"
    with pytest.raises(Exception, match="no such file or folder"):
        list_photos(f"file://{photos}/nowhere")


CRASHING_ACTOR = """
import os, sys
from pipeline.batch import BatchOptions
from pipeline.raybatch import PhotoChecker, run_ray_batch


class Crashing(PhotoChecker):
    '''Ends its process, as a crash in native code would, on a photo named poison.'''

    def __call__(self, batch):
        if any("poison" in str(p) for p in batch["photo"]):
            os._exit(3)
        return super().__call__(batch)


summary = run_ray_batch(BatchOptions(input=sys.argv[1], out=sys.argv[2]), workers=2, actor=Crashing)
print(summary.jobs, summary.passed, summary.rejected)
"""


def test_a_photo_that_kills_its_actor_becomes_unreadable_and_the_run_goes_on(photos, tmp_path, checker):
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted(photos.glob("*.jpg"))[:2]
    for path in good:
        shutil.copy2(path, folder / path.name)
    (folder / "poison.jpg").write_bytes(good[0].read_bytes() + b"another file")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", CRASHING_ACTOR, str(folder), str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    passed = sum(checker.check(str(path)).ok for path in good)
    assert proc.stdout.split() == ["3", str(passed), str(3 - passed)]  # stdout holds only the data
    records = {Path(r["source"]).name: r for r in map(json.loads, (out / "report.jsonl").read_text().splitlines())}
    poison = records.pop("poison.jpg")["findings"][0]
    assert poison["code"] == "unreadable" and "ended the worker process" in poison["message"]
    for path in good:  # the photos that shared the crashing batch were checked again, one by one
        assert records[path.name]["ok"] == checker.check(str(path)).ok
