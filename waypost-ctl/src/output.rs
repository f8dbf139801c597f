//! How instances are shown: one aligned line each, or a JSON object.

use serde_json::{json, Value};
use waypost::registry::{now_ms, ServiceInstance, ZONE};

/// An instance's zone, `-` when it has none.
pub fn zone(instance: &ServiceInstance) -> &str {
    instance.metadata.get(ZONE).map(String::as_str).unwrap_or("-")
}

/// Seconds since the instance registered.
pub fn age_secs(instance: &ServiceInstance) -> u64 {
    now_ms().saturating_sub(instance.registered_at_ms) / 1000
}

/// An age as `45s`, `12m`, `3h`, `2d`.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The header of [`line()`]s.
pub const HEADER: &str = "ADDRESS                WEIGHT  ZONE          AGE";

/// One instance as a line under [`HEADER`].
pub fn line(instance: &ServiceInstance) -> String {
    format!(
        "{:<22} {:>6}  {:<12}  {}",
        instance.address(),
        instance.weight,
        zone(instance),
        age(age_secs(instance))
    )
}

/// One instance as JSON: its registered fields (the schema's fingerprint and the HTTP endpoint
/// when it has them) plus `address` and `age_secs`.
pub fn object(instance: &ServiceInstance) -> Value {
    json!({
        "address": instance.address(),
        "name": instance.name,
        "version": instance.version,
        "weight": instance.weight,
        "zone": instance.metadata.get(ZONE),
        "metadata": instance.metadata,
        "registered_at_ms": instance.registered_at_ms,
        "age_secs": age_secs(instance),
        "schema": instance.schema,
        "http": instance.http,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(119), "119s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(4 * 3600), "4h");
        assert_eq!(age(3 * 86_400), "3d");
    }
}
