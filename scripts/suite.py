#!/usr/bin/env python3
"""Runs the workspace's tests in two groups, and loops test binaries to find flakes.

    suite.py run [--beside-alone COMMAND]
                                     every test: the shared group side by side, then the
                                     alone group one job at a time (with COMMAND beside it
                                     at the lowest CPU and I/O priority: CI's build checks)
    suite.py loop [-n N] [--load | --load-beside COMMAND] JOB...
                                     runs each JOB N times (default 10); with --load, the shared
                                     group runs over and over beside it, as the suite's load;
                                     with --load-beside, COMMAND at the lowest priority, as
                                     CI's build checks beside the alone group
    suite.py list                    the jobs, their group and their last time

Both expect what scripts/test sets up (registry servers in RPC_TEST_*): use `scripts/test` and
`scripts/loop`, which start them.

How the suite is cut into jobs:

- `cargo build --workspace --bins --tests` builds every test binary once (and every binary the
  other scripts run, with the same features); each test binary is a job, run
  directly (its tests on libtest's threads), and the doc tests are one more job
  (`cargo test --workspace --doc`).
- Most tests wait on sockets, timers and registry servers rather than on the CPU, so the jobs
  of the *shared* group run side by side, `--jobs` at a time (default 4), the longest first
  (by their time in the last run, kept in target/test-times.json).
- The tests in `ALONE` are timing-sensitive by design: etcd and ZooKeeper clusters losing
  members, re-registration storms measured in milliseconds, frozen processes, 10,000 streams at
  once, thousands of connections. Each runs as a job of its own *after* the shared group, with
  no other test beside it, so the figures it asserts are about the code and not about its
  neighbours. Their binaries' other tests stay in the shared group. A command given with
  `--beside-alone` (CI's build checks) runs beside them at the lowest CPU and I/O priority:
  it takes only the CPU they leave (see `Beside`).

A job's output goes to target/test-logs/JOB.log and is printed when the job fails. The last line
is the plain total: `summary: N passed, N failed, N skipped`. The exit status is 1 when a test
failed.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
LOGS = TARGET / "test-logs"
TIMES = TARGET / "test-times.json"

# Tests that run alone, by binary (package::target) and test name; "*" is the whole binary.
ALONE = {
    # Three-member etcd clusters with a member frozen, partitioned or killed; re-registration
    # storms whose spread is measured; a ZooKeeper ensemble losing its leader.
    "waypost-tests::gray_registry": "*",
    # Registry outages and restarts timed against TTLs, providers killed or frozen under load,
    # hedging and shedding measured by their latency percentiles and goodput.
    "waypost-tests::reliability": "*",
    # Goodput and p99 latency of a shedding server at three times its capacity, against a
    # measured capacity: the ratios hold with the machine to itself.
    "waypost-tests::shedding": ["past_its_capacity_a_shedding_server_keeps_its_latency_and_its_goodput"],
    # 10,000 concurrent streams against one provider.
    "waypost-tests::streaming": ["ten_thousand_concurrent_streams_on_one_provider_lose_nothing"],
    # 1,000 stalled TLS handshakes, with a bound on how long 20 fresh clients take meanwhile.
    "waypost-tests::security": ["connections_that_never_finish_the_handshake_do_not_stall_others"],
    # Thousands of connections, a provider out of file descriptors, memory measured.
    "waypost-tests::hardening": [
        "two_thousand_idle_connections_leave_a_consumer_served_and_memory_bounded",
        "out_of_file_descriptors_the_provider_backs_off_logs_rarely_and_recovers",
        "large_requests_are_read_within_a_memory_budget_and_memory_comes_back",
    ],
}

# Scripts that are jobs of the shared group; each passes (one test) when it exits 0.
SCRIPTS = {
    "scripts/examples": ["scripts/examples"],
    "scripts/demo secure": ["scripts/demo", "secure"],
    "scripts/demo polyglot": ["scripts/demo", "polyglot"],
}

# The longest jobs of the shared group on a machine with no record of a run yet (a fresh clone,
# as in CI): they start first. Two of them compile rather than wait (trybuild's compile-fail
# cases, the doc tests), so they overlap the jobs that wait.
LONG_FIRST = ["waypost-macros::macro_ui", "doc-tests", "waypost-tests::hardening", "waypost-tests::traffic"]

RESULT = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", re.MULTILINE)


class Job:
    """One command of the suite: a test binary (or part of one), or the doc tests."""

    def __init__(self, name, argv, cwd, group):
        self.name, self.argv, self.cwd, self.group = name, argv, cwd, group
        self.passed = self.failed = self.ignored = 0
        self.seconds = 0.0
        self.status = None

    def run(self, log_suffix=""):
        """Runs the job with the environment `cargo test` gives a test binary; its output."""
        LOGS.mkdir(parents=True, exist_ok=True)
        stem = self.name.replace("::", ".").replace("/", "_").replace(" ", "_")
        log = LOGS / f"{stem}{log_suffix}.log"
        started = time.monotonic()
        with open(log, "w") as out:
            self.status = subprocess.run(self.argv, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=test_env(self.cwd)).returncode
        self.seconds = time.monotonic() - started
        self.passed = self.failed = self.ignored = 0
        text = log.read_text(errors="replace")
        for m in RESULT.finditer(text):
            self.passed += int(m[1])
            self.failed += int(m[2])
            self.ignored += int(m[3])
        if self.status != 0 and self.failed == 0:
            self.failed = 1  # the binary itself failed (crashed, or failed to build doc tests)
        if self.status == 0 and not RESULT.search(text):
            self.passed = 1  # a script (an example or a demo) that checked what it shows
        return text


def test_env(manifest_dir):
    """What `cargo test` adds to a test binary's environment that the tests here rely on: the
    toolchain's shared libraries (a proc-macro crate's tests link libstd dynamically), the
    package's directory, and cargo itself (trybuild runs it); and, for the scripts among the
    jobs, that the workspace is built."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [TARGET_LIBDIR, env.get("LD_LIBRARY_PATH")]))
    env["CARGO_MANIFEST_DIR"] = str(manifest_dir)
    env.setdefault("CARGO", "cargo")
    env["WAYPOST_BUILT"] = "1"  # the scripts among the jobs use this build (scripts/lib.sh)
    return env


