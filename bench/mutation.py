"""Mutation score of the modules where a silent bug costs money, keys or wrong verdicts.

`make mutation` (not part of `make test`: it takes minutes). mutmut 3 copies the package to
mutants/, makes one-line changes ("mutants") to the functions in SCOPE and runs, for each
mutant, only the tests of tests/mutation/ that call the changed function (pyproject.toml,
[tool.mutmut]). A mutant no test notices "survived": a bug the suite would let through,
unless it is in EQUIVALENT (no behaviour can tell it from the original; the reason says why)
or only changes the case of an SQL statement (`sql_case_only`).

    .venv/bin/python bench/mutation.py [--max-children 2] [module ...]

Prints per module: mutants, killed, survived, equivalent, timed out, no tests, the score
(killed + timed out) / (mutants - equivalent), and the names of the survivors
(`.venv/bin/mutmut show NAME` prints a mutant's diff).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = Path(sys.executable).parent / "mutmut"

#: module -> the functions mutated (mutmut's names: x_func, xǁClassǁmethod). Left out: pixel
#: measures (checked against labelled photos by bench/accuracy.py, not by pure tests), file and
#: network I/O loops, and code with no decision in it (reprs of plain data, CLI wiring).
SCOPE: dict[str, list[str]] = {
    "geometry": ["x_face_box", "x_service_face", "x__place", "x_crop_box", "x_boxes_for_upload"],
    "boxes": ["x_*"],
    "checks": ["x__graded", "x_image_size", "x_counts_as_face", "x_face_count", "x_ext_fit", "x_face_size",
               "x_face_cut_off", "x_face_occluded", "x_pose", "x_upside_down", "x_faint_face", "x_face_presence",
               "x_blur", "x_exposure", "x_body_cut_off"],
    "findings": ["x*"],
    "payload": ["x*"],
    "client": ["x_resolve_base_url", "x__read_api_key", "x_parse_retry_after", "x_backoff_delay", "x_should_retry",
               "xǁ_Coreǁ__repr__", "xǁ_Coreǁ_redact", "xǁ_Coreǁ_auth", "xǁ_Coreǁ_policy_call", "xǁ_Coreǁ_upload_call",
               "xǁ_Coreǁ_detect_call", "xǁ_Coreǁ_submit_call", "xǁ_Coreǁ_task_call", "xǁ_Coreǁ_cancel_call",
               "xǁ_Coreǁ_list_call", "xǁ_Coreǁ_error", "xǁ_Coreǁ_decide", "xǁ_Coreǁ_after_failure",
               "xǁ_Coreǁ_no_answer", "x__oss_header", "x__safe_id", "x__check_size"],
    "audio": ["x_check_audio", "x__decode", "x__wav_claimed_seconds"],
    "ledger": ["xǁLedgerǁupload_url", "xǁLedgerǁbegin_submit", "xǁLedgerǁsubmit_created", "xǁLedgerǁsubmit_refused",
               "xǁLedgerǁsubmit_unknown", "xǁLedgerǁsettle", "xǁLedgerǁunsettled_submits",
               "xǁLedgerǁmark_downloaded", "xǁLedgerǁdownload_failed", "xǁLedgerǁcommitted_cost"],
}

#: Mutants no behaviour can tell from the original, with the reason (RESULTS.md lists them).
EQUIVALENT: dict[str, str] = {
    "pipeline.checks.x_blur__mutmut_5": "above=False -> None: _graded only asks whether it is true",
    "pipeline.checks.x_exposure__mutmut_6": "above=False -> None (dark): the same",
    "pipeline.checks.x_face_cut_off__mutmut_62": ">= -> > at the 3 % warning: no share equals 0.03 in doubles "
                                                 "(1 - x is exact for x in [0.5, 1], and 0.97 + 0.03 is not 1 there)",
    "pipeline.checks.x_face_occluded__mutmut_21": "covered += hidden -> covered = hidden: covered is empty there",
    "pipeline.checks.x_pose__mutmut_1": "pitch >= 0 -> > 0: a pitch of 0 is under every limit, up or down",
    "pipeline.checks.x_pose__mutmut_2": "pitch >= 0 -> >= 1: a pitch in [0, 1) is under every limit (the "
                                        "lowest, the downward warning, is 12), up or down",
    **{f"pipeline.client.xǁ_Coreǁ_{name}": 'a method in lower case ("get"): httpx sends it upper-cased'
       for name in ("policy_call__mutmut_12", "upload_call__mutmut_36", "detect_call__mutmut_21",
                    "submit_call__mutmut_24", "task_call__mutmut_10", "cancel_call__mutmut_10",
                    "list_call__mutmut_14")},
    "pipeline.client.xǁ_Coreǁ_upload_call__mutmut_27": "authorised=False -> None: only its truth is asked",
    "pipeline.client.xǁ_Coreǁ_submit_call__mutmut_14": "idempotent=False -> None: only its truth is asked",
    "pipeline.client.xǁ_Coreǁ_after_failure__mutmut_10": "sent=True -> None for an answer with a status: "
                                                         "should_retry reads `sent` only when there is no status",
    "pipeline.client.xǁ_Coreǁ_after_failure__mutmut_19": "sent=True -> False for an answer with a status: the same",
    "pipeline.client.xǁ_Coreǁ_after_failure__mutmut_22": '"retry-after" -> "RETRY-AFTER": httpx headers ignore case',
    "pipeline.client.x__read_api_key__mutmut_15": 'encoding "utf-8" -> "UTF-8": the same codec',
    "pipeline.client.x__read_api_key__mutmut_13": "encoding None: the locale's, UTF-8 on every machine we run on "
                                                  "(a key is ASCII anyway)",
    "pipeline.client.xǁ_Coreǁ_error__mutmut_43": '"x-request-id" -> "X-REQUEST-ID": httpx headers ignore case',
    "pipeline.ledger.xǁLedgerǁsettle__mutmut_36": "`if job or True`: a job with an unsettled submit exists (its "
                                                 "submits reference it)",
    "pipeline.ledger.xǁLedgerǁupload_url__mutmut_16": "> -> >= against time.time() read inside the call: equal only "
                                                      "to the microsecond, which no caller can arrange",
    "pipeline.client.xǁ_Coreǁ_redact__mutmut_2": "`if self._api_key or True`: the key is never empty (an empty one "
                                                 "is refused when the client is made)",
}

#: mutmut's exit codes; -9 / -11: the mutant crashed the test process (a fault point firing
#: where it should not), which the tests noticed.
STATUS = {1: "killed", 3: "killed", -9: "killed", -11: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}


def sql_case_only(name: str) -> bool:
    """A mutant that only changes the case of an SQL statement, no quoted value: SQLite reads
    keywords and names in any case, so no behaviour can tell it from the original."""
    diff = subprocess.run([str(MUTMUT), "show", name], cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    old = " ".join(line[1:] for line in diff if line.startswith("-") and not line.startswith("---"))
    new = " ".join(line[1:] for line in diff if line.startswith("+") and not line.startswith("+++"))
    sql = re.search(r"\b(SELECT|INSERT|UPDATE|DELETE|VALUES|WHERE|FROM|SET|AND|NULL)\b", old, re.IGNORECASE) is not None
    return sql and old != new and old.lower() == new.lower() and re.findall(r"'([^']*)'", old) == re.findall(
        r"'([^']*)'", new)


def patterns(module: str) -> list[str]:
    return [f"pipeline.{module}.{name}__mutmut_*" for name in SCOPE[module]]


def results(module: str) -> dict[str, str]:
    meta = json.loads((ROOT / "mutants" / "pipeline" / f"{module}.py.meta").read_text())
    wanted = patterns(module)
    return {name: STATUS.get(code, "suspicious") for name, code in meta["exit_code_by_key"].items()
            if any(fnmatch.fnmatchcase(name, p) for p in wanted)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", metavar="module", help=f"some of {', '.join(SCOPE)} (default: all)")
    ap.add_argument("--max-children", type=int, default=2, help="mutants judged at once (default 2)")
    args = ap.parse_args()
    unknown = [m for m in args.modules if m not in SCOPE]
    if unknown:
        ap.error(f"unknown module(s) {', '.join(unknown)}; expected some of {', '.join(SCOPE)}")
    rows = []
    for module in args.modules or list(SCOPE):
        start = time.monotonic()
        proc = subprocess.run([str(MUTMUT), "run", "--max-children", str(args.max_children), *patterns(module)],
                              cwd=ROOT, capture_output=True, text=True)
        seconds = time.monotonic() - start
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
            print(f"mutmut failed on {module} (exit {proc.returncode})", file=sys.stderr)
            return 2
        status = results(module)
        equivalent = {n for n in status if status[n] == "survived" and (n in EQUIVALENT or sql_case_only(n))}
        count = {s: sum(1 for n, v in status.items() if v == s and n not in equivalent)
                 for s in ("killed", "survived", "timeout", "no tests", "suspicious", "not checked")}
        judged = len(status) - len(equivalent)
        score = (count["killed"] + count["timeout"]) / judged if judged else 1.0
        rows.append((module, len(status), count, len(equivalent), score, seconds))
        print(f"{module}: {len(status)} mutants, killed {count['killed']}, survived {count['survived']}, "
              f"equivalent {len(equivalent)}, timed out {count['timeout']}, no tests {count['no tests']}, "
              f"score {score:.1%} ({seconds:.0f} s)", flush=True)
        for name in sorted(n for n, v in status.items() if v != "killed" and v != "timeout" and n not in equivalent):
            print(f"    {status[name]}: {name}", flush=True)
    print("\n| module | mutants | killed | survived | equivalent | timed out | no tests | score | run time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for module, total, count, eq, score, seconds in rows:
        print(f"| {module} | {total} | {count['killed']} | {count['survived']} | {eq} | {count['timeout']} | "
              f"{count['no tests']} | {score:.1%} | {seconds:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
