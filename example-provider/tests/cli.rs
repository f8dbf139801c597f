//! Bad configurations and unreachable registries make example-provider fail cleanly.

#[path = "support/cli_cases.rs"]
mod cli_cases;

cli_cases!(env!("CARGO_BIN_EXE_example-provider"));
