//! Writes a throw-away PKI for the demo and the benchmarks into the directory named by its
//! first argument: `ca.pem`, `server.pem`/`server.key` (for `localhost` and `127.0.0.1`) and
//! `client.pem`/`client.key` (common name `consumer-a`). Nothing here is meant for production.

use std::path::Path;
use std::process::ExitCode;

use waypost_testkit::pki::TestPki;

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: make-certs DIR");
        return ExitCode::from(2);
    };
    let pki = TestPki::in_dir(Path::new(&dir));
    println!("{}", pki.ca.dir().display());
    ExitCode::SUCCESS
}
