"""The sandbox on FastAPI + uvicorn against its http.server predecessor, side by side in one run.

    .venv/bin/python bench/sandbox.py [--baseline-ref 9265b4c] [--repeat 20] [--cycles 10]

The baseline is `pipeline/sandbox.py` as it was at --baseline-ref (the last commit before the
port), read with `git show` and imported as pipeline._sandbox_baseline; both run in this
process on the same machine, interleaved round by round:

1. start() and stop() of a Sandbox, median of --repeat each.
2. One small API call (GET /api/v1/tasks/x, keep-alive, one client): median latency of 300.
3. The same call from 8 threads at once (50 each, a client per thread): requests per second.
4. A client's whole cycle with the real EmoClient: policy + upload of the photo and of the
   audio, submit, poll until SUCCEEDED (pending 0 s, running 0 s), download: median of --cycles.
5. `python -X importtime -c "import pipeline.cli"` (what `emo-prep check` imports) in a fresh
   process, the baseline tree (git archive) against this one, interleaved: median of 15; and the
   import of the sandbox module itself.
The section between the SANDBOX markers of RESULTS.md is replaced.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from results import write_section  # noqa: E402  (bench/results.py)

from pipeline.client import EmoClient  # noqa: E402
from pipeline.serve import sandbox as current  # noqa: E402

KEY = "sk-bench"
AUTH = {"Authorization": f"Bearer {KEY}"}
PHOTO, AUDIO = ROOT / "samples" / "astronaut.png", ROOT / "samples" / "speech.wav"
BOXES = {"face_bbox": [172, 68, 275, 171], "ext_bbox": [94, 0, 352, 258]}  # the README's astronaut


def baseline_module(ref: str, folder: Path):
    """pipeline/sandbox.py at `ref`, imported inside the pipeline package (its relative imports)."""
    path = folder / "sandbox_baseline.py"
    path.write_text(subprocess.run(["git", "show", f"{ref}:pipeline/sandbox.py"], cwd=ROOT, check=True,
                                   capture_output=True, text=True).stdout)
    spec = importlib.util.spec_from_file_location("pipeline._sandbox_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def start_stop(module) -> tuple[float, float]:
    sandbox = module.Sandbox(module.SandboxOptions(api_key=KEY))
    started = time.perf_counter()
    sandbox.start()
    up = time.perf_counter()
    sandbox.stop()
    return up - started, time.perf_counter() - up


def small_calls(sandbox, count: int = 300) -> float:
    with httpx.Client(headers=AUTH) as client:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            client.get(f"{sandbox.api_base}/tasks/x").raise_for_status()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def concurrent_calls(sandbox, threads: int = 8, each: int = 50) -> float:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with httpx.Client(headers=AUTH) as client:
                for _ in range(each):
                    client.get(f"{sandbox.api_base}/tasks/x").raise_for_status()
        except BaseException as exc:  # counted below: a failed call must not pass as a fast one
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {threads} threads failed: {errors[0]!r}")
    return threads * each / (time.perf_counter() - started)


def cycle(sandbox, folder: Path) -> float:
    from pipeline.payload import VideoInput, VideoSynthesisRequest

    started = time.perf_counter()
    with EmoClient(api_key=KEY, base_url=sandbox.api_base, poll_initial_s=0.02, poll_max_s=0.05) as client:
        request = VideoSynthesisRequest(input=VideoInput(image_url=client.upload(PHOTO),
                                                         audio_url=client.upload(AUDIO), **BOXES))
        done = client.wait(client.submit(request), timeout=120)
        client.download(done.video_url, folder / "v.mp4")
    return time.perf_counter() - started


def import_ms(tree: Path, statement: str) -> float:
    """Cumulative ms of the last module `statement` imports, in a fresh process."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", statement], cwd=tree, capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(tree)}).stderr
    return int(re.findall(r"\|\s+(\d+) \|", out)[-1]) / 1000


