"""Renders BENCHMARKS.md from the outputs of scripts/bench (a work directory of JSON lines)."""
import datetime
import json
import os
import platform
import re
import sys


def load_jsonl(path):
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip().startswith("{")]


def main(work, mode, cores):
    echo = load_jsonl(os.path.join(work, "echo.jsonl"))
    watch = load_jsonl(os.path.join(work, "watch.jsonl"))
    scale = load_jsonl(os.path.join(work, "scale.jsonl"))
    costs = [l for l in load_jsonl(os.path.join(work, "costs.jsonl")) if l.get("bench") in ("layer_cost", "metrics_cost")]
    criterion = open(os.path.join(work, "criterion.txt")).read() if os.path.exists(os.path.join(work, "criterion.txt")) else ""
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = ["# Benchmarks\n"]
    out.append("Every table below comes from one run of `scripts/bench`"
               + (" --quick" if mode == "--quick" else "") + ", which starts a throw-away etcd and ZooKeeper, "
               "runs `rpc-bench` and the criterion benches, and rewrites this file. The machines are shared "
               "and noisy: compare the ratios within one run, not absolute numbers across runs.\n")
    out.append(f"Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()} Linux, "
               f"{cores} cores ({cpu}), release build.\n")
    out.append("## Echo\n")
    out.append("`cargo run --release -p rpc-bench -- echo" + (" --quick" if mode == "--quick" else "") + "`. "
               "Server and client share the process, each on a tokio runtime of one worker thread; the "
               "load is `concurrency` callers in a closed loop on one connection (the raw floor keeps the "
               "same number of frames in flight, pipelined). Server CPU is the server runtime thread's "
               "user+system time per call.\n")
    for payload in sorted({m["payload"] for m in echo}):
        out.append(f"### {payload} B payload\n")
        out.append("| framework | concurrency | calls/s | p50 µs | p99 µs | server CPU µs/call |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for m in [m for m in echo if m["payload"] == payload]:
            out.append(f"| {m['framework']} | {m['concurrency']} | {m['qps']:,.0f} | {m['p50_us']} | {m['p99_us']} | {m['server_cpu_us_per_call']:.1f} |")
        out.append("")
    if echo:
        out.append("Note: tonic at 4 KiB and concurrency 1 stalls about 44 ms per call in this harness, even with TCP_NODELAY set on both its client and its accepted sockets; we did not tune tonic further.\n")
        out.append("### Ratios (64 B, concurrency 256)\n")
        at = {m["framework"]: m for m in echo if m["payload"] == 64 and m["concurrency"] == 256}
        me = at.get("rpc-core/bincode")
        if me:
            out.append("| against | calls/s ratio | target |")
            out.append("|---|---:|---|")
            for peer, target in [("tarpc/bincode", "≥ 2"), ("tonic/protobuf", "≥ 5"), ("raw-tcp-floor", "≥ 0.25")]:
                if peer in at:
                    out.append(f"| {peer} | {me['qps'] / at[peer]['qps']:.2f} | {target} |")
            out.append("")
            c1 = {m["framework"]: m for m in echo if m["payload"] == 64 and m["concurrency"] == 1}
            if "rpc-core/bincode" in c1 and "raw-tcp-floor" in c1:
                out.append(f"Concurrency 1, p50: rpc-core/bincode {c1['rpc-core/bincode']['p50_us']} µs against the raw floor's "
                           f"{c1['raw-tcp-floor']['p50_us']} µs (ratio {c1['rpc-core/bincode']['p50_us'] / max(1, c1['raw-tcp-floor']['p50_us']):.2f}, target ≤ 1.5).\n")
    if costs:
        out.append("## Middleware and metrics cost (server and client in separate processes)\n")
        out.append("`rpc-bench layer-cost` and `rpc-bench metrics-cost`: echo of a 64 B `Vec<u8>` between a server "
                   "process and a client process (one tokio worker each, both started fresh for every run), "
                   "256 calls outstanding, alternating rounds without and with the addition on both the server "
                   "and the client; medians. CPU per call comes from `/proc/<pid>/stat` over the measured window. "
                   "Metrics on means the metrics layer on both sides recording into the Prometheus recorder "
                   "that `rpc.metrics.listen` installs (its `/metrics` endpoint running).\n")
        out.append("| setup | rounds | calls/s | server CPU µs/call | client CPU µs/call | calls/s change |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for l in costs:
            added = "metrics on" if l.get("metrics") else f"{l['layers']} no-op layers"
            out.append(f"| without | {l['rounds']} | {l['qps_without']:,.0f} | {l['server_cpu_us_without']:.2f} | {l['client_cpu_us_without']:.2f} | |")
            out.append(f"| {added} | {l['rounds']} | {l['qps_with']:,.0f} | {l['server_cpu_us_with']:.2f} | {l['client_cpu_us_with']:.2f} | {l['qps_change_percent']:+.1f}% |")
        out.append("\nTargets: no-op layers no worse than -5% calls/s; metrics cost a fraction of a microsecond of CPU per call on each side.\n")
    out.append("## Discovery micro-benchmarks\n")
    out.append("`cargo bench -p rpc-bench --bench discovery` (criterion): a discovery cache hit, and one pick "
               "per load balancer on 1, 10 and 1,000 instances.\n")
    out.append("| benchmark | ns/iter |")
    out.append("|---|---:|")
    for line in criterion.splitlines():
        m = re.match(r"test (.+?)\s+\.\.\. bench:\s+([\d,.]+) ns/iter", line)
        if m:
            out.append(f"| {m.group(1)} | {m.group(2)} |")
    out.append("")
    out.append("## Watch propagation\n")
    out.append("`rpc-bench watch --etcd HOST:PORT --zookeeper HOST:PORT`: 200 events alternating register and "
               "deregister; each is timed from the registry call until the consumer's discovery cache shows it.\n")
    out.append("| registry | events | p50 ms | p99 ms |")
    out.append("|---|---:|---:|---:|")
    for w in watch:
        out.append(f"| {w['registry']} | {w['events']} | {w['p50_us'] / 1000:.2f} | {w['p99_us'] / 1000:.2f} |")
    out.append("")
    out.append("## Scale\n")
    out.append("`rpc-bench scale --etcd HOST:PORT`: 10 instances of each of 1,000 services registered through four "
               "registry clients (each with its own connection and lease, as four provider processes); one "
               "consumer loads and watches every service, then follows 1,000 weight changes per second for "
               "5 s; lag is from the change's put to the consumer's cache update.\n")
    for s in scale:
        out.append("| figure | value |")
        out.append("|---|---:|")
        for k, v in s.items():
            if k != "bench":
                out.append(f"| {k.replace('_', ' ')} | {v} |")
    out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
