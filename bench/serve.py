"""`emo-prep serve --workers 2` beside the in-process Checker on the same photos and cores.

    .venv/bin/python bench/serve.py [--requests 180] [--rounds 3] [--memory 2000]

1. Baseline: 1 and 2 processes, each with its own Checker (loaded before the clock starts),
   checking their share of the photos' bytes with `Checker.check_bytes`: photos/s on 1 and on 2
   cores, nothing in between. One client is set against 1 process (it keeps one worker busy),
   8 and 32 clients against 2.
2. The server: a real `emo-prep serve --workers 2` process (default queue), and 1, 8 and 32
   concurrent clients (asyncio, httpx) each posting the photos' bytes to POST /v1/check in turn
   until REQUESTS answers came back; a client answered 429 waits Retry-After and tries again.
   Throughput = 200 answers / wall (to the last answer); p50/p99 of the 200 answers' latency; 429s counted apart;
   any other status or a transport error counts as an error.
   Rounds interleave the baseline and the three client counts; medians are reported.
3. Memory: the resident memory (VmRSS) of the server and its workers after 100 requests and
   after MEMORY requests (8 clients).
The section between the SERVE markers of RESULTS.md is replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402  (bench/results.py)

DATA = ROOT.parent / "shared" / "data"
EMO_PREP = str(ROOT / ".venv" / "bin" / "emo-prep")
CLIENTS = (1, 8, 32)
WORKERS = 2


def _photos() -> list[bytes]:
    files = sorted(p for p in DATA.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".bmp"))
    if not files:
        sys.exit(f"no photos in {DATA} (../shared/data beside the repository)")
    return [p.read_bytes() for p in files]


# --- baseline: in-process Checkers, one per core ---------------------------------------------------
def _baseline_worker(photos: list[bytes], barrier, out) -> None:
    from pipeline import Checker

    with Checker() as checker:
        checker.check_bytes(photos[0], "warm-up")
        barrier.wait()
        started = time.perf_counter()
        for i, data in enumerate(photos):
            checker.check_bytes(data, f"p{i}")
        out.put(time.perf_counter() - started)


def baseline(photos: list[bytes], total: int, procs_n: int) -> float:
    """Photos/s of `procs_n` processes with a Checker each, `total` photos split between them."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(procs_n), ctx.Queue()
    shares = [[photos[i % len(photos)] for i in range(w, total, procs_n)] for w in range(procs_n)]
    procs = [ctx.Process(target=_baseline_worker, args=(share, barrier, out)) for share in shares]
    for p in procs:
        p.start()
    walls = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return total / max(walls)


# --- the server ----------------------------------------------------------------------------------
class Server:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen([EMO_PREP, "serve", "--port", "0", "--workers", str(WORKERS)],
                                     stdout=subprocess.DEVNULL, stderr=log.open("wb"))
        while not (m := re.search(r"listening on (http://\S+)", log.read_text())):
            if self.proc.poll() is not None:
                sys.exit(f"emo-prep serve did not start:\n{log.read_text()}")
            time.sleep(0.1)
        self.url = m.group(1)

    def rss_mb(self) -> float:
        """VmRSS of the server and its descendants, MB."""
        pids, total = [self.proc.pid], 0.0
        while pids:
            pid = pids.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pids += [int(c) for c in (task / "children").read_text().split()]
            except FileNotFoundError:
                continue
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
        return total

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


async def load(url: str, photos: list[bytes], clients: int, requests: int, start: int = 0) -> dict:
    import httpx

    latencies: list[float] = []
    counts = {"throttled": 0, "errors": 0}
    issued, last = start, 0.0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal issued, last
        while len(latencies) + counts["errors"] < requests:
            data = photos[issued % len(photos)]
            issued += 1
            began = time.perf_counter()
            try:
                answer = await http.post("/v1/check", content=data)
            except httpx.HTTPError:
                counts["errors"] += 1
                continue
            if answer.status_code == 200:
                last = time.perf_counter()
                latencies.append(last - began)
            elif answer.status_code == 429:
                counts["throttled"] += 1
                await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
            else:
                counts["errors"] += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = last - started  # to the last answer: not the Retry-After sleeps of clients already done
    latencies.sort()
    return {"rps": len(latencies) / wall, "p50": latencies[len(latencies) // 2],
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=180, help="answers per client count per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory", type=int, default=2000, help="requests of the memory run")
    args = parser.parse_args()
    photos = _photos()
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {"base1": [], "base2": [], **{str(c): [] for c in CLIENTS}}
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "serve.err")
        try:
            asyncio.run(load(server.url, photos, 2, 20))  # warm: connections, first decodes
            for _ in range(args.rounds):
                runs["base1"].append({"rps": baseline(photos, args.requests, 1)})
                runs["base2"].append({"rps": baseline(photos, args.requests, WORKERS)})
                for clients in CLIENTS:
                    runs[str(clients)].append(asyncio.run(load(server.url, photos, clients, args.requests)))
        finally:
            server.stop()
        server = Server(Path(tmp) / "serve-mem.err")  # a fresh process for the memory run
        try:
            asyncio.run(load(server.url, photos, 8, 100))
            rss_100 = server.rss_mb()
            memory_run = asyncio.run(load(server.url, photos, 8, args.memory - 100, start=100))
            rss_end = server.rss_mb()
        finally:
            server.stop()
    load_after = os.getloadavg()

    def med(key: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[key])

    bases = {1: med("base1", "rps"), WORKERS: med("base2", "rps")}
    rows = [f"| in-process Checker, {n} process{'es' if n > 1 else ''} (baseline) | {rps:.1f} | 1.00 | - | - | - | - |"
            for n, rps in bases.items()]
    for clients in CLIENTS:
        key, base = str(clients), bases[1 if clients == 1 else WORKERS]
        rows.append(f"| serve --workers {WORKERS}, {clients} client{'s' if clients > 1 else ''} | "
                    f"{med(key, 'rps'):.1f} | {med(key, 'rps') / base:.2f} | {med(key, 'p50') * 1000:.0f} | "
                    f"{med(key, 'p99') * 1000:.0f} | {sum(r['throttled'] for r in runs[key])} | "
                    f"{sum(r['errors'] for r in runs[key])} |")
    body = f"""## Serve: `emo-prep serve --workers {WORKERS}` vs the in-process Checker (bench/serve.py)

Command: `.venv/bin/python bench/serve.py --requests {args.requests} --rounds {args.rounds} --memory {args.memory}`
({platform.python_version()}, {os.cpu_count()} cores). The {len(photos)} dev photos of `../shared/data/` (1:1), their
bytes posted to `POST /v1/check` in turn; {args.requests} answers per line per round, {args.rounds} rounds interleaving
the baseline and the client counts, medians. The machine is shared: load average {load_before[0]:.2f} before,
{load_after[0]:.2f} after (1 min; 2 cores), so absolute figures move between runs, ratios less.

| run | photos/s | vs its baseline | p50 ms | p99 ms | 429s (all rounds) | other errors |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Memory (server + {WORKERS} workers, VmRSS): {rss_100:.0f} MB after 100 requests, {rss_end:.0f} MB after {args.memory}
({rss_end - rss_100:+.0f} MB); that run had {memory_run['errors']} errors and {memory_run['throttled']} 429s.
A 429 is the queue's answer past {WORKERS} workers + {4 * WORKERS} waiting (SERVE_QUEUE_PER_WORKER); its clients waited
Retry-After (1 s) and tried again, so 32 clients measure the server throttling, not failing."""
    write_section("SERVE", body)


if __name__ == "__main__":
    main()
