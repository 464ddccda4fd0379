"""Mutation testing: how many small wrong changes to the numerical and data modules the suite catches.

Runs mutmut 3 (`pip install -e .[mutation]`) with the settings in pyproject.toml [tool.mutmut]: every
module that computes numbers or reads data is mutated (objectives, likelihoods, distributions,
model, evaluate, anomaly, data, datasets, sources, latent, probe, diagnostics), and the default
test suite (pytest's addopts: -m 'not slow', filterwarnings = error) runs against each mutant,
each mutant only with the tests that call the mutated function. Prints killed / total per module
and the surviving mutants; `--diffs` prints each survivor's change. The whole run takes about an
hour on 2 cores: run it in the background, not in CI.

    python benchmarks/mutation.py                          # everything (results kept in mutants/)
    python benchmarks/mutation.py --resume                 # continue an interrupted run
    python benchmarks/mutation.py --modules objectives --tests tests/test_objectives.py --diffs
    python benchmarks/mutation.py --report-only --diffs    # the figures of the last run again

How it runs here: mutmut copies src/, tests/ and configs/ into mutants/ and imports the package from
mutants/src, so PYTHONPATH is dropped for the run (a PYTHONPATH entry naming mutants/src before it
exists is cached by Python as "nothing here", and one naming src/ or an editable install would
import the unmutated code). The tests find the real data at ../shared/data beside the project
(tests/conftest.py); seen from mutants/tests that is REPO/shared/data, so a link REPO/shared ->
../shared is made for the run and removed afterwards, else the data tests would skip and every
mutant only they catch would survive. `--tests` restricts the suite to some files (the others are
given to pytest as --ignore through PYTEST_ADDOPTS).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
MUTANTS = REPO / "mutants"
KILLED = {"killed", "timeout", "caught by type check"}  # what mutmut's own score counts as caught


def fail(message: str) -> None:
    """One line (or the log's tail) on stderr, exit code 2."""
    print(f"mutation.py: {message}", file=sys.stderr)
    sys.exit(2)


def mutated_modules() -> list[str]:
    """Module names (objectives, ...) of the files pyproject.toml [tool.mutmut] only_mutate names."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]
    return [Path(p).stem for p in cfg["only_mutate"]]


def run_mutmut(*args: str, env: dict[str, str], log=None) -> int:
    """`python -m mutmut ARGS` in the project root (mutmut reads ./pyproject.toml)."""
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=REPO, env=env, stdout=log,
                          stderr=subprocess.STDOUT if log else None, text=True).returncode


def run_env(tests: list[str]) -> dict[str, str]:
    """The environment of the run: no PYTHONPATH; with `tests`, every other test file ignored (so the
    stats run, the one with no test ids, runs only those; each mutant still runs only its own tests)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if tests:
        keep = {(REPO / t).resolve() for t in tests}
        missing = [t for t in tests if not (REPO / t).is_file()]
        if missing:
            fail(f"no test file {', '.join(missing)} (give paths like tests/test_x.py)")
        env["PYTEST_ADDOPTS"] = " ".join(f"--ignore={f.relative_to(REPO)}"
                                         for f in sorted((REPO / "tests").glob("test_*.py"))
                                         if f.resolve() not in keep)
    return env


def link_shared_data() -> Path | None:
    """REPO/shared -> ../shared, so mutants/tests/conftest.py finds ../shared/data; None if not made."""
    link, target = REPO / "shared", REPO.parent / "shared"
    if link.exists() or link.is_symlink() or not (target / "data").is_dir():
        return None
    link.symlink_to(os.path.relpath(target, REPO), target_is_directory=True)
    return link


def results(env: dict[str, str]) -> dict[str, str]:
    """{mutant name: status} from `mutmut results --all true` (lines '    NAME: STATUS')."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=REPO,
                         env=env, capture_output=True, text=True, check=True).stdout
    return dict(line.strip().rsplit(": ", 1) for line in out.splitlines() if ": " in line)


def readable(name: str) -> str:
    """vaekit.model.xǁVAEǁdecode__mutmut_3 -> model: VAE.decode #3 (mutmut's mangling undone)."""
    m = re.fullmatch(r"vaekit\.(\w+)\.x(?:ǁ(\w+)ǁ|_)(\w+?)__mutmut_(\d+)", name)
    if not m:
        return name
    module, cls, func, n = m.groups()
    return f"{module}: {cls + '.' if cls else ''}{func} #{n}"


def report(status: dict[str, str], modules: list[str], diffs: bool, env: dict[str, str]) -> None:
    """killed / total per module (mutants not checked yet left out and counted apart), survivors."""
    by_module = {mod: {k: v for k, v in status.items()
                       if k.startswith(f"vaekit.{mod}.") and v != "not checked"} for mod in modules}
    unchecked = sum(v == "not checked" for k, v in status.items()
                    if any(k.startswith(f"vaekit.{mod}.") for mod in modules))
    print(f"\n{'module':12} {'killed':>7} {'total':>6} {'score':>6}  other outcomes")
    total = Counter()
    for mod, st in by_module.items():
        counts = Counter(st.values())
        killed = sum(counts[s] for s in KILLED)
        total.update(counts)
        other = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in KILLED)
        score = f"{100 * killed / len(st):5.1f}%" if st else "    -"
        print(f"{mod:12} {killed:7d} {len(st):6d} {score}  {other}")
    killed, n = sum(total[s] for s in KILLED), sum(total.values())
    print(f"{'all':12} {killed:7d} {n:6d} {100 * killed / max(n, 1):5.1f}%  "
          "(score = killed / mutants checked; 'no tests': no test calls the function)")
    if unchecked:
        print(f"{unchecked} mutants of these modules not checked (interrupted, or --mutants chose others)")
    alive = sorted(k for st in by_module.values() for k, v in st.items() if v not in KILLED)
    print(f"\nnot killed ({len(alive)}):")
    for name in alive:
        print(f"  {status[name]:12} {readable(name):45} {name}")
        if diffs:
            show = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=REPO, env=env,
                                  capture_output=True, text=True).stdout
            print("".join(f"      {line}\n" for line in show.splitlines()[1:] if line.startswith(("-", "+"))
                          and not line.startswith(("---", "+++"))), end="")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--modules", help="comma list of module names to mutate (default: every module in "
                   "[tool.mutmut] only_mutate)")
    p.add_argument("--tests", nargs="*", default=[], help="test files to run instead of the default "
                   "suite (e.g. the fast ones of a module)")
    p.add_argument("--mutants", nargs="*", default=[], help="mutant name patterns to run instead "
                   "of whole modules (e.g. 'vaekit.objectives.x_beta_at*', a survivor after a new test)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants tested at once")
    p.add_argument("--resume", action="store_true", help="keep mutants/ and its results (default: "
                   "start afresh, so results never mix two test selections)")
    p.add_argument("--report-only", action="store_true", help="print the figures of the last run")
    p.add_argument("--diffs", action="store_true", help="print each surviving mutant's change")
    args = p.parse_args()
    if importlib.util.find_spec("mutmut") is None:
        fail("mutmut is not importable; install it with: pip install -e '.[mutation]'")
    every = mutated_modules()
    modules = args.modules.split(",") if args.modules else every
    unknown = sorted(set(modules) - set(every))
    if unknown:
        fail(f"{', '.join(unknown)} not in [tool.mutmut] only_mutate; choose from "
                 f"{', '.join(every)}")
    env = run_env(args.tests)
    if args.report_only and not MUTANTS.is_dir():
        fail("no mutants/ folder: run the mutation testing first")
    if not args.report_only:
        if not args.resume:
            shutil.rmtree(MUTANTS, ignore_errors=True)
        MUTANTS.mkdir(exist_ok=True)
        patterns = args.mutants or ([] if modules == every else [f"vaekit.{m}.*" for m in modules])
        link = link_shared_data()
        log_path = MUTANTS / "vaekit-mutation.log"
        print(f"mutating {', '.join(modules)}; tests: {' '.join(args.tests) or 'the default suite'}; "
              f"{args.jobs} at once; mutmut's output in {log_path.relative_to(REPO)}", flush=True)
        try:
            with log_path.open("w") as log:
                code = run_mutmut("run", "--max-children", str(args.jobs), *patterns, env=env, log=log)
        finally:
            if link:
                link.unlink()
        if code:
            tail = log_path.read_text(errors="replace").replace("\r", "\n").splitlines()[-15:]
            fail("mutmut run failed (exit {}); the end of its log:\n{}".format(code, "\n".join(tail)))
    report(results(env), modules, args.diffs, env)


if __name__ == "__main__":
    main()
