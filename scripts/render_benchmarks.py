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


FRAMEWORKS = ["waypost/bincode", "waypost/bincode+Bytes", "tarpc/bincode", "tonic/protobuf", "volo-thrift", "raw-tcp-floor",
              "waypost/postcard", "waypost/json"]
PEERS = ["tarpc/bincode", "tonic/protobuf", "volo-thrift"]

SERIALIZERS_NOTE = ("msgpack is the default: it writes every value with its type and structs as maps by field "
                    "name, so services can add fields, variants and arguments during a rollout "
                    "(docs/define-and-serve.md, \"Changing a service\"). bincode and postcard are fixed-schema. Target: msgpack's server CPU "
                    "per call within 10% of bincode's.\n")
HTTP_NOTE = ("The same record echo over HTTP/JSON: this framework's ingress (on its RPC port, through the same "
             "limit, interceptors and handler as an RPC call) against an axum router whose one handler reads "
             "`[record]` and answers `record` as JSON, the same work. hyper's client encodes each request and "
             "decodes each answer. Target: the framework's HTTP path within 1.2x axum's server CPU per call.\n")
SCALING_NOTE = ("How the server uses more cores: each connection is one task that reads frames and runs "
                "handlers that finish at once inline; handlers that wait, and each connection's writer, are "
                "tasks of their own, so the tokio scheduler spreads connections and waiting calls over every "
                "worker; nothing is shared between connections on the call path but a concurrency semaphore "
                "and the service map (read-only). This machine has 2 cores, so 4 workers can only show that "
                "nothing collapses when threads outnumber cores.\n")


