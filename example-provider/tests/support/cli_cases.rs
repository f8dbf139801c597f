//! Shared CLI cases for the example programs: a bad configuration or an unreachable registry
//! gives one error line naming the problem and a non-zero exit, never a panic or a hang.
//!
//! Include with `#[path]` and invoke `cli_cases!("path/to/binary")`.

#[macro_export]
macro_rules! cli_cases {
    ($binary:expr) => {
        fn binary() -> &'static str {
            $binary
        }

        use std::io::Write;
        use std::path::PathBuf;
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};

        fn free_port() -> u16 {
            std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
        }

        fn config_file(yaml: &str) -> PathBuf {
            let path = std::env::temp_dir().join(format!("example-cli-{}-{}.yaml", std::process::id(), fastrand_u64()));
            std::fs::File::create(&path).unwrap().write_all(yaml.as_bytes()).unwrap();
            path
        }

        fn fastrand_u64() -> u64 {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        }

        /// Runs the program with `args`; returns (exit code, stderr, elapsed). Fails the test if it
        /// runs longer than 20 s.
        fn run(args: &[&str]) -> (i32, String, Duration) {
            let started = Instant::now();
            let mut child = Command::new(binary())
                .args(args)
                .env("RUST_LOG", "off")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut stderr = String::new();
                    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
                    return (status.code().unwrap_or(-1), stderr, started.elapsed());
                }
                if started.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    panic!("{} {args:?} hung", binary());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// Asserts a clean, one-line failure that mentions every `needle`.
        fn assert_fails_with(args: &[&str], needles: &[&str]) -> Duration {
            let (code, stderr, took) = run(args);
            assert_ne!(code, 0, "{args:?} succeeded");
            assert!(!stderr.contains("panicked"), "{stderr}");
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
            for needle in needles {
                assert!(lines[0].contains(needle), "{needle:?} missing from: {}", lines[0]);
            }
            took
        }

        #[test]
        fn a_missing_config_file_is_named() {
            assert_fails_with(&["--config", "/nonexistent/rpc.yaml"], &["cannot read config file", "/nonexistent/rpc.yaml"]);
        }

        #[test]
        fn invalid_yaml_is_reported() {
            let path = config_file("rpc: [unclosed\n");
            assert_fails_with(&["--config", path.to_str().unwrap()], &["invalid YAML"]);
        }

        #[test]
        fn unknown_names_list_the_valid_ones() {
            let path = config_file("rpc:\n  registry:\n    type: consul\n");
            assert_fails_with(
                &["--config", path.to_str().unwrap()],
                &["rpc.registry.type", "\"consul\" is not one of etcd, zookeeper, memory"],
            );
            let path = config_file("rpc:\n  consumer:\n    load_balancer: fastest\n");
            assert_fails_with(&["--config", path.to_str().unwrap()], &["rpc.consumer.load_balancer", "fastest", "round_robin"]);
        }

        #[test]
        fn a_port_out_of_range_is_rejected() {
            let path = config_file("rpc:\n  server:\n    port: 70000\n");
            assert_fails_with(&["--config", path.to_str().unwrap()], &["rpc.server.port", "70000"]);
        }

        #[test]
        fn unreachable_registries_fail_at_start_up_within_the_timeout() {
            for kind in ["etcd", "zookeeper"] {
                let endpoint = format!("127.0.0.1:{}", free_port());
                let yaml = format!(
                    "rpc:\n  server: {{ port: 0 }}\n  registry:\n    type: {kind}\n    endpoints: [\"{endpoint}\"]\n    timeout_ms: 1000\n"
                );
                let path = config_file(&yaml);
                // The one-line error names the registry and the endpoint it could not reach.
                let took = assert_fails_with(&["--config", path.to_str().unwrap()], &[kind, &endpoint]);
                assert!(took < Duration::from_secs(10), "{kind}: took {took:?}");
                eprintln!(
                    "RELIABILITY {{\"scenario\":\"bad configuration and registry data\",\"figures\":{{\"unreachable_{kind}_exit_after_ms\":{}}}}}",
                    took.as_millis()
                );
            }
        }
    };
}
