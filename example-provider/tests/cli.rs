//! Bad configurations and unreachable registries make example-provider fail cleanly.

#[path = "support/cli_cases.rs"]
mod cli_cases;

cli_cases!(env!("CARGO_BIN_EXE_example-provider"));

/// A TLS file that is missing or is not what its field needs stops the start with one line
/// naming the field and the file, exit 1.
#[test]
fn unusable_tls_files_name_the_field_and_the_file() {
    let pki = waypost_testkit::pki::TestPki::new();
    let missing = pki.ca.dir().join("missing.pem");
    let not_a_key = pki.ca.dir().join("not-a-key.pem");
    std::fs::write(&not_a_key, "hello\n").unwrap();
    let cases = [
        ("rpc.server.tls.cert", &missing, &pki.server.key, None),
        ("rpc.server.tls.key", &pki.server.cert, &not_a_key, None),
        (
            "rpc.server.tls.client_ca",
            &pki.server.cert,
            &pki.server.key,
            Some(&missing),
        ),
    ];
    for (field, cert, key, client_ca) in cases {
        let client_ca = client_ca
            .map(|ca| format!(", client_ca: {}", ca.display()))
            .unwrap_or_default();
        let yaml = format!(
            "rpc:\n  server: {{ port: 0, tls: {{ cert: {}, key: {}{client_ca} }} }}\n  registry: {{ type: memory }}\n",
            cert.display(),
            key.display()
        );
        let path = config_file(&yaml);
        let named = if field == "rpc.server.tls.key" {
            &not_a_key
        } else {
            &missing
        };
        let (code, _, _) = run(&["--config", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{field}");
        assert_fails_with(
            &["--config", path.to_str().unwrap()],
            &[field, &named.display().to_string()],
        );
    }
}
