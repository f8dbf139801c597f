"""Renders RELIABILITY.md from the `RELIABILITY {json}` lines of a test log (see scripts/reliability)."""
import datetime
import json
import platform
import sys

SCENARIOS = [
    ("etcd outage", "1. etcd outage", "tests/tests/reliability.rs: etcd_outage_longer_than_the_ttl"),
    ("etcd data loss", "2. etcd data loss", "tests/tests/reliability.rs: etcd_replaced_by_an_empty_one"),
    ("etcd cluster member loss", "3. etcd cluster member loss", "tests/tests/reliability.rs: etcd_cluster_loses_its_leader_then_a_follower"),
    ("ZooKeeper restart", "4. ZooKeeper restart and session expiry", "tests/tests/reliability.rs: zookeeper_restart_and_session_expiry"),
    ("provider SIGKILLed under load, fail_over", "5a. Provider crash under load, fail_over", "tests/tests/reliability.rs: provider_killed_under_load_with_fail_over_loses_no_call"),
    ("provider SIGKILLed under load, fail_fast", "5b. Provider crash under load, fail_fast", "tests/tests/reliability.rs: provider_killed_under_load_with_fail_fast_fails_only_calls_in_flight"),
    ("slow and stuck providers", "6. Slow and stuck providers", "tests/tests/stuck_provider.rs"),
    ("provider frozen (SIGSTOP)", "6b. A frozen provider", "tests/tests/reliability.rs: a_frozen_provider_costs_one_call (three provider processes on etcd, TTL 5 s; one consumer, one call at a time, 1 s deadline, default policy; one provider SIGSTOPped for 8 s, then SIGCONT)"),
    ("hostile bytes", "7. Hostile bytes on the RPC port", "tests/tests/hostile_bytes.rs"),
    ("bad configuration", "9. Bad configuration and registry data", "example-provider/tests/cli.rs, example-consumer/tests/cli.rs (cases in example-provider/tests/support/cli_cases.rs)"),
    ("cancellation", "10. Callers that leave: cancellation", "tests/tests/call_context.rs: a_dropped_call_is_cancelled_on_the_server_and_frees_its_permit (1,000 calls held by the handler, each dropped by its caller once the handler started; the server runs with 4 permits, so a leaked permit would stall the run)"),
    ("rolling restart", "11. Rolling restart under the default policy", "tests/tests/operations.rs: a_rolling_restart_loses_no_call_under_the_default_policy (three provider processes replaced one at a time with SIGTERM, 20 times, under 8 callers; the consumer keeps every default: fail_fast, no retry)"),
    ("consumer start during a registry outage", "12. Consumer start during a registry outage", "tests/tests/operations.rs: a_consumer_with_a_cache_file_starts_and_calls_while_etcd_is_down, a_corrupt_cache_file_is_ignored_naming_it_and_the_registry_error_stands"),
    ("retry budget", "13. Retry budget under a failing provider", "tests/tests/operations.rs: retries_and_fail_overs_stay_within_the_retry_budget (every call fails with Overloaded; retry: fixed_interval, 5 attempts; budget 20% plus 10 a second)"),
    ("churn", "14. Provider churn: nothing kept for departed instances", "tests/tests/operations.rs: a_consumer_keeps_nothing_for_providers_that_left (1,000 in-process providers arrive and leave while a consumer calls)"),
    ("etcd auth token expiry", "15. etcd authentication tokens that expire", "tests/tests/hardening.rs: expiring_etcd_auth_tokens_are_renewed_by_consumers_and_providers (etcd with JWT tokens of 10 s; a consumer under load for 60 s, a provider started at 30 s, the first one stopped at 40 s)"),
    ("etcd keep-alive", "16. etcd keep-alive against a default etcd", "tests/tests/hardening.rs: default_etcd_keeps_the_connections_of_a_watching_and_an_idle_consumer"),
    ("connection limits", "17. Connection limits", "tests/tests/hardening.rs: idle_connections_are_told_to_go_away_and_closed, two_thousand_idle_connections_leave_a_consumer_served_and_memory_bounded, out_of_file_descriptors_the_provider_backs_off_logs_rarely_and_recovers"),
    ("memory", "18. Memory under large requests", "tests/tests/hardening.rs: large_requests_are_read_within_a_memory_budget_and_memory_comes_back (a provider process; 60 connections each send a 16 MiB request at once while a consumer calls), http_bodies_stay_within_the_budget_and_bad_json_costs_little (a provider process; 30 connections each POST a 15 MB JSON object whose value does not decode, under a 64 MiB budget, while a consumer calls)"),
    ("traffic", "19. Traffic control through the registry", "tests/tests/traffic.rs (real etcd and ZooKeeper: rules that disable and weight instances, zones, warm-up)"),
    ("tls handshake flood", "20. TLS handshakes that never finish", "tests/tests/security.rs: connections_that_never_finish_the_handshake_do_not_stall_others (a provider process with mTLS and a token; 1,000 connections open, half send part of a ClientHello, none finishes; meanwhile 20 new clients connect and call)"),
    ("streams: provider SIGKILLed", "21. A provider killed mid-stream", "tests/tests/streaming.rs: a_provider_killed_mid_stream_ends_every_stream_with_an_error (a provider process SIGKILLed under 12 open streams of the three shapes)"),
    ("streams: 10,000", "22. 10,000 concurrent streams on one provider", "tests/tests/streaming.rs: ten_thousand_concurrent_streams_on_one_provider_lose_nothing (a provider process; one consumer opens 10,000 server streams at once, each 20 items 100 ms apart, over one connection)"),
    ("streams: a slow reader", "23. A slow stream reader", "tests/tests/streaming.rs: a_slow_reader_keeps_the_senders_memory_within_twice_the_window (a provider process streams 64 KiB items as fast as credit allows to a reader that takes one every 2 ms, window 4 MiB)"),
    ("streams: readers that stall", "23b. Stream readers that stall", "tests/tests/hardening.rs: streams_whose_reader_stalls_end_and_free_their_slots (a provider process with max_concurrent_calls 50 and stream_idle_timeout_ms 5000; one h2c connection opens 60 NDJSON streams with an initial window of 0, then a consumer opens 50 RPC streams it never reads; a well-behaved caller is refused, then served)"),
    ("hedging:", "24. Hedged calls against a provider slow now and then", "tests/tests/reliability.rs: hedging_keeps_the_p99_of_a_service_with_one_slow_provider (three provider processes on etcd, every call 10 ms, the first one answering every 10th call it gets after 200 ms; 600 calls one at a time without hedging, then with the adaptive delay; calls counted on the providers' /metrics)"),
    ("breaker:", "25. Circuit breakers against a failing provider", "tests/tests/reliability.rs: the_breaker_keeps_calls_from_a_failing_provider_process (three provider processes on etcd, the first answering every call with an internal error; after 1,800 calls of warm-up, 600 calls one at a time; calls counted on the providers' /metrics)"),
    ("overload:", "26. A provider offered three times its capacity", "tests/tests/reliability.rs: a_shedding_provider_process_keeps_its_goodput_at_three_times_its_capacity (a provider process whose calls each hold one of four pooled connections for 5 ms; a consumer with a 1 s deadline measures its capacity with 32 callers, offers half of it for 2 s, then three times it for 10 s as an open loop; without and with rpc.server.shedding)"),
    ("etcd frozen", "27. A frozen etcd", "tests/tests/gray_registry.rs: a_frozen_etcd_fails_no_call (two providers and a consumer on one etcd, lease TTL 5 s, reconcile 5 s; etcd SIGSTOPped for 15 s under 8 callers, then SIGCONT: it expires every lease as it thaws)"),
    ("etcd member frozen", "28. A frozen etcd member", "tests/tests/gray_registry.rs: a_frozen_etcd_member_is_left_for_a_healthy_one (three members; the leader, then a follower, SIGSTOPped for 12 s each under 8 callers; a provider added 1 s into each; six more consumers' caches on connections of their own, resync 30 s, so only watches bring the change)"),
    ("etcd member partitioned", "29. A partitioned etcd member", "tests/tests/gray_registry.rs: a_partitioned_etcd_member_is_left_for_the_majority (three members whose peer traffic passes proxies; the leader, then a follower, cut off from its peers for 12 s each while clients still reach it, checked by the member reporting no leader; otherwise as 28)"),
    ("ZooKeeper ensemble", "30. A ZooKeeper ensemble losing its leader and a frozen follower", "tests/tests/gray_registry.rs: a_zookeeper_ensemble_keeps_every_session_through_a_dead_leader_and_a_frozen_follower (three servers; the leader SIGKILLed, then restarted; then the follower with the most client sessions SIGSTOPped for 8 s, twice the session timeout; a provider added during each; a separate session lists the instances every 100 ms; each node's owner session compared before and after)"),
    ("re-registration storm: etcd", "31. Re-registration storms after an etcd outage and a data loss", "tests/tests/gray_registry.rs: re_registrations_after_an_etcd_data_loss_are_spread (200 registry clients in one process, each with its own connection, lease and reconciler, one instance each; etcd stopped for 7 s, longer than the 5 s TTL, and restarted with its data; then replaced by an empty one; each key's first put after each restart timed by a watch)"),
    ("re-registration storm: ZooKeeper", "32. Re-registration storm after a ZooKeeper outage", "tests/tests/gray_registry.rs: zookeeper_re_registrations_after_an_outage_are_spread (200 registry clients in one process, each with its own session of 3 s, one instance each; ZooKeeper stopped for 6 s and restarted with its data: every session has ended, so each process opens a new one and creates its node again; the times are the nodes' own creation times)"),
]

