//! The configuration users copy from the docs loads: every YAML block of the README and the
//! guide (each is a configuration, starting with `rpc:`), and every file in `config/`; and
//! every chapter of the guide is compiled as doc tests.

use std::path::Path;

use waypost_core::config::RpcConfig;

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

/// The README and every chapter of the guide.
fn documents() -> Vec<(String, String)> {
    let mut paths = vec![root().join("README.md")];
    let mut chapters: Vec<_> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    chapters.sort();
    paths.extend(chapters);
    paths
        .into_iter()
        .map(|path| (path.display().to_string(), std::fs::read_to_string(&path).unwrap()))
        .collect()
}

#[test]
fn every_yaml_block_of_the_readme_and_the_guide_loads() {
    let mut n = 0;
    for (path, text) in documents() {
        for block in blocks(&text, "yaml") {
            assert!(
                block.trim_start().starts_with("rpc:"),
                "{path}: a YAML block that is not a configuration:\n{block}"
            );
            if let Err(e) = RpcConfig::from_yaml(block) {
                panic!("{path}: a configuration does not load: {e}\n{block}");
            }
            n += 1;
        }
    }
    assert!(n >= 8, "found {n} configuration blocks");
}

/// Every chapter of the guide is compiled as doc tests (`waypost_tests`' `markdown_doctests!`).
#[test]
fn every_chapter_of_the_guide_is_a_doc_test() {
    let lib = std::fs::read_to_string(root().join("tests/src/lib.rs")).unwrap();
    for (path, _) in documents() {
        let name = Path::new(&path).file_name().unwrap().to_string_lossy().into_owned();
        if name == "README.md" && path.contains("/docs/") {
            continue; // the guide's table of contents has no code
        }
        let included = if path.contains("/docs/") {
            format!("\"../../docs/{name}\"")
        } else {
            format!("\"../../{name}\"")
        };
        assert!(lib.contains(&included), "{path} is not among the doc tests");
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