TARGET_LIBDIR = subprocess.run(["rustc", "--print", "target-libdir"], stdout=subprocess.PIPE, text=True,
                               check=True).stdout.strip()


def package_name(package_id):
    """The name in a package id: `path+file:///dir#name@version`, or `path+file:///dir#version`
    when the name is the directory's."""
    location, _, fragment = package_id.partition("#")
    return fragment.split("@")[0] if "@" in fragment else Path(location).name


def build():
    """Builds every test binary once; the jobs of the suite."""
    # The same build as scripts/lib.sh's build_workspace: the later scripts reuse it all.
    cmd = ["cargo", "build", "--workspace", "--bins", "--tests", "--message-format=json-render-diagnostics"]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit("suite: the test build failed")
    jobs = []
    for line in proc.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable") or not msg["profile"]["test"]:
            continue
        name = package_name(msg["package_id"])
        target = msg["target"]
        label = f"{name}::{target['name']}"
        if "lib" in target["kind"] or "proc-macro" in target["kind"]:
            label = f"{name}::lib"
        elif "bin" in target["kind"]:
            label = f"{name}::bin.{target['name']}"
        cwd = Path(msg["manifest_path"]).parent
        jobs.append((label, msg["executable"], cwd))
    missing = set(ALONE) - {label for label, _, _ in jobs}
    if missing:
        sys.exit(f"suite: ALONE names binaries that were not built: {', '.join(sorted(missing))}")
    suite = []
    for label, exe, cwd in sorted(jobs):
        alone = ALONE.get(label)
        # Alone means alone: one test at a time, nothing beside it.
        if alone == "*":
            suite.append(Job(label, [exe, "--test-threads=1"], cwd, "alone"))
            continue
        skips = []
        listed = set(subprocess.run([exe, "--list", "--format=terse"], cwd=cwd, stdout=subprocess.PIPE,
                                    text=True).stdout.splitlines()) if alone else set()
        for test in alone or []:
            if f"{test}: test" not in listed:
                sys.exit(f"suite: ALONE names {label}::{test}, which that binary does not have")
            suite.append(Job(f"{label}::{test}", [exe, "--exact", test], cwd, "alone"))
            skips += ["--skip", test]
        suite.append(Job(label, [exe, "--exact", *skips] if skips else [exe], cwd, "shared"))
    suite.append(Job("doc-tests", ["cargo", "test", "--workspace", "--doc", "-q"], ROOT, "shared"))
    # The programs users run first, each against a throw-away etcd of its own: every example of
    # examples/features, and the demos of a secured setup and of a Python consumer.
    for name, argv in SCRIPTS.items():
        suite.append(Job(name, argv, ROOT, "shared"))
    return suite


