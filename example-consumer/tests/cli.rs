//! Bad configurations and unreachable registries make example-consumer fail cleanly.

#[path = "../../example-provider/tests/support/cli_cases.rs"]
mod cli_cases;

cli_cases!(env!("CARGO_BIN_EXE_example-consumer"));