def import_times(runs: dict[str, tuple[Path, str]], repeat: int = 15) -> dict[str, list[float]]:
    """`repeat` fresh processes per (tree, statement), interleaved; ms each."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, (tree, statement) in runs.items():
            times[name].append(import_ms(tree, statement))
    return times


def quartiles(values: list[float]) -> str:
    low, _, high = statistics.quantiles(values, n=4)
    return f"{low:.0f}-{high:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="9265b4c", help="a commit that has pipeline/sandbox.py")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--cycles", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        impls = {"http.server (baseline)": baseline_module(args.baseline_ref, folder),
                 "FastAPI + uvicorn": current}
        starts: dict[str, list[float]] = {name: [] for name in impls}
        stops: dict[str, list[float]] = {name: [] for name in impls}
        for _ in range(args.repeat):
            for name, module in impls.items():
                up, down = start_stop(module)
                starts[name].append(up)
                stops[name].append(down)
        latency, rate, cycles = {}, {}, {name: [] for name in impls}
        for name, module in impls.items():
            with module.Sandbox(module.SandboxOptions(api_key=KEY, pending_s=0.0, running_s=0.0, fps=5)) as sb:
                small_calls(sb, 30)  # warm: the first connection, the route tables
                latency[name] = small_calls(sb)
                rate[name] = concurrent_calls(sb)
        sandboxes = {name: module.Sandbox(module.SandboxOptions(api_key=KEY, pending_s=0.0, running_s=0.0, fps=5))
                     .start() for name, module in impls.items()}
        try:
            for sb in sandboxes.values():
                cycle(sb, folder)  # warm: the encoder, the client's imports
            for _ in range(args.cycles):
                for name, sb in sandboxes.items():
                    cycles[name].append(cycle(sb, folder))
        finally:
            for sb in sandboxes.values():
                sb.stop()
        base_tree = folder / "baseline-tree"
        base_tree.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline_ref, "pipeline"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        (folder / "tree.tar").write_bytes(archive)
        with tarfile.open(folder / "tree.tar") as tar:
            tar.extractall(base_tree, filter="data")
        cli_import = import_times({"http.server (baseline)": (base_tree, "import pipeline.cli"),
                                   "FastAPI + uvicorn": (ROOT, "import pipeline.cli")})
        module_import = import_times({"http.server (baseline)": (base_tree, "import pipeline.sandbox"),
                                      "FastAPI + uvicorn": (ROOT, "import pipeline.serve.sandbox")})

    names = list(impls)
    base, new = names

    def row(label: str, values: dict[str, float], unit: str, scale: float = 1.0, digits: int = 1) -> str:
        return (f"| {label} | {values[base] * scale:.{digits}f} {unit} | {values[new] * scale:.{digits}f} {unit} | "
                f"{values[new] / values[base]:.2f} |")

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    lines = ["## The sandbox on FastAPI + uvicorn vs http.server (bench/sandbox.py)", "",
             f"Command: `.venv/bin/python bench/sandbox.py --baseline-ref {args.baseline_ref} --repeat {args.repeat} "
             f"--cycles {args.cycles}` (this tree at {head.strip()}; {os.cpu_count()} cores shared with other work). "
             "Both sandboxes run in one process, interleaved; medians. Ratio = new / baseline.", "",
             f"| measure | {base} | {new} | ratio |", "|---|---|---|---|",
             row(f"start(), median of {args.repeat}", {n: statistics.median(v) for n, v in starts.items()}, "ms",
                 1000),
             row(f"stop(), median of {args.repeat}", {n: statistics.median(v) for n, v in stops.items()}, "ms", 1000),
             row("GET /tasks/x, one keep-alive client, median of 300", latency, "ms", 1000, 2),
             row("GET /tasks/x, 8 threads x 50, throughput", rate, "req/s", 1, 0),
             row(f"whole client cycle (2 policy+upload, submit, poll, download), median of {args.cycles}",
                 {n: statistics.median(v) for n, v in cycles.items()}, "ms", 1000, 0),
             row("`import pipeline.cli` (what `emo-prep check` loads), median of 15 processes",
                 {n: statistics.median(v) for n, v in cli_import.items()}, "ms"),
             row("import of the sandbox module, median of 15 processes",
                 {n: statistics.median(v) for n, v in module_import.items()}, "ms"), "",
             f"Spread of `import pipeline.cli` (p25-p75): baseline {quartiles(cli_import[base])}, new "
             f"{quartiles(cli_import[new])}. `import pipeline.cli` loads no module of fastapi, starlette, uvicorn, "
             "anyio or h11 (tests/test_cli.py checks it), so its code path is the baseline's; the web stack costs "
             "only where a sandbox is made (the last row).", "",
             "The baseline's ~44 ms per keep-alive call is Nagle's algorithm meeting the client's delayed ACK: "
             "http.server writes an answer's head and body apart and never sets TCP_NODELAY. The new sandbox's "
             "connections have it (`_listen` in pipeline/serve/sandbox.py; tests/test_sandbox_limits.py checks it).",
             ""]
    write_section("SANDBOX", "\n".join(lines))


if __name__ == "__main__":
    main()
