use serde::Deserialize;

use super::*;
use crate::schema::SchemaBuilder;

#[allow(dead_code)]
mod v1 {
    use super::Deserialize;

    #[derive(Deserialize)]
    #[serde(rename = "User")]
    pub struct User {
        pub id: u64,
        pub name: String,
        pub tier: Tier,
    }

    #[derive(Deserialize)]
    #[serde(rename = "Tier")]
    pub enum Tier {
        Free,
        Pro { seats: u32 },
    }
}

#[allow(dead_code)]
mod v2 {
    use super::Deserialize;

    #[derive(Deserialize)]
    #[serde(rename = "User")]
    pub struct User {
        pub id: u64,
        pub name: String,
        pub tier: Tier,
        pub email: Option<String>,
        #[serde(default)]
        pub score: u32,
    }

    #[derive(Deserialize)]
    #[serde(rename = "Tier")]
    pub enum Tier {
        Free,
        Pro { seats: u32 },
        Gold(u8),
    }
}

#[allow(dead_code)]
mod retyped {
    use super::Deserialize;

    #[derive(Deserialize)]
    #[serde(rename = "User")]
    pub struct User {
        pub id: u64,
        pub name: u32,
        pub tier: super::v1::Tier,
        pub nickname: String,
    }
}

fn v1() -> ServiceSchema {
    SchemaBuilder::new("Profiles", "1.0")
        .method::<(v1::User,), String>("put_user", &["user"], false)
        .method::<(u64,), v1::User>("get_user", &["id"], false)
        .method::<(String,), String>("greet", &["name"], false)
        .build()
}

fn v2() -> ServiceSchema {
    SchemaBuilder::new("Profiles", "1.0")
        .method::<(v2::User,), String>("put_user", &["user"], false)
        .method::<(u64,), v2::User>("get_user", &["id"], false)
        .method::<(String, Option<String>), String>("greet", &["name", "greeting"], false)
        .method::<(u64,), String>("audit", &["id"], false)
        .build()
}

fn retyped() -> ServiceSchema {
    SchemaBuilder::new("Profiles", "1.0")
        .method::<(retyped::User,), String>("put_user", &["user"], false)
        .method::<(u64,), retyped::User>("get_user", &["id"], false)
        .method::<(u32,), String>("greet", &["name"], false)
        .build()
}

fn unsafe_ones(differences: &[Difference]) -> Vec<String> {
    differences
        .iter()
        .filter(|d| !d.safe)
        .map(|d| format!("{}: {}", d.at, d.what))
        .collect()
}

#[test]
fn the_same_schema_has_no_difference() {
    assert_eq!(compare(&v2(), &v2()), vec![]);
}

#[test]
fn additive_changes_are_compatible_both_ways() {
    for (consumer, provider) in [(v1(), v2()), (v2(), v1())] {
        let differences = compare(&consumer, &provider);
        assert!(unsafe_ones(&differences).is_empty(), "{differences:#?}");
        assert!(!differences.is_empty());
    }
    let old_reads_new = compare(&v1(), &v2());
    let text: Vec<String> = old_reads_new.iter().map(ToString::to_string).collect();
    for expected in [
        "compatible: get_user result.email: field the reader of `User` does not know; skipped",
        "compatible: get_user result.tier::Gold: variant unknown to the reader of `Tier`: a value holding it fails that call",
        "compatible: put_user(user).score: field of `User` not sent; the reader takes its default",
        "compatible: greet(greeting): argument added; the provider gets None",
        "compatible: audit: only the provider has this method",
    ] {
        assert!(text.iter().any(|t| t == expected), "{expected} not in {text:#?}");
    }
}

#[test]
fn changed_types_and_required_fields_are_incompatible() {
    let problems = unsafe_ones(&compare(&v1(), &retyped()));
    for expected in [
        "put_user(user).name: written as String, read as u32",
        "put_user(user).nickname: field of `User` required by the reader, not sent",
        "get_user result.name: written as u32, read as String",
        "greet(name): written as String, read as u32",
    ] {
        assert!(
            problems.iter().any(|p| p == expected),
            "{expected} not in {problems:#?}"
        );
    }
}

#[test]
fn options_and_numbers_read_where_every_value_fits() {
    assert!(widens(&Shape::U8, &Shape::U64));
    assert!(widens(&Shape::U32, &Shape::I64));
    assert!(!widens(&Shape::U64, &Shape::I64));
    assert!(!widens(&Shape::I8, &Shape::U64));
    assert!(!widens(&Shape::U64, &Shape::U32));
    let plain = SchemaBuilder::new("S", "1")
        .method::<(u32,), u32>("m", &["n"], false)
        .build();
    let optional = SchemaBuilder::new("S", "1")
        .method::<(Option<u32>,), Option<u32>>("m", &["n"], false)
        .build();
    // The consumer sends Option<u32> to a provider reading u32, and reads an Option<u32>
    // result where u32 is written: the first fails on None, the second always reads.
    let problems = unsafe_ones(&compare(&optional, &plain));
    assert_eq!(problems, ["m(n): written as Option<u32>, read as u32: a None fails"]);
}
