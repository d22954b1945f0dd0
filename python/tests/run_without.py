"""Runs a pytest file with some modules made unimportable, and checks that it passes and reports
its tests skipped with the reason: proof that an optional package (PyTorch) is optional even on a
machine where it is installed.

    python3 run_without.py --block torch --expect-reason "PyTorch is not installed" -- FILE [pytest args]

Exit 0 when pytest exits 0, reports at least one skipped test, no test passed that would have
needed the blocked module, and prints the expected reason; 1 otherwise.
"""
import argparse
import os
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--block", action="append", required=True, help="a top-level module to hide")
    ap.add_argument("--expect-reason", required=True)
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    with tempfile.TemporaryDirectory() as blocker:
        for name in args.block:
            os.makedirs(os.path.join(blocker, name))
            with open(os.path.join(blocker, name, "__init__.py"), "w") as f:
                f.write(f"raise ImportError('{name} made unimportable by run_without.py')\n")
        env = dict(os.environ)
        env["PYTHONPATH"] = blocker + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"] + rest
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(proc.stdout)
    problems = []
    if proc.returncode != 0:
        problems.append(f"pytest exited {proc.returncode}, expected 0")
    if " skipped" not in proc.stdout:
        problems.append("no test was reported skipped")
    if args.expect_reason not in proc.stdout:
        problems.append(f"the reason {args.expect_reason!r} was not printed")
    for p in problems:
        print("run_without.py: FAIL:", p)
    if not problems:
        print("run_without.py: OK: passes and reports skipped with", " ".join(args.block), "unimportable")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
