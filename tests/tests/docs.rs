//! The configuration users copy from the docs loads: every YAML block of the README that is a
//! configuration (starts with `rpc:`), and every file in `config/`.

use std::path::Path;

use rpc_core::config::RpcConfig;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The fenced blocks of `text` in `language`.
fn blocks<'t>(text: &'t str, language: &str) -> Vec<&'t str> {
    let fence = format!("```{language}\n");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```").expect("a closed code block");
        out.push(&body[..end]);
        rest = &body[end..];
    }
    out
}

#[test]
fn every_configuration_in_the_readme_loads() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let configs: Vec<&str> = blocks(&readme, "yaml")
        .into_iter()
        .filter(|b| b.trim_start().starts_with("rpc:"))
        .collect();
    assert!(configs.len() >= 3, "found {} configuration blocks", configs.len());
    for block in configs {
        if let Err(e) = RpcConfig::from_yaml(block) {
            panic!("a README configuration does not load: {e}\n{block}");
        }
    }
}

#[test]
fn every_file_in_config_loads() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            RpcConfig::from_yaml_with_env(&text, &path.display().to_string(), std::iter::empty())
                .unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 2);
}
