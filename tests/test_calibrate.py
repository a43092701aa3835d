"""Geometry files and `emo-prep calibrate`: against a sandbox whose box rules differ from ours in
every parameter, calibration on dev passes must recover them, and `check --geometry` must then
give the sandbox's boxes on other photos. Real CLI runs, a real sandbox process, real photos."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from pathlib import Path

import httpx
import pytest
from conftest import DATA, DATA34, EMO_PREP, SAMPLES, labels

from pipeline import CheckConfig, Checker
from pipeline.boxes import iou
from pipeline.calibrate import Observation, calibrate, fit_geometry, predict_boxes
from pipeline.client import EmoClient, RetryPolicy
from pipeline.errors import GeometryError
from pipeline.geometry import DEFAULT_GEOMETRY, Geometry, crop_box, face_box, load_geometry, service_face
from pipeline.serve.sandbox import Sandbox, SandboxOptions

KEY = "sk-calibrate-test"
#: The "service": different from the defaults in every parameter.
FOREIGN = {"face": {"scale": 1.12, "dx": 0.04, "dy": -0.06}, "1:1": {"scale": 2.2, "shift_up": 0.08},
           "3:4": {"width": 3.0, "face_top": 0.10}}
FAST = RetryPolicy(max_retries=2, initial_s=0.01, max_s=0.05)


def _passes_11() -> list[Path]:
    return [DATA / r["file"] for r in labels(DATA) if r["expected"] == "pass"]


def _passes_34() -> list[Path]:
    return [DATA34 / r["file"] for r in labels(DATA34) if r["expected_34"]["expected"] == "pass"]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """`emo-prep sandbox --detect-geometry FOREIGN` as a real process; yields (api_base, dir)."""
    folder = tmp_path_factory.mktemp("calibrate")
    (folder / "foreign.json").write_text(json.dumps(FOREIGN))
    with subprocess.Popen([EMO_PREP, "sandbox", "--port", "0", "--api-key", KEY, "--detect-geometry",
                           str(folder / "foreign.json")], stderr=subprocess.PIPE, text=True) as proc:
        try:
            line = proc.stderr.readline()
            assert "DASHSCOPE_HTTP_BASE_URL=" in line, line
            yield line.split("DASHSCOPE_HTTP_BASE_URL=")[1].strip(), folder
        finally:
            proc.terminate()
            assert proc.wait(timeout=15) == 0


def _run(*args: str, base: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "DASHSCOPE_HTTP_BASE_URL": base, "DASHSCOPE_API_KEY": KEY}
    return subprocess.run([EMO_PREP, *args], capture_output=True, text=True, timeout=300, env=environ,
                          stdin=subprocess.DEVNULL)


def _uploads(base: str) -> int:
    records = httpx.get(base.removesuffix("/api/v1") + "/sandbox/records", headers={"Authorization": f"Bearer {KEY}"})
    return records.json()["uploads"]


def _service_boxes(base: str, photo: Path, ratio: str) -> tuple[list[int], list[int]]:
    with EmoClient(api_key=KEY, base_url=base, retry=FAST) as client:
        url = client.upload(photo, model="emo-detect-v1")
        out = client.face_detect(url, ratio=ratio).output
    return out.face_bbox, out.ext_bbox


def test_calibration_recovers_a_foreign_geometry_and_check_then_gives_its_boxes(service):
    base, folder = service
    geo = folder / "geometry.json"
    passes_11, passes_34 = _passes_11(), _passes_34()
    fit_11, other_11 = passes_11[:12], passes_11[12:]
    fit_34, other_34 = passes_34[:3], passes_34[3:]

    one = _run("calibrate", "--ratio", "1:1", "--samples", "6", "--yes", "-o", str(geo), *map(str, fit_11), base=base)
    assert one.returncode == 0, one.stderr + one.stdout
    assert "Traceback" not in one.stderr and KEY not in one.stdout + one.stderr
    assert "spent CNY 0.024" in one.stdout and "NOT DETERMINED" not in one.stdout
    ious = [line.split("IoU face ")[1] for line in one.stdout.splitlines() if "IoU face" in line]
    assert len(ious) == 6
    for text in ious:  # "0.796 -> 0.995, ext 0.954 -> 1.000": the default rule is not the sandbox's
        face_before, face_after = float(text.split()[0]), float(text.split()[2].rstrip(","))
        assert face_before < 0.9 and face_after >= 0.98, text
    after_11 = load_geometry(geo).to_dict()
    for section in ("face", "1:1"):
        for key, want in FOREIGN[section].items():
            assert abs(after_11[section][key] - want) <= 0.03, (section, key, after_11[section][key])
    assert after_11["3:4"] == DEFAULT_GEOMETRY.to_dict()["3:4"]  # not asked about: kept

    three = _run("calibrate", "--ratio", "3:4", "--yes", "-o", str(geo), *map(str, fit_34), base=base)
    assert three.returncode == 0, three.stderr + three.stdout
    merged = load_geometry(geo).to_dict()
    assert merged["1:1"] == after_11["1:1"]  # merged into the file, not overwritten
    for section in ("face", "3:4"):
        for key, want in FOREIGN[section].items():
            assert abs(merged[section][key] - want) <= 0.03, (section, key, merged[section][key])

    # the record: one line per answer plus the fit, and the canvas copies that were sent
    records = sorted((folder / "geometry.json.record").glob("1x1-*.jsonl"))
    lines = [json.loads(line) for line in records[-1].read_text().splitlines()]
    assert len(lines) == 7 and "fit" in lines[-1]
    for line in lines[:-1]:
        assert line["answer"]["output"]["check_pass"] is True
        if line["sent"]["canvas"]:
            copy = folder / "geometry.json.record" / line["sent"]["copy"]
            assert hashlib.sha256(copy.read_bytes()).hexdigest() == line["sent"]["sha256"]
    assert sum(bool(line["sent"]["canvas"]) for line in lines[:-1]) >= 4  # most dev passes touch an edge

    # check --geometry on photos calibration never saw gives the service's boxes
    sha = hashlib.sha256(geo.read_bytes()).hexdigest()
    for ratio, photos in (("1:1", other_11), ("3:4", other_34)):
        proc = _run("check", "--json", "--ratio", ratio, "--geometry", str(geo), *map(str, photos), base=base)
        assert proc.returncode == 0, proc.stdout
        for line in proc.stdout.splitlines():
            ours = json.loads(line)
            assert ours["geometry"] == {"source": str(geo), "sha256": sha}
            face, ext = _service_boxes(base, Path(ours["source"]), ratio)
            assert iou(ours["face_bbox"], face) >= 0.98 and iou(ours["ext_bbox"], ext) >= 0.98, (ours, face, ext)


def test_cost_cap_stops_before_the_limit_and_nothing_is_spent_unasked(service):
    base, folder = service
    photos = list(map(str, _passes_11()[:3]))
    start = _uploads(base)
    capped = _run("calibrate", "--ratio", "1:1", "--samples", "3", "--max-cost", "0.01", "--yes",
                  "-o", str(folder / "capped.json"), *photos, base=base)
    assert capped.returncode == 1, capped.stderr
    assert "spent CNY 0.008; stopped by --max-cost" in capped.stdout
    assert _uploads(base) == start + 2  # 2 x 0.004 <= 0.01 < 3 x 0.004
    assert "2 photos to send" in capped.stderr

    nothing = _run("calibrate", "--ratio", "1:1", "--max-cost", "0.003", "--yes", "-o", str(folder / "none.json"),
                   *photos, base=base)
    assert nothing.returncode == 2 and "buys no emo-detect call" in nothing.stderr
    unasked = _run("calibrate", "--ratio", "1:1", "-o", str(folder / "unasked.json"), photos[0], base=base)
    assert unasked.returncode == 2 and "pass --yes" in unasked.stderr
    assert _uploads(base) == start + 2
    assert not (folder / "none.json").exists() and not (folder / "unasked.json").exists()


def test_a_service_refusal_is_reported_as_a_verdict_mismatch(tmp_path):
    photos = list(map(str, _passes_11()[1:2]))
    # a "service" whose face box is 5 times ours: on this photo no ext box holds it, and it says
    # BodyProportion
    with Sandbox(SandboxOptions(api_key=KEY, detect_geometry=Geometry(face_scale=5.0))) as sandbox, \
            EmoClient(api_key=KEY, base_url=sandbox.api_base, retry=FAST) as client:
        result = calibrate(photos, ratio="1:1", output=tmp_path / "g.json", client=client)
    assert result.fit is None and not (tmp_path / "g.json").exists()
    assert [a.rejection.code for a in result.answers] == ["InvalidFile.BodyProportion"]
    assert result.spent_cny == 0.004
    lines = [json.loads(line) for line in Path(result.record).read_text().splitlines()]
    assert [line["answer"]["check_pass"] for line in lines] == [False]


# --- the fit alone ----------------------------------------------------------------------------

def _observe(truth: Geometry, detector, size, ratio):
    face = service_face(detector, truth)
    return Observation(detector, size, face_box(face, size), crop_box(face, size, ratio, floor=1.0, geometry=truth))


def test_fit_models_shifted_and_shrunk_boxes_and_names_what_it_cannot_determine():
    truth = Geometry(face_scale=1.12, face_dx=0.04, face_dy=-0.06, scale_11=2.2, shift_up_11=0.08)
    free = [_observe(truth, (x, y, x + s, y + s * 1.05), (3000, 3000), "1:1")
            for x, y, s in ((1000, 1100, 300), (1400, 1300, 420), (900, 1500, 260), (1200, 1000, 350))]
    held = [_observe(truth, (300, 40, 700, 460), (1000, 1300), "1:1"),  # at the top
            _observe(truth, (300, 300, 700, 720), (1000, 1000), "1:1")]  # shrunk to the image
    assert held[0].ext_bbox[1] == 0 and held[1].ext_bbox == (0, 0, 1000, 1000)
    fit = fit_geometry(free + held, "1:1")
    got = fit.geometry
    for name in ("face_scale", "face_dx", "face_dy", "scale_11", "shift_up_11"):
        assert abs(getattr(got, name) - getattr(truth, name)) <= 0.01, name
    assert fit.undetermined == () and fit.rms_px < 1.5
    # a raw-edge fit would read the clamped boxes as the rule; ours predicts them exactly
    for obs in held:
        assert iou(predict_boxes(obs, "1:1", got)[1], obs.ext_bbox) > 0.99

    only_shrunk = fit_geometry(held[1:], "1:1")
    size = next(p for p in only_shrunk.params if p.name == "scale_11")
    assert not size.determined and only_shrunk.undetermined == ("scale_11", "shift_up_11")
    assert size.lower is not None and size.value == max(DEFAULT_GEOMETRY.scale_11, size.lower)


# --- geometry files ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,message", [
    ('{"1:1": {"scale": -2.5}}', "1:1.scale must be a number from 1 to 10, got -2.5"),
    ('{"face": {"scale": 0}}', "face.scale must be a number from 0.2 to 5, got 0.0"),
    ('{"4:3": {"width": 3.0}}', "unknown section '4:3'"),
    ('{"1:1": 2.5}', "section '1:1' must be an object"),
    ('{"1:1": null}', "section '1:1' must be an object"),
    ('{"3:4": {"height": 4.0}}', "unknown key 3:4.height"),
    ('{"1:1": {"scale": "2.5"}}', "1:1.scale must be a number, got '2.5'"),
    ('{"1:1": {"scale": true}}', "1:1.scale must be a number, got True"),
    ('[2.5, 0.15]', "expected a JSON object, got list"),
    ('{"1:1": {"scale": 2.5,}', "is not JSON"),
    ("", "is not JSON"),
])
def test_bad_geometry_files_get_a_clear_error(tmp_path, text, message):
    path = tmp_path / "g.json"
    path.write_text(text)
    with pytest.raises(GeometryError, match="geometry file") as caught:
        load_geometry(path)
    assert message in str(caught.value) and caught.value.hint


def test_a_geometry_file_overrides_only_what_it_names(tmp_path):
    path = tmp_path / "g.json"
    path.write_text('{"1:1": {"shift_up": 0.1}, "face": {}}')
    geometry = load_geometry(path)
    assert geometry.shift_up_11 == 0.1 and geometry.scale_11 == 2.5 and geometry.width_34 == 3.4
    assert geometry.describe() == {"source": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    with pytest.raises(GeometryError, match="No such file"):
        load_geometry(tmp_path / "missing.json")


def test_cli_commands_refuse_a_bad_geometry_file_in_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"1:1": {"scale": -1}}')
    photo, audio = str(SAMPLES / "astronaut.png"), str(SAMPLES / "speech.wav")
    for args, env in ((["check", "--geometry", str(bad), photo], {}),
                      (["check", photo], {"EMO_PREP_GEOMETRY": str(bad)}),
                      (["submit", "--dry-run", "--geometry", str(bad), photo, audio], {}),
                      (["batch", "--geometry", str(bad), "--out", str(tmp_path / "b"), str(SAMPLES)], {}),
                      (["sandbox", "--port", "0", "--detect-geometry", str(bad)], {})):
        proc = subprocess.run([EMO_PREP, *args], capture_output=True, text=True, timeout=120,
                              env={**os.environ, **env})
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.splitlines() == [f"Error: geometry file {bad}: 1:1.scale must be a number from 1 to 10, "
                                            f"got -1.0 (hint: fix the value, or delete the key to keep the default "
                                            f"(emo-prep calibrate writes a valid file))"], (args, proc.stderr)


def test_python_checker_and_config_take_a_geometry(tmp_path, monkeypatch):
    geometry = Geometry(face_scale=1.1, face_dy=-0.05, scale_11=2.2)
    path = tmp_path / "g.json"
    path.write_text(json.dumps(geometry.to_dict()))
    photo = SAMPLES / "astronaut.png"
    with Checker(CheckConfig(geometry=geometry)) as by_config, Checker(geometry=str(path)) as by_file:
        a, b = by_config.check(photo), by_file.check(photo)
    monkeypatch.setenv("EMO_PREP_GEOMETRY", str(path))
    with Checker() as by_env:
        c = by_env.check(photo)
    face = service_face(a.detector_xyxy, geometry)
    assert a.face_bbox == b.face_bbox == c.face_bbox == face_box(face, (512, 512))
    assert a.ext_bbox == b.ext_bbox == crop_box(face, (512, 512), geometry=geometry)
    assert a.to_dict()["geometry"] == {"source": "custom", "values": geometry.to_dict()}
    assert b.to_dict()["geometry"]["source"] == str(path) == c.to_dict()["geometry"]["source"]


def test_batch_checks_with_the_geometry_and_says_when_a_rerun_would_not(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "astronaut.png").write_bytes((SAMPLES / "astronaut.png").read_bytes())
    geo = tmp_path / "g.json"
    geo.write_text(json.dumps(FOREIGN))

    def batch(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([EMO_PREP, "batch", str(photos), "--workers", "1", "--out", str(tmp_path / "out"),
                               *extra], capture_output=True, text=True, timeout=300)

    first = batch("--geometry", str(geo))
    assert first.returncode == 0, first.stderr
    record = json.loads((tmp_path / "out" / "report.jsonl").read_text().splitlines()[0])
    assert record["geometry"] == {"source": str(geo), "sha256": hashlib.sha256(geo.read_bytes()).hexdigest()}
    checked = subprocess.run([EMO_PREP, "check", "--json", "--geometry", str(geo), str(photos / "astronaut.png")],
                             capture_output=True, text=True, timeout=120)
    assert json.loads(checked.stdout)["ext_bbox"] == record["ext_bbox"]
    again = batch()  # the default geometry now: the photo is not checked again, and we are told
    assert "1 photos were checked in an earlier run with another geometry" in again.stderr


def test_a_service_error_after_some_answers_keeps_and_fits_what_was_paid_for(tmp_path):
    def faults(seed: int) -> list[bool]:  # the sandbox's draws: one per API call, a fault below 0.5
        draws = random.Random(seed)
        return [draws.random() < 0.5 for _ in range(3)]

    # a seed whose first photo gets through (upload policy, face-detect) and whose second photo's
    # policy call fails, with no retries
    seed = next(s for s in range(1000) if faults(s) == [False, False, True])
    photos = list(map(str, _passes_11()[:2]))
    options = SandboxOptions(api_key=KEY, detect_geometry=Geometry(scale_11=2.2), fault_500=0.5, seed=seed)
    with Sandbox(options) as sandbox, EmoClient(api_key=KEY, base_url=sandbox.api_base,
                                                  retry=RetryPolicy(max_retries=0)) as client:
        result = calibrate(photos, ratio="1:1", output=tmp_path / "g.json", client=client)
    assert result.interrupted and "HTTP 500" in result.interrupted
    assert len(result.answers) == 1 and result.fit is not None and result.spent_cny == 0.004
    assert abs(load_geometry(tmp_path / "g.json").scale_11 - 2.2) <= 0.03
    assert len(Path(result.record).read_text().splitlines()) == 2  # the answer and the fit
