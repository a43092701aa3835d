"""The batch report: OUT/report.jsonl (the check contract per photo plus job fields; under
batch --fix, of the photo uploaded, with `fix` saying what was changed) and
OUT/report.html, one self-contained page (thumbnails inlined) with a tile per photo, filters
for passed / rejected / each reason (also as #passed, #rejected, #reason=CODE in the URL; a
photo's reason is its first error, as in the summary table) and a summary table on top.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from .ledger import Job, Ledger

__all__ = ["write_report", "job_record"]


def job_record(job: Job, tasks: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """The check JSON contract of the photo plus what the batch did with it."""
    record = dict(job.report or {"source": job.photo_path, "ok": False, "findings": []})
    last = tasks[-1] if tasks else None
    video = last["output_path"] if last and last["output_path"] else None
    record.update({
        "job_id": job.job_id, "state": job.state, "verdict": job.verdict, "style": job.style,
        "audio": job.audio, "estimated_cost_cny": job.cost_estimate,
        "task_id": last["task_id"] if last else None, "task_status": last["status"] if last else None,
        "usage": last["usage"] if last else None,
        "video": os.path.relpath(video, out) if video else None, "last_error": job.last_error,
        "tasks": [t["task_id"] for t in tasks]})
    return record


def _errors(record: dict[str, Any]) -> list[dict[str, Any]]:
    found = [f for f in record.get("findings", []) if f["severity"] == "error"]
    found += [f for f in (record.get("audio") or {}).get("findings", []) if f["severity"] == "error"]
    return found


def write_report(ledger: Ledger, out: Path, *, seconds: float) -> Path:
    """Write report.jsonl and report.html into `out`; returns the HTML path."""
    out.mkdir(parents=True, exist_ok=True)
    records = [(job, job_record(job, ledger.tasks(job.job_id), out)) for job in ledger.jobs()]
    with (out / "report.jsonl").open("w", encoding="utf-8") as fh:
        for _, record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    reasons = Counter(_errors(r)[0]["code"] for _, r in records if r["verdict"] != "pass" and _errors(r))
    passed = sum(r["verdict"] == "pass" for _, r in records)
    cost = ledger.committed_cost()
    videos = sum(1 for _, r in records if r["video"])
    tiles = "\n".join(_tile(job, record, out) for job, record in records)
    reason_rows = "".join(f"<tr><td><a href='#reason={html.escape(code)}'>{html.escape(code)}</a></td>"
                          f"<td>{n}</td></tr>" for code, n in reasons.most_common())
    buttons = "".join(f"<a class='f' href='#reason={html.escape(code)}'>{html.escape(code)} ({n})</a>"
                      for code, n in reasons.most_common())
    page = _PAGE.format(
        total=len(records), passed=passed, rejected=len(records) - passed, cost=f"{cost:.2f}", videos=videos,
        seconds=f"{seconds:.1f}", reason_rows=reason_rows or "<tr><td>none</td><td>0</td></tr>", buttons=buttons,
        tiles=tiles)
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _tile(job: Job, record: dict[str, Any], out: Path) -> str:
    errors = _errors(record)
    verdict = "pass" if record["verdict"] == "pass" else "reject"
    img = ""
    if job.thumbnail and Path(job.thumbnail).is_file():
        data = base64.b64encode(Path(job.thumbnail).read_bytes()).decode()
        img = f"<img alt='preview of {html.escape(Path(job.photo_path).name)}' src='data:image/jpeg;base64,{data}'>"
    items = "".join(f"<li><b>{html.escape(f['code'])}</b>: {html.escape(f['message'])}"
                    f"<br><i>{html.escape(f['hint'])}</i></li>" for f in errors)
    warnings = [f for f in record.get("findings", []) if f["severity"] == "warning"]
    items += "".join(f"<li class='w'>{html.escape(f['code'])} (warning): {html.escape(f['message'])}</li>"
                     for f in warnings)
    extra = []
    fixed = record.get("fix") or {}
    if fixed.get("fixed"):
        extra.append(f"<span class='fix'>fixed ({html.escape(', '.join(fixed['operations']))}): "
                     f"{html.escape(Path(fixed['output']).name)} is what is uploaded</span>")
    elif fixed.get("reason"):
        items += f"<li class='w'>not fixed: {html.escape(fixed['reason'])}</li>"
    if record.get("estimated_cost_cny") is not None:
        extra.append(f"cost est. CNY {record['estimated_cost_cny']:.2f}")
    if record.get("task_status"):
        extra.append(f"task {html.escape(record['task_status'])}")
    if record.get("video"):
        extra.append(f"<a class='video' href='{html.escape(record['video'])}'>video</a>")
    if record.get("last_error") and job.state in ("failed", "unknown"):
        extra.append(f"<span class='err'>{html.escape(record['last_error'])}</span>")
    primary = html.escape(errors[0]["code"]) if errors else ""
    return (f"<figure class='tile {verdict}' data-verdict='{verdict}' data-reason='{primary}'>{img}"
            f"<figcaption><span class='badge'>{verdict.upper()}</span> {html.escape(Path(job.photo_path).name)}"
            f"<ul>{items}</ul><div class='meta'>{' · '.join(extra)}</div></figcaption></figure>")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>emo-prep batch report</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;background:#f6f6f4;color:#222}}
table{{border-collapse:collapse;margin:.5em 0 1em}} td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}
nav a.f{{display:inline-block;margin:.2em;padding:.2em .6em;border:1px solid #888;border-radius:1em;
text-decoration:none;color:#222;background:#fff}}
#tiles{{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:1em}}
.tile{{margin:0;background:#fff;border:2px solid #ccc;border-radius:6px;overflow:hidden}}
.tile.pass{{border-color:#3a3}} .tile.reject{{border-color:#c33}} .fix{{color:#07a}}
.tile img{{width:100%;display:block}} figcaption{{padding:.5em;font-size:.9em}}
.badge{{font-weight:bold}} .pass .badge{{color:#282}} .reject .badge{{color:#b22}}
li.w{{color:#a60}} .err{{color:#b22}} [hidden]{{display:none}}
</style></head><body>
<h1>emo-prep batch report</h1>
<table id="summary"><tr><th>photos</th><td>{total}</td></tr><tr><th>passed</th><td>{passed}</td></tr>
<tr><th>rejected</th><td>{rejected}</td></tr><tr><th>videos downloaded</th><td>{videos}</td></tr>
<tr><th>cost committed (CNY, estimate)</th><td>{cost}</td></tr><tr><th>time (s)</th><td>{seconds}</td></tr></table>
<table id="reasons"><tr><th>reason</th><th>photos</th></tr>{reason_rows}</table>
<nav><a class="f" href="#all">all</a><a class="f" href="#passed">passed</a><a class="f" href="#rejected">rejected</a>
{buttons}</nav>
<p id="showing"></p>
<div id="tiles">
{tiles}
</div>
<script>
function applyFilter() {{
  var h = decodeURIComponent(location.hash.slice(1)), shown = 0, tiles = document.querySelectorAll(".tile");
  tiles.forEach(function (t) {{
    var show = !h || h === "all" || (h === "passed" && t.dataset.verdict === "pass") ||
      (h === "rejected" && t.dataset.verdict === "reject") ||
      (h.indexOf("reason=") === 0 && t.dataset.reason === h.slice(7));
    t.hidden = !show; shown += show ? 1 : 0;
  }});
  document.getElementById("showing").textContent =
    "showing " + shown + " of " + tiles.length + (h ? " (" + h + ")" : "");
}}
window.addEventListener("hashchange", applyFilter);
document.addEventListener("DOMContentLoaded", applyFilter);
</script>
</body></html>
"""
