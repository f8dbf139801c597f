//! The shared test etcd that scripts/test starts.

/// The first endpoint of `RPC_TEST_ETCD_ENDPOINTS`; `None` (the test skips) when it is unset
/// outside CI. Under `CI=true` a missing etcd fails the test.
pub fn etcd() -> Option<String> {
    match std::env::var("RPC_TEST_ETCD_ENDPOINTS") {
        Ok(v) if !v.is_empty() => Some(v.split(',').next().unwrap_or_default().to_owned()),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "RPC_TEST_ETCD_ENDPOINTS is not set: run the tests with scripts/test"
            );
            eprintln!("SKIPPED: RPC_TEST_ETCD_ENDPOINTS is not set");
            None
        }
    }
}
