"""The README's family × method table, generated from a run of the family tests.

Runs `tests/compressor/models/test_families.py` (and, with the model store, the whole-job tests)
under pytest with a JUnit report; every test there records its `family` and `method`. A cell says
"works" with the tests that showed it, or "refused" with the reason `compatibility.model_support`
gives for that family (the refusal itself is tested too), or FAILED with the failing test.

    .venv/bin/python bench/family_table.py            # writes bench/results/families.json, rewrites the README table
    .venv/bin/python bench/family_table.py --no-jobs  # without the compressor.run jobs (no model store needed)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from compressor.models.compatibility import METHODS, model_support  # noqa: E402

TESTS = ["tests/compressor/models/test_families.py"]
JOB_TESTS = ["tests/compressor/models/test_family_jobs.py"]
COLUMNS = list(METHODS) + ["job"]
START, END = "<!-- families-table:start -->", "<!-- families-table:end -->"


def run_tests(paths: list[str]) -> list[dict]:
    """One record per test case: name, function, family, method, outcome."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        subprocess.run([sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                        "-o", "junit_family=xunit1"], cwd=REPO, env=env, check=False)
        cases = []
        for case in ET.parse(xml).getroot().iter("testcase"):
            props = {p.get("name"): p.get("value") for p in case.iter("property")}
            if "family" not in props:
                continue
            outcome = "passed"
            for child in case:
                if child.tag in ("failure", "error"):
                    outcome = "failed"
                elif child.tag == "skipped":
                    outcome = "skipped"
            name = case.get("name")
            cases.append({"name": name, "function": name.split("[")[0], "family": props["family"],
                          "method": props["method"], "outcome": outcome})
        return cases


def tiny_configs() -> dict[str, dict]:
    from tests.random_models import FAMILY_BUILDERS

    configs = {}
    for family, build in FAMILY_BUILDERS.items():
        model = build()
        configs[family] = {**model.config.to_dict(), "architectures": [type(model).__name__]}
    return configs


def method_of(case: dict) -> str:
    return "hadamard" if case["method"].startswith("hadamard") else case["method"]


def build_results(cases: list[dict], configs: dict[str, dict]) -> dict:
    by_cell: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for case in cases:
        by_cell[(case["family"], method_of(case))].append(case)
    families = {}
    for family, config in configs.items():
        support = model_support(config)
        row = {}
        for method in COLUMNS:
            tests = by_cell.get((family, method), [])
            failed = [t["name"] for t in tests if t["outcome"] == "failed"]
            passed = [t["name"] for t in tests if t["outcome"] == "passed"]
            s = support.methods.get(method)
            if failed:
                status = "failed"
            elif s is not None and not s.ok:
                status = "refused"
            elif passed:
                status = "works"
            else:
                status = "untested"
            row[method] = {"status": status, "reason": s.reason if s else None, "tests": [
                {"name": t["name"], "outcome": t["outcome"]} for t in tests]}
        families[family] = {"architecture": support.architecture, "methods": row}
    return {"command": "python bench/family_table.py", "families": families}


def render(results: dict) -> str:
    tests: dict[str, int] = {}
    notes: dict[str, int] = {}
    lines = ["| family | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for family, row in results["families"].items():
        cells = []
        for method in COLUMNS:
            cell = row["methods"][method]
            refs = [f"T{tests.setdefault(t['name'].split('[')[0], len(tests) + 1)}" for t in cell["tests"]]
            refs = sorted(set(refs), key=lambda r: int(r[1:]))
            note = f" N{notes.setdefault(cell['reason'], len(notes) + 1)}" if cell["reason"] else ""
            word = {"works": "works", "refused": "**refused**", "failed": "**FAILED**", "untested": "—"}[cell["status"]]
            cells.append(f"{word}{' (' + ', '.join(refs) + ')' if refs else ''}{note}")
        lines.append(f"| {family} (`{row['architecture']}`) | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Tests (in `tests/compressor/models/`, one case per family): "
                 + "; ".join(f"T{i} `{name}`" for name, i in tests.items()) + ".")
    lines.append("")
    lines += [f"- N{i}: {reason}" for reason, i in notes.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-jobs", action="store_true", help="skip the compressor.run jobs (they need the model store)")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = parser.parse_args()
    cases = run_tests(TESTS + ([] if args.no_jobs else JOB_TESTS))
    results = build_results(cases, tiny_configs())
    out = REPO / "bench" / "results" / "families.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    text = args.readme.read_text()
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _m: f"{START}\n{table}\n{END}", text, flags=re.S)
        args.readme.write_text(text)
    print(table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