def main(path, fuzz_results, cores):
    figures = {}
    for line in open(path, encoding="utf-8", errors="replace"):
        # libtest may print a test's name on the same line before its output.
        at = line.find("RELIABILITY {")
        if at < 0:
            continue
        entry = json.loads(line[at + len("RELIABILITY "):])
        figures.setdefault(entry["scenario"], {}).update(entry["figures"])
    out = []
    out.append("# Reliability\n")
    out.append("Every scenario below is an automated test against real servers (throw-away etcd, etcd "
               "cluster and ZooKeeper processes on loopback, real provider processes), run by `scripts/test`. "
               "The figures come from the latest `scripts/reliability`, which runs the same tests and "
               "regenerates this file.\n")
    out.append(f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
               f"{platform.machine()} Linux with {cores} cores.\n")
    for prefix, title, test in SCENARIOS:
        out.append(f"## {title}\n")
        out.append(f"Test: `{test}`\n")
        matched = [(s, f) for s, f in figures.items() if s.startswith(prefix)]
        if not matched:
            out.append("_No figures in the latest run._\n")
            continue
        for scenario, figs in matched:
            out.append(f"_{scenario}_\n")
            out.append("| figure | value |")
            out.append("|---|---|")
            for k, v in figs.items():
                out.append(f"| {k.replace('_', ' ')} | {json.dumps(v) if isinstance(v, dict) else v} |")
            out.append("")
    out.append("## 8. Fuzzing\n")
    out.append("Property tests of the frame decoder, request routing prefix and every serializer run in the "
               "normal suite (`rpc-core/tests/proptest_codec.rs`, 512 cases each). They found that bincode "
               "trusted a length prefix and aborted the process on a 2^60-byte allocation; decoding is now "
               "bounded by the input's size.\n")
    out.append("Every decoder of untrusted bytes has a libFuzzer target (`fuzz/`, cargo-fuzz): the frame "
               "decoder (`frame_decoder`), the request prefix and metadata (`request_decoding`), the "
               "MessagePack reader over serde's data model (`msgpack_reader`), a stream's Credit and "
               "StreamItem batches (`stream_frames`), compressed bodies (`compressed_frames`), HTTP/JSON "
               "arguments by position and by name (`http_json_arguments`), and the registry's instance "
               "JSON, schema texts and rules (`registry_values`). `scripts/fuzz [SECONDS] [TARGET...]` "
               "runs them (30 minutes each by default) and records each run here; a crash stops it with "
               "the input that crashed.\n")
    out.append("```sh\nscripts/fuzz              # every target, 30 minutes each\n"
               "scripts/fuzz 60 stream_frames\n```\n")
    out.append("Latest runs:\n")
    out.append("| target | executions | seconds | crashes | date |")
    out.append("|---|---|---|---|---|")
    try:
        for line in open(fuzz_results):
            parts = line.split()
            if len(parts) == 4:
                target, runs, seconds, date = parts
                out.append(f"| {target} | {int(runs):,} | {seconds} | 0 | {date} |")
    except FileNotFoundError:
        out.append("| (not run yet) | | | | |")
    out.append("")
    print("\n".join(out))

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
