//! What counts as a host callers can dial: an IP address or a hostname. A leaf module: the
//! configuration checks `advertise_host` with it, and registry values are checked with it.

/// Whether `host` is an IP address (IPv6 with or without brackets) or a hostname: dot-separated
/// labels of letters, digits and `-`, each 1 to 63 long and not starting or ending with `-`,
/// 253 characters at most.
pub fn is_valid_host(host: &str) -> bool {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_hostnames_pass_anything_else_does_not() {
        for good in [
            "10.0.0.1",
            "::1",
            "[::1]",
            "svc-1.ns.svc.cluster.local",
            "localhost",
            "a",
        ] {
            assert!(is_valid_host(good), "{good}");
        }
        for bad in [
            "",
            "bad host!",
            "-x.example",
            "x-.example",
            "a..b",
            "a/b",
            &"a".repeat(64),
        ] {
            assert!(!is_valid_host(bad), "{bad}");
        }
    }
}
