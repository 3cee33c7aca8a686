"""Run the whole bad-input matrix (tests/bad_inputs.py) as subprocesses and print one table.

    .venv/bin/python scripts/bad_input_matrix.py [-k SUBSTRING] [--keep]

Each case runs `python -m layerscan ...` in a fresh folder; the table shows the exit code, the
last line it printed on stderr, and the folder's entries before → after (with any that were
lost or left partial). The counts at the end go into docs/commands.md (outputs, errors and
interruptions).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.bad_inputs import CASES, prepare_inputs, problems, run_subprocess  # noqa: E402
from tests.hostile_files import hostile_cases  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    parser.add_argument("--keep", action="store_true", help="keep the case folders")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    root = Path(tempfile.mkdtemp(prefix="layerscan-matrix-"))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        inputs = prepare_inputs(root / "inputs")
    cases = [case for case in [*CASES, *hostile_cases()] if args.k in case.name]
    rows, kept, known, broken = [], 0, 0, []
    for i, case in enumerate(cases):
        result = run_subprocess(case, root / f"case-{i:03d}", inputs)
        found = problems(case, result)
        lines = result.stderr.strip().splitlines()
        ours = [line for line in lines if line.startswith("layerscan:")]
        line = ours[-1] if ours else ("" if result.exit_code == 0 else (lines or [""])[-1])
        status = "ok" if not found else ("known" if case.owner else "FAIL")
        kept += not found
        known += bool(found and case.owner)
        if found and not case.owner:
            broken.append(case.name)
        files = f"{len(result.before)} → {len(result.after)}"
        lost = [p for p in result.lost if p not in case.replaces]
        replaced = len(result.lost) - len(lost)
        if lost or result.partials:
            files += f" (lost {len(lost)}, partial {len(result.partials)})"
        elif replaced:
            files += f" ({replaced} replaced, as allowed)"
        rows.append(
            (
                case.name,
                str(result.exit_code),
                line[:90],
                files,
                status + (f": {'; '.join(found)}" if found else ""),
            )
        )
        print(f"[{i + 1}/{len(cases)}] {case.name}: {status}", file=sys.stderr, flush=True)
    widths = [
        max(len(row[c]) for row in rows + [("case", "exit", "message", "files", "")])
        for c in range(4)
    ]
    header = ("case", "exit", "message", "files before → after", "result")
    print(" | ".join(h.ljust(w) for h, w in zip(header, [*widths, 0], strict=True)))
    for row in rows:
        print(" | ".join(v.ljust(w) for v, w in zip(row, [*widths, 0], strict=True)))
    errors = sum(row[1] == "2" for row in rows)
    successes = sum(row[1] == "0" for row in rows)
    lost = sum("lost" in row[3] for row in rows)
    print(
        f"\n{len(rows)} cases: {kept} kept their promise, {known} known gaps owned elsewhere, "
        f"{len(broken)} broken; {errors} exited 2, {successes} exited 0, "
        f"{len(rows) - errors - successes} other; {lost} lost or left files"
    )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