def last_times():
    try:
        return json.loads(TIMES.read_text())
    except (OSError, ValueError):
        return {}


def report(job, quiet_ok=False):
    word = "ok" if job.failed == 0 else "FAILED"
    if job.failed == 0 and quiet_ok:
        return
    print(f"{word:6} {job.seconds:6.1f} s  {job.name} ({job.passed} passed, {job.failed} failed)", flush=True)


def show_failure(job, text):
    print(f"\n---- {job.name}: output ({LOGS}) ----", flush=True)
    lines = text.splitlines()
    print("\n".join(lines[-200:]), flush=True)
    print(f"---- end of {job.name} ----\n", flush=True)


def run_shared(jobs, parallel, stop=None, on_done=None):
    """Runs `jobs` `parallel` at a time, the longest (by the last run) first."""
    times = last_times() or {name: 1000.0 - i for i, name in enumerate(LONG_FIRST)}
    ordered = sorted(jobs, key=lambda j: -times.get(j.name, 0.0))
    lock = threading.Lock()

    def one(job):
        if stop is not None and stop.is_set():
            return
        text = job.run()
        with lock:
            if on_done:
                on_done(job, text)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, ordered))


class Beside:
    """A command that runs beside the alone group at the lowest CPU and I/O priority (`nice 19`,
    `ionice` idle): it takes only the time the alone group's tests leave, which is most of it
    (they wait on clusters, timers and processes more than they compute), and the scheduler
    gives the tests the CPU the moment they want it. CI runs scripts/check-build this way. It
    must not build what the alone group runs (the test binaries and `test-provider`) or touch
    the registry servers' data; check-build builds other features and binaries, and starts
    servers of its own."""

    def __init__(self, command):
        self.job = Job(f"beside the alone group: {command}", ["nice", "-n", "19", "ionice", "-c", "3", "sh", "-c", command],
                       ROOT, "alone")
        LOGS.mkdir(parents=True, exist_ok=True)
        self.job.log = LOGS / "beside-alone.log"
        self.started = time.monotonic()
        self.out = open(self.job.log, "w")
        env = dict(os.environ)
        env.pop("WAYPOST_BUILT", None)
        self.proc = subprocess.Popen(self.job.argv, cwd=ROOT, stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        print(f"suite: started `{command}` beside the alone group", flush=True)

    def wait(self):
        """Waits for the command; its job (one test: passed when it exited 0)."""
        status = self.proc.wait()
        self.out.close()
        job = self.job
        job.seconds = time.monotonic() - self.started
        job.status = status
        job.passed, job.failed = (1, 0) if status == 0 else (0, 1)
        return job


def cmd_run(args):
    building = time.monotonic()
    suite = build()
    print(f"suite: the build took {time.monotonic() - building:.0f} s", flush=True)
    started = time.monotonic()
    shared = [j for j in suite if j.group == "shared"]
    alone = [j for j in suite if j.group == "alone"]
    print(f"suite: {len(shared)} jobs side by side ({args.jobs} at a time), then {len(alone)} alone", flush=True)

    def done(job, text):
        report(job)
        if job.failed:
            show_failure(job, text)

    run_shared(shared, args.jobs, on_done=done)
    shared_secs = time.monotonic() - started
    beside = Beside(args.beside_alone) if args.beside_alone else None
    for job in alone:
        done(job, job.run())
    if beside:
        job = beside.wait()
        suite.append(job)
        done(job, job.log.read_text(errors="replace"))
    total = time.monotonic() - started
    times = last_times()
    times.update({j.name: round(j.seconds, 1) for j in suite})
    TIMES.write_text(json.dumps(times, indent=1, sort_keys=True))
    print("\nslowest jobs:")
    for job in sorted(suite, key=lambda j: -j.seconds)[:12]:
        print(f"  {job.seconds:6.1f} s  [{job.group}] {job.name}")
    print(f"suite: shared group {shared_secs:.0f} s, alone group {total - shared_secs:.0f} s, total {total:.0f} s")
    failed = [j.name for j in suite if j.failed]
    if failed:
        print("failed jobs: " + ", ".join(failed))
    passed = sum(j.passed for j in suite)
    print(f"summary: {passed} passed, {sum(j.failed for j in suite)} failed, {sum(j.ignored for j in suite)} skipped")
    return 1 if failed else 0


def cmd_loop(args):
    suite = build()
    wanted = []
    for name in args.names:
        matches = [j for j in suite if j.name == name] or [j for j in suite if j.name.startswith(name + "::")]
        if not matches:
            sys.exit(f"suite: no job named {name}; `suite.py list` shows them")
        wanted += matches
    stop = threading.Event()
    load_rounds = [0]

    def load():
        background = [j for j in build_quiet(suite) if j.group == "shared" and j.name not in {w.name for w in wanted}]
        while not stop.is_set():
            run_shared(background, args.jobs, stop=stop)
            load_rounds[0] += 1

    def load_beside():
        # The command over and over at the lowest priority, as CI runs its build checks
        # beside the alone group (see Beside).
        while not stop.is_set():
            Beside(args.load_beside).wait()
            load_rounds[0] += 1

    loader = None
    if args.load:
        loader = threading.Thread(target=load, daemon=True)
    elif args.load_beside:
        loader = threading.Thread(target=load_beside, daemon=True)
    if loader:
        loader.start()
    failures = {j.name: 0 for j in wanted}
    for i in range(1, args.n + 1):
        for job in wanted:
            text = job.run(log_suffix=f".loop{i}")
            print(f"run {i}/{args.n}: ", end="")
            report(job)
            if job.failed:
                failures[job.name] += 1
                show_failure(job, text)
    stop.set()
    if loader:
        loader.join()
    print()
    for name, count in failures.items():
        extra = ""
        if args.load:
            extra = f", under the shared group as load ({load_rounds[0]} rounds of it)"
        elif args.load_beside:
            extra = f", beside `{args.load_beside}` at the lowest priority ({load_rounds[0]} runs of it)"
        print(f"loop: {name}: {count} of {args.n} runs failed{extra}")
    return 1 if any(failures.values()) else 0


def build_quiet(suite):
    """Fresh jobs for the same commands, logged apart (the load runs beside the loop's own)."""
    return [Job(j.name + ".load", j.argv, j.cwd, j.group) for j in suite]


def cmd_list(_args):
    times = last_times()
    for job in build():
        t = times.get(job.name)
        print(f"{job.group:6} {'%6.1f s' % t if t is not None else '     ? '}  {job.name}")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("SUITE_JOBS", "4")),
                        help="jobs of the shared group at a time (default 4, or $SUITE_JOBS)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--beside-alone", metavar="COMMAND",
                     help="a shell command to run beside the alone group at the lowest priority (see Beside)")
    loop = sub.add_parser("loop")
    loop.add_argument("-n", type=int, default=10)
    loop.add_argument("--load", action="store_true")
    loop.add_argument("--load-beside", metavar="COMMAND",
                      help="a shell command run over and over beside the loop at the lowest priority")
    loop.add_argument("names", nargs="+", metavar="JOB")
    sub.add_parser("list")
    args = parser.parse_args()
    return {"run": cmd_run, "loop": cmd_loop, "list": cmd_list}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