def targets(out, rows, size_name):
    """The issue's targets, checked against this run."""
    at = {(m["framework"], m["payload"], m["concurrency"]): m for m in rows if m.get("connections", 1) == 1}
    me = "waypost/bincode"
    lines = []
    for size in sorted({p for (_, p, _) in at}):
        for c in (32, 256):
            mine = at.get((me, size, c))
            if not mine:
                continue
            checks = []
            tarpc, volo = at.get(("tarpc/bincode", size, c)), at.get(("volo-thrift", size, c))
            if tarpc:
                r = mine["qps"] / tarpc["qps"]
                checks.append(f"{r:.2f}x tarpc {'✓' if r >= 2 else '✗'}")
                cpu = mine["server_cpu_us_per_call"] / tarpc["server_cpu_us_per_call"]
                checks.append(f"server CPU {cpu:.2f}x tarpc's {'✓' if cpu <= 0.5 else '✗'}")
            if volo:
                r = mine["qps"] / volo["qps"]
                checks.append(f"{r:.2f}x volo {'✓' if r >= 1.5 else '✗'}")
                shared = at.get(("waypost/bincode+Bytes", size, c))
                if shared:
                    r = shared["qps"] / volo["qps"]
                    checks.append(f"(with `Bytes` payloads: {r:.2f}x volo)")
            peers = [at[(p, size, c)] for p in PEERS if (p, size, c) in at]
            if peers:
                worst = min(p["p99_us"] for p in peers)
                checks.append(f"p99 {mine['p99_us']:,} µs vs best peer {worst:,} {'✓' if mine['p99_us'] < worst else '✗'}")
            lines.append(f"| {size_name(size)} | {c} | " + " · ".join(checks) + " |")
    if not lines:
        return
    out.append("### Targets\n")
    out.append("| payload | outstanding | calls/s ≥ 2x tarpc and ≥ 1.5x volo; server CPU ≤ 0.5x tarpc's; p99 below every peer's |")
    out.append("|---|---:|---|")
    out.extend(lines)
    out.append("")
    absolute = []
    for size, c, limit in ((4096, 256, 5.0), (64, 256, 1.0)):
        m = at.get((me, size, c))
        if m:
            v = m["server_cpu_us_per_call"]
            absolute.append(f"* {size_name(size)}, {c} outstanding: server CPU {v:.2f} µs/call (target ≤ {limit}) {'✓' if v <= limit else '✗'}")
    mine, floor = at.get((me, 64, 1)), at.get(("raw-tcp-floor", 64, 1))
    if mine and floor:
        r = mine["p50_us"] / max(1, floor["p50_us"])
        absolute.append(f"* 64 B, 1 outstanding: p50 {mine['p50_us']} µs against the raw floor's {floor['p50_us']} µs, {r:.2f}x (target ≤ 1.2) {'✓' if r <= 1.2 else '✗'}")
    out.extend(absolute)
    out.append("")


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
               "runs `waypost-bench` and the criterion benches, and rewrites this file. The machines are shared "
               "and noisy: compare the ratios within one run, not absolute numbers across runs.\n")
    out.append(f"Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()} Linux, "
               f"{cores} cores ({cpu}), release build.\n")
    out.append("## Echo between processes\n")
    out.append("`waypost-bench echo" + (" --quick" if mode == "--quick" else "") + "` (built with `--features volo`). "
               "Every case starts a fresh server process and a fresh client process on this machine (loopback), "
               "each on a tokio runtime of one worker thread unless the table says otherwise; the client keeps "
               "`concurrency` calls outstanding per connection in a closed loop. The payload is what users "
               "write: a plain `Vec<u8>` (tonic: `bytes`, volo-thrift: `binary` as `Bytes`), a `String`, or a "
               "record with a few fields and a list of items. CPU per call is each process's user+system time "
               "over the measured window (`/proc/<pid>/stat`) divided by the calls completed in it. Peers run "
               "in their idiomatic configuration: tarpc 0.38 over its TCP transport with bincode, tonic 0.14 "
               "(HTTP/2, protobuf), volo-thrift 0.12 (framed binary protocol, pooled connections); the raw "
               "TCP floor pipelines length-prefixed frames with no serialization at all. The extra rows "
               "`waypost/bincode+Bytes` echo `bytes::Bytes` instead of `Vec<u8>` (the type volo-thrift hands out "
               "for `binary`): from 16 KiB on, such a payload is written from the caller's memory and "
               "received as a slice of the frame, never copied in user space; a `Vec<u8>` or `String` of that "
               "size that ends the body is read straight into the vector the receiver gets, so the plain "
               "rows avoid user-space copies too. Each caller sends what its last "
               "call returned, so no framework pays for a clone in the harness.\n")
    def size_name(n):
        return f"{n // 1048576} MiB" if n >= 1048576 else (f"{n // 1024} KiB" if n >= 1024 else f"{n} B")
    def shape(m):
        c = m.get("connections", 1)
        return f"{c}x{m['concurrency']}" if c > 1 else str(m["concurrency"])
    def rows(ms):
        out.append("| framework | outstanding | calls/s | p50 µs | p99 µs | server CPU µs/call | client CPU µs/call |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for m in ms:
            client = m.get("client_cpu_us_per_call")
            out.append(f"| {m['framework']} | {shape(m)} | {m['qps']:,.0f} | {m['p50_us']:,} | {m['p99_us']:,} | "
                       f"{m['server_cpu_us_per_call']:.2f} | {'' if client is None else f'{client:.2f}'} |")
        out.append("")
    one = [m for m in echo if m.get("server_workers", 1) == 1]
    bytes_rows = [m for m in one if m.get("kind", "bytes") == "bytes" and m["framework"] in FRAMEWORKS]
    for size in sorted({m["payload"] for m in bytes_rows}):
        out.append(f"### `Vec<u8>`, {size_name(size)}\n")
        rows(sorted([m for m in bytes_rows if m["payload"] == size],
                    key=lambda m: (m.get("connections", 1) * m["concurrency"], FRAMEWORKS.index(m["framework"]))))
    other = [m for m in one if m.get("kind", "bytes") in ("text", "record")]
    if other:
        out.append("### `String` and record payloads\n")
        for kind, size in sorted({(m["kind"], m["payload"]) for m in other}):
            out.append(f"**{'String' if kind == 'text' else 'record'}, {size_name(size)}**\n")
            rows(sorted([m for m in other if (m["kind"], m["payload"]) == (kind, size)],
                        key=lambda m: FRAMEWORKS.index(m["framework"]) if m["framework"] in FRAMEWORKS else 99))
    serializers = ("waypost/msgpack", "waypost/bincode", "waypost/postcard", "waypost/json")
    sers = [m for m in one if m["framework"] in serializers
            and ((m.get("kind", "bytes") == "bytes" and m["payload"] in (64, 4096))
                 or (m.get("kind") == "record" and m["payload"] == 1024))
            and m["concurrency"] == 256 and m.get("connections", 1) == 1]
    if any(m["framework"] != "waypost/bincode" for m in sers):
        out.append("### Serializers (256 outstanding)\n")
        out.append(SERIALIZERS_NOTE)
        out.append("| serializer | payload | calls/s | server CPU µs/call | vs bincode | client CPU µs/call |")
        out.append("|---|---|---:|---:|---:|---:|")
        def payload(m):
            return ("record " if m.get("kind") == "record" else "Vec<u8> ") + size_name(m["payload"])
        base = {(m.get("kind", "bytes"), m["payload"]): m["server_cpu_us_per_call"]
                for m in sers if m["framework"] == "waypost/bincode"}
        for m in sorted(sers, key=lambda m: (m.get("kind", "bytes"), m["payload"], serializers.index(m["framework"]))):
            b = base.get((m.get("kind", "bytes"), m["payload"]))
            ratio = f"{m['server_cpu_us_per_call'] / b:.2f}x" if b else "-"
            out.append(f"| {m['framework']} | {payload(m)} | {m['qps']:,.0f} | {m['server_cpu_us_per_call']:.2f} | {ratio} | {m.get('client_cpu_us_per_call') or 0:.2f} |")
        out.append("")
    http_names = ("waypost/json", "waypost/http+http1.1", "waypost/http+h2", "axum+http1.1", "axum+h2")
    http = [m for m in one if m["framework"] in http_names and m.get("kind") == "record"
            and m["concurrency"] == 256 and m.get("connections", 1) == 1]
    if any(m["framework"].startswith("axum") for m in http):
        out.append("### HTTP/JSON (record 1 KiB, 256 outstanding)\n")
        out.append(HTTP_NOTE)
        out.append("| server | protocol | calls/s | p50 µs | p99 µs | server CPU µs/call | vs axum | client CPU µs/call |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|")
        axum = {m["framework"].split("+")[1]: m["server_cpu_us_per_call"] for m in http if m["framework"].startswith("axum")}
        for m in sorted(http, key=lambda m: http_names.index(m["framework"])):
            name, _, proto = m["framework"].partition("+")
            proto = {"http1.1": "HTTP/1.1 (a connection per call in flight)", "h2": "HTTP/2 (one connection)"}.get(proto, "RPC, json serializer")
            base = axum.get(m["framework"].split("+")[1]) if "+" in m["framework"] else None
            ratio = f"{m['server_cpu_us_per_call'] / base:.2f}x" if base else "-"
            out.append(f"| {name} | {proto} | {m['qps']:,.0f} | {m['p50_us']:,} | {m['p99_us']:,} | "
                       f"{m['server_cpu_us_per_call']:.2f} | {ratio} | {m.get('client_cpu_us_per_call') or 0:.2f} |")
        out.append("")
    scaling = [m for m in echo if m["framework"] == "waypost/bincode" and m.get("connections", 1) == 4]
    if len({m.get("server_workers", 1) for m in scaling}) > 1:
        out.append("### Server worker threads (waypost, `Vec<u8>`, 4 connections x 256)\n")
        out.append("| payload | server workers | calls/s | p99 µs | server CPU µs/call |")
        out.append("|---|---:|---:|---:|---:|")
        for m in sorted(scaling, key=lambda m: (m["payload"], m.get("server_workers", 1))):
            out.append(f"| {size_name(m['payload'])} | {m.get('server_workers', 1)} | {m['qps']:,.0f} | {m['p99_us']:,} | {m['server_cpu_us_per_call']:.2f} |")
        out.append("")
        out.append(SCALING_NOTE)
    tls_names = ["waypost/bincode", "waypost/bincode+tls", "tonic/protobuf", "tonic/protobuf+tls"]
    tls = [m for m in one if m["framework"] in tls_names and m.get("kind", "bytes") == "bytes"
           and m["concurrency"] == 256 and m.get("connections", 1) == 1 and m["payload"] in (64, 4096)]
    if any(m["framework"].endswith("+tls") for m in tls):
        out.append("### Over TLS (`Vec<u8>`, 256 outstanding)\n")
        out.append("The same echo with TLS between the processes (rustls with ring on both frameworks, TLS 1.3, "
                   "server certificate only, made for the run), next to plain TCP from the tables above.\n")
        for size in (64, 4096):
            out.append(f"**{size_name(size)}**\n")
            rows(sorted([m for m in tls if m["payload"] == size], key=lambda m: tls_names.index(m["framework"])))
    streams = [m for m in one if "/stream+" in m["framework"]]
    if streams:
        out.append("### Streams (`Vec<u8>` items)\n")
        out.append("`waypost/stream+server` and `tonic/stream+server`: the server sends items of the given size without "
                   "end and the client reads them as fast as they come (a call here is one item; no clock is read per "
                   "item, so there is no latency). `+bidi`: each client stream sends an item and waits for the server "
                   "to send it back before the next (a call is one round trip; 1 or 32 streams on one connection). "
                   "Both frameworks make every item afresh as a `Vec<u8>` and run on their defaults: waypost's "
                   "window of 65,536 items or 1 MiB per stream, tonic's HTTP/2 flow control.\n")
        out.append("| framework | item | streams | items/s | MB/s | p50 µs | p99 µs | server CPU µs/item | client CPU µs/item | items/s vs tonic |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        tonic = {(m["framework"].split("+")[1], m["payload"], m["concurrency"]): m["qps"]
                 for m in streams if m["framework"].startswith("tonic")}
        order = ("waypost/stream+server", "tonic/stream+server", "waypost/stream+bidi", "tonic/stream+bidi")
        for m in sorted(streams, key=lambda m: (order.index(m["framework"]) // 2, m["payload"], m["concurrency"], order.index(m["framework"]))):
            base = tonic.get((m["framework"].split("+")[1], m["payload"], m["concurrency"]))
            ratio = f"{m['qps'] / base:.2f}x" if base else "-"
            mb = m["qps"] * m["payload"] / 1e6
            out.append(f"| {m['framework']} | {size_name(m['payload'])} | {m['concurrency']} | {m['qps']:,.0f} | {mb:,.0f} | "
                       f"{m['p50_us']:,} | {m['p99_us']:,} | {m['server_cpu_us_per_call']:.2f} | "
                       f"{m.get('client_cpu_us_per_call') or 0:.2f} | {ratio} |")
        out.append("")
        out.append("Memory: see RELIABILITY.md, scenarios 22 (10,000 concurrent streams on one provider) and 23 (a "
                   "slow reader against a fast writer).\n")
    targets(out, bytes_rows, size_name)
    if costs:
        out.append("## Middleware and metrics cost (server and client in separate processes)\n")
        out.append("`waypost-bench layer-cost` and `waypost-bench metrics-cost`: echo of a 64 B `Vec<u8>` between a server "
                   "process and a client process (one tokio worker each, both started fresh for every run), "
                   "256 calls outstanding, alternating rounds without and with the addition on both the server "
                   "and the client; medians. CPU per call comes from `/proc/<pid>/stat` over the measured window. "
                   "Tower layers means three `tower::Layer`s on each side (a `TimeoutLayer`, a "
                   "`ConcurrencyLimitLayer` and a pass-through `MapRequestLayer`), which puts every call through "
                   "the boxed tower stack. Metrics on means the metrics interceptor on both sides recording into "
                   "the Prometheus recorder that `rpc.metrics.listen` installs (its `/metrics` endpoint running).\n")
        out.append("| setup | rounds | calls/s | server CPU µs/call | client CPU µs/call | calls/s change |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for l in costs:
            added = l["with"].split("+", 1)[-1].replace("metrics", "metrics on")
            out.append(f"| without | {l['rounds']} | {l['qps_without']:,.0f} | {l['server_cpu_us_without']:.2f} | {l['client_cpu_us_without']:.2f} | |")
            out.append(f"| {added} | {l['rounds']} | {l['qps_with']:,.0f} | {l['server_cpu_us_with']:.2f} | {l['client_cpu_us_with']:.2f} | {l['qps_change_percent']:+.1f}% |")
        out.append("\nTargets: three tower layers add at most 10% server CPU per call; metrics cost a fraction of a microsecond of CPU per call on each side.\n")
    out.append("## Discovery micro-benchmarks\n")
    out.append("`cargo bench -p waypost-bench --bench discovery` (criterion): a discovery cache hit, and one pick "
               "per load balancer on 1, 10 and 1,000 instances.\n")
    out.append("| benchmark | ns/iter |")
    out.append("|---|---:|")
    for line in criterion.splitlines():
        m = re.match(r"test (.+?)\s+\.\.\. bench:\s+([\d,.]+) ns/iter", line)
        if m:
            out.append(f"| {m.group(1)} | {m.group(2)} |")
    out.append("")
    out.append("## Watch propagation\n")
    out.append("`waypost-bench watch --etcd HOST:PORT --zookeeper HOST:PORT`: 200 events alternating register and "
               "deregister; each is timed from the registry call until the consumer's discovery cache shows it.\n")
    out.append("| registry | events | p50 ms | p99 ms |")
    out.append("|---|---:|---:|---:|")
    for w in watch:
        out.append(f"| {w['registry']} | {w['events']} | {w['p50_us'] / 1000:.2f} | {w['p99_us'] / 1000:.2f} |")
    out.append("")
    out.append("## Scale\n")
    out.append("`waypost-bench scale --registry etcd|zookeeper --endpoint HOST:PORT --registry-pid PID`: 10 instances of "
               "each of 500 services registered through ten registry clients (as ten provider processes); 200 "
               "consumer registry clients, each with its own connection and discovery cache (as 200 consumer "
               "processes), run in four processes of 50, each client watching 20 services (every service has "
               "eight watchers); then 1,000 changes a second for 10 s, each a unique weight stamped with the time "
               "it was sent. A change's fan-out time is when the last of its eight watchers saw it; a watcher "
               "reads the current list, so a change overwritten (the same instance changes again 0.5 s later) "
               "before one watcher looked counts as not seen by every watcher. Registry figures are read from "
               "the registry process (`/proc`), its established client sockets, and its own watch count "
               "(etcd's `etcd_debugging_mvcc_watcher_total`, ZooKeeper's `mntr`); consumer memory is the "
               "consumer processes' growth while loading, divided by the services (instances) their clients "
               "watch (hold).\n")
    if scale:
        keys = [k for k in scale[0] if k not in ("bench", "registry")]
        out.append("| figure | " + " | ".join(s["registry"] for s in scale) + " |")
        out.append("|---|" + "---:|" * len(scale))
        for k in keys:
            out.append(f"| {k.replace('_', ' ')} | " + " | ".join(str(s.get(k, "")) for s in scale) + " |")
    out.append("")
    ratio = [l for l in load_jsonl(os.path.join(work, "compression.jsonl")) if l.get("bench") == "compression_ratio"]
    out.append("## Compression\n")
    out.append("The rows `waypost/msgpack` and `waypost/msgpack+zstd` of `waypost-bench echo` echo a record of about "
               "1 MiB (a list of items with field names, as JSON-like data is) without and with zstd at level 1 on "
               "both sides (`rpc.consumer.compression` and `rpc.server.compression`); each side compresses what it "
               "sends and decompresses what it receives. On loopback the bytes saved are worth nothing, so the "
               "rows show what compression costs in CPU; over a network it saves the bytes below.\n")
    for r in ratio:
        out.append(f"`waypost-bench compression-ratio`: the encoded record is {r['encoded_bytes']:,} B, {r['compressed_bytes']:,} B "
                   f"compressed: **{r['ratio']:.1f}x** smaller; compressing it takes {r['compress_us']:,.0f} µs and "
                   f"decompressing {r['decompress_us']:,.0f} µs on one core.\n")
    rows(sorted([m for m in one if m.get("kind") == "record" and m["payload"] == 1048576],
                key=lambda m: (m["framework"], m["concurrency"])))
    overload = load_jsonl(os.path.join(work, "overload.jsonl"))
    out.append("## Overload\n")
    out.append("`waypost-bench overload`: a provider process (one worker) whose calls each hold one of 4 pooled "
               "connections for 5 ms; a consumer process with default settings and a 1 s deadline measures its "
               "capacity (32 callers in a closed loop), offers half of it for 3 s (unloaded latency), then three "
               "times it for 30 s as an open loop, on a fresh provider without and with `rpc.server.shedding`. "
               "Targets: goodput at least 90% of the capacity, p99 of the answered calls at most 3x the unloaded p99.\n")
    out.append("| protection | capacity/s | offered/s | goodput/s | of capacity | p50 ms | p99 ms | unloaded p99 ms | p99 ratio | server CPU us per offered call |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for o in overload:
        out.append(f"| {o['protection']} | {o['capacity']:.0f} | {o['offered_per_sec']:.0f} | {o['goodput']:.0f} | "
                   f"{o['goodput_share'] * 100:.0f}% | {o['p50_us'] / 1000:.1f} | {o['p99_us'] / 1000:.1f} | "
                   f"{o['unloaded_p99_us'] / 1000:.1f} | {o['p99_ratio']:.1f}x | {o['server_cpu_us_per_offered']:.1f} |")
    out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
