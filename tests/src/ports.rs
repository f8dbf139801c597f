//! Free loopback ports for servers the tests start as separate processes (etcd, ZooKeeper,
//! provider processes), which bind a port the test chose.
//!
//! Two races lose such a port between the choice and the bind, and both made tests fail now
//! and then when the suite runs its binaries side by side:
//!
//! - A port from the kernel's ephemeral range (what binding port 0 hands out) may become the
//!   local port of any outgoing connection of any process in the meantime; a member restarted on
//!   its old port after a kill then finds it taken. So ports come from below that range
//!   (10000 up to its start), which the kernel never hands out on its own.
//! - Two test processes may choose the same port. So each port chosen is reserved across
//!   processes: a file named after it under the system's temporary directory, created
//!   exclusively, holding the owner's process id. A reservation whose owner has exited is
//!   taken over; a port something else listens on is skipped.
//!
//! A process keeps its reservations until it exits (a restarted server binds its port again).

use std::io::Write;
use std::path::{Path, PathBuf};

/// The first port handed out; below it sit well-known and registered services.
const LOWEST: u16 = 10_000;

/// A TCP port on 127.0.0.1 that nothing listens on, outside the kernel's ephemeral range, and
/// reserved for this process against every other process that asks here.
pub fn free_port() -> u16 {
    let high = ephemeral_start().max(LOWEST + 1_000);
    let dir = reservations_dir();
    loop {
        let port = fastrand::u16(LOWEST..high);
        if reserve(&dir, port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Where the reservations live (created on first use; shared by every test process and by
/// `scripts/lib.sh`).
fn reservations_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("waypost-test-ports");
    std::fs::create_dir_all(&dir).expect("create the port reservation directory");
    dir
}

/// Reserves `port` for this process: `true` when the reservation is now ours.
fn reserve(dir: &Path, port: u16) -> bool {
    let file = dir.join(port.to_string());
    for _ in 0..2 {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&file) {
            Ok(mut f) => return writeln!(f, "{}", std::process::id()).is_ok(),
            Err(_) if owner_gone(&file) => {
                // Taken over from an owner that exited; a process racing for the same file
                // loses the exclusive create above on the next turn.
                let _ = std::fs::remove_file(&file);
            }
            Err(_) => return false,
        }
    }
    false
}

/// Whether the process named in the reservation `file` has exited (or the file names none,
/// as a reservation being written for a moment does not: such a file is left alone).
fn owner_gone(file: &Path) -> bool {
    match std::fs::read_to_string(file) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => false,
        },
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_free_and_never_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice: {ports:?}");
        let high = ephemeral_start();
        for port in ports {
            assert!(
                (LOWEST..high.max(LOWEST + 1_000)).contains(&port),
                "{port} is out of range"
            );
            let owner = std::fs::read_to_string(reservations_dir().join(port.to_string())).expect("reserved");
            assert_eq!(owner.trim(), std::process::id().to_string());
        }
    }

    #[test]
    fn a_reservation_of_an_exited_process_is_taken_over_and_a_live_one_is_not() {
        let dir = reservations_dir();
        // A port reserved by a process that no longer runs (pid beyond the kernel's maximum).
        let stale = loop {
            let port = fastrand::u16(LOWEST..ephemeral_start());
            if !dir.join(port.to_string()).exists() {
                break port;
            }
        };
        std::fs::write(dir.join(stale.to_string()), "4194305\n").expect("write a stale reservation");
        assert!(reserve(&dir, stale), "a dead owner's reservation is taken over");
        // Now ours, and we run: nobody else gets it.
        assert!(!owner_gone(&dir.join(stale.to_string())));
        assert!(!reserve(&dir, stale), "a live owner's reservation is kept");
    }
}
