"""`make repro`'s console: one `dvc repro`'s output in, a line per stage event out.

    dvc repro ... 2>&1 | python scripts/progress.py LABEL LOG

Every line goes to LOG (the whole output, as before); the console gets, as they happen, each stage
that starts and finishes (with its time and the time since REPRO_START, epoch seconds), and for a
stage that fails its own error message (the last exception line its notebook or command printed,
else the last line it printed: the kit's commands say a user's mistake in one line) before DVC's
one-line summary. At the end, how many stages ran and how many were up to date.
Exit status: that of nothing (the pipeline's status is the `dvc` process's, read by the caller).
Standard library only, so it starts in milliseconds.
"""

from __future__ import annotations

import os
import re
import sys
import time

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RUNNING = re.compile(r"^Running stage '([^']+)'")
SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping")
LOCKED = re.compile(r"^(Updating|Generating) lock file")
EXCEPTION = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)|OutOfTime|ConfigError|CardError)\b:? ?.*")


def clock(start: float) -> str:
    s = int(time.time() - start)
    return f"{s // 60:3d}:{s % 60:02d}"


def main(label: str, log_path: str) -> None:
    start = float(os.environ.get("REPRO_START") or time.time())
    stage, began, ran, skipped, last_error, last_line = None, 0.0, 0, 0, None, None

    def say(text: str) -> None:
        print(f"[{clock(start)}] {label}: {text}", flush=True)

    def finish(ok: bool) -> None:
        nonlocal stage
        if stage is not None and ok:
            say(f"{stage} done in {time.time() - began:.0f} s")
        stage = None

    with open(log_path, "w") as log:
        for raw in sys.stdin:
            log.write(raw)
            log.flush()
            line = ANSI.sub("", raw).rstrip("\n")
            if m := RUNNING.match(line):
                finish(True)
                stage, began, last_error, last_line = m.group(1), time.time(), None, None
                ran += 1
                say(f"{stage} started")
            elif m := SKIPPED.match(line):
                finish(True)
                skipped += 1
            elif LOCKED.match(line):
                finish(True)
            elif line.startswith("ERROR"):
                if last_error or last_line:
                    say(f"{stage or 'a stage'} failed: {last_error or last_line}")
                say(line)
                say(f"the whole output: {log_path}")
                stage = None
            elif m := EXCEPTION.match(line):
                last_error = m.group(0).strip()
            elif stage is not None and line.strip() and not line.startswith("> "):
                last_line = line.strip().rsplit("\r", 1)[-1]  # a progress bar's redraws: its last state
    finish(True)
    say(f"{ran} stage(s) ran, {skipped} up to date")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
