//! `watch`: every arrival, change and departure of a service's instances, as it happens.
//!
//! The registry's watch gives a snapshot, then changes; a snapshot after the first (the watch
//! was re-established) is compared with what was shown, so only real changes print. When the
//! watch ends (the registry went away), it is opened again; Ctrl-C or SIGTERM ends the command
//! with success.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};
use waypost::registry::{Registry, ServiceInstance, WatchEvent};

use crate::error::CtlError;
use crate::output;

/// A change to show.
enum Change<'a> {
    Added(&'a ServiceInstance),
    Changed(&'a ServiceInstance),
    Removed(&'a str),
}

/// Watches `key` until interrupted.
pub async fn run(registry: &Arc<dyn Registry>, key: &str, json: bool) -> Result<(), CtlError> {
    let mut term = signal(SignalKind::terminate())?;
    let mut shown: BTreeMap<String, ServiceInstance> = BTreeMap::new();
    let mut first = true;
    loop {
        let mut stream = registry.watch(key).await?;
        loop {
            let event = tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = term.recv() => return Ok(()),
                event = stream.next() => event,
            };
            let Some(event) = event else { break };
            let next = apply(&shown, event);
            if std::mem::take(&mut first) {
                opening(key, &next, json);
            } else {
                for change in diff(&shown, &next) {
                    print_change(&change, json);
                }
            }
            shown = next;
        }
        // The watch ended (the registry went away): open it again shortly.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What is known after `event`.
fn apply(shown: &BTreeMap<String, ServiceInstance>, event: WatchEvent) -> BTreeMap<String, ServiceInstance> {
    let mut next = shown.clone();
    match event {
        WatchEvent::Snapshot(list) => next = list.into_iter().map(|i| (i.address(), i)).collect(),
        WatchEvent::Upsert(instance) => {
            next.insert(instance.address(), instance);
        }
        WatchEvent::Remove { address } => {
            next.remove(&address);
        }
        // An event this version does not know changes nothing it shows.
        _ => {}
    }
    next
}

/// The changes from `before` to `after`, by address.
fn diff<'a>(
    before: &'a BTreeMap<String, ServiceInstance>,
    after: &'a BTreeMap<String, ServiceInstance>,
) -> Vec<Change<'a>> {
    let mut changes = Vec::new();
    for (address, instance) in after {
        match before.get(address) {
            None => changes.push(Change::Added(instance)),
            Some(old) if old != instance => changes.push(Change::Changed(instance)),
            Some(_) => {}
        }
    }
    for address in before.keys().filter(|a| !after.contains_key(*a)) {
        changes.push(Change::Removed(address));
    }
    changes
}

fn opening(key: &str, instances: &BTreeMap<String, ServiceInstance>, json: bool) {
    if json {
        let list: Vec<_> = instances.values().map(output::object).collect();
        println!("{}", json!({"event": "snapshot", "service": key, "instances": list}));
        return;
    }
    println!("watching {key}: {} instance(s)", instances.len());
    for instance in instances.values() {
        println!("  {}", output::line(instance));
    }
}

fn print_change(change: &Change<'_>, json: bool) {
    let (sign, event, address, instance) = match change {
        Change::Added(i) => ('+', "added", i.address(), Some(*i)),
        Change::Changed(i) => ('~', "changed", i.address(), Some(*i)),
        Change::Removed(address) => ('-', "removed", (*address).to_owned(), None),
    };
    if json {
        println!(
            "{}",
            json!({"event": event, "address": address, "instance": instance.map(output::object)})
        );
        return;
    }
    match instance {
        Some(i) => println!("{sign} {}", output::line(i)),
        None => println!("{sign} {address}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16, weight: u32) -> ServiceInstance {
        let mut i = ServiceInstance::new("S", "1", "127.0.0.1", port);
        i.weight = weight;
        i
    }

    #[test]
    fn a_new_snapshot_shows_only_what_changed() {
        let shown = apply(&BTreeMap::new(), WatchEvent::Snapshot(vec![at(1, 1), at(2, 1)]));
        let next = apply(&shown, WatchEvent::Snapshot(vec![at(2, 5), at(3, 1)]));
        let changes: Vec<String> = diff(&shown, &next)
            .iter()
            .map(|c| match c {
                Change::Added(i) => format!("+{}", i.port),
                Change::Changed(i) => format!("~{}", i.port),
                Change::Removed(a) => format!("-{a}"),
            })
            .collect();
        assert_eq!(changes, ["~2", "+3", "-127.0.0.1:1"]);
        let removed = apply(
            &next,
            WatchEvent::Remove {
                address: "127.0.0.1:3".into(),
            },
        );
        assert_eq!(removed.len(), 1);
    }
}
