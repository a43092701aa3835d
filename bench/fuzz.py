"""Fuzz the photo and audio checks for minutes: damaged bytes must give a report, never an
exception, and never a line on stderr.

    .venv/bin/python bench/fuzz.py --target image --seconds 300
    .venv/bin/python bench/fuzz.py --target audio --seconds 120 [--engine hypothesis]

Seeds: one small file per container (tests/fuzzing.py). Engine: atheris (libFuzzer's
mutators over the seeds; `pip install atheris`) when it imports, else the hypothesis mutation
strategy of tests/test_fuzz.py. atheris instruments our code and Pillow's (whose plugins parse
TIFF directories, GIF blocks and PNG chunks in Python) for coverage; the native decoders
(libheif, libtiff's codecs, FFmpeg) are fuzzed blind. Each input goes through Checker.check_bytes (image)
or check_audio (audio); an exception escaping them, or bytes written to fd 2, is a failure.
Prints one JSON line: executions, seconds, failures by kind, lines written to fd 2 (captured
per input around the check, so libFuzzer's own progress lines do not count).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

#: Python packages atheris instruments for coverage: ours and the image plugins (TIFF, GIF,
#: PNG chunks... are parsed in Python by Pillow); FFmpeg and libheif are native, unseen.
_INSTRUMENTED = ["pipeline", "PIL", "pillow_heif", "fuzzing"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", choices=["image", "audio"], default="image")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--engine", choices=["atheris", "hypothesis"], default=None)
    args = parser.parse_args()
    engine = args.engine or ("atheris" if _imports("atheris") else "hypothesis")
    if engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=_INSTRUMENTED):
            import fuzzing  # noqa: F401  (tests/fuzzing.py, with PIL and pipeline below it)

            import pipeline  # noqa: F401
    from fuzzing import audio_seeds, image_seeds

    seeds = image_seeds() if args.target == "image" else audio_seeds()
    one = _runner(args.target, engine, args.seconds)
    if engine == "atheris":
        _run_atheris(one, seeds)
    else:
        _run_hypothesis(one, seeds)


def _imports(name: str) -> bool:
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def _runner(target: str, engine: str, seconds: float):
    """The function fed each input; it ends the process with the figures when time is up."""
    from pipeline.nativelog import captured_native_stderr

    if target == "image":
        from pipeline import Checker

        checker = Checker()

        def check(data: bytes) -> None:
            checker.check_bytes(data, "fuzz")
    else:
        from pipeline.audio import check_audio

        def check(data: bytes) -> None:
            check_audio(data, source_id="fuzz")

    stats = {"target": target, "engine": engine, "executions": 0, "failures": collections.Counter(),
             "stderr_lines": 0, "stderr_sample": []}
    started = [0.0]  # the clock starts at the first input, once the engine is set up

    def one(data: bytes) -> None:
        started[0] = started[0] or time.monotonic()
        stats["executions"] += 1
        said: list[str] = []
        try:
            with captured_native_stderr(said):
                check(data)
        except Exception as exc:  # what we are looking for: counted, not fatal
            stats["failures"][f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
        stats["stderr_lines"] += len(said)
        stats["stderr_sample"] = (stats["stderr_sample"] + said)[:5]
        if time.monotonic() - started[0] > seconds:
            stats.update(seconds=round(time.monotonic() - started[0], 1), failures=dict(stats["failures"]))
            print(json.dumps(stats), flush=True)
            _record(stats, seconds)
            os._exit(0)  # libFuzzer never returns; the figures are out
    return one


def _record(stats: dict, seconds: float) -> None:
    """The run's figures into RESULTS.md (section FUZZ_IMAGE or FUZZ_AUDIO)."""
    from results import write_section  # bench/results.py

    failures = ", ".join(f"{n} x {kind}" for kind, n in stats["failures"].items()) or "none"
    write_section(f"FUZZ_{stats['target'].upper()}", "\n".join([
        f"### Fuzz: {stats['target']} ({stats['engine']})", "",
        f"`.venv/bin/python bench/fuzz.py --target {stats['target']} --seconds {seconds:g}`, "
        f"{time.strftime('%Y-%m-%d')}: {stats['executions']:,} damaged inputs in {stats['seconds']:.0f} s; "
        f"exceptions escaping the check: {failures}; lines on stderr: {stats['stderr_lines']}."]))


def _run_atheris(one, seeds: dict[str, bytes]) -> None:
    import atheris

    corpus = Path(tempfile.mkdtemp(prefix="fuzz-corpus-"))
    for name, data in seeds.items():
        (corpus / name).write_bytes(data)
    atheris.Setup([sys.argv[0], "-max_len=65536", "-close_fd_mask=2", str(corpus)], one)
    atheris.Fuzz()


def _run_hypothesis(one, seeds: dict[str, bytes]) -> None:
    from fuzzing import mutants
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=10**9, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(mutants(seeds))
    def fuzz(mutant: tuple[str, bytes]) -> None:
        one(mutant[1])

    fuzz()


if __name__ == "__main__":
    main()
