//! What is echoed: a `Vec<u8>`, a `String`, or a record with a few fields and a nested list,
//! as users write them.

use serde::{Deserialize, Serialize};

/// The kind of value echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PayloadKind {
    /// A `Vec<u8>` of `size` bytes.
    Bytes,
    /// A `String` of `size` ASCII characters.
    Text,
    /// A [`Record`] whose item list makes it about `size` bytes.
    Record,
}

impl PayloadKind {
    /// The name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bytes => "bytes",
            Self::Text => "text",
            Self::Record => "record",
        }
    }
}

/// One value to echo, described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    /// Its kind.
    pub kind: PayloadKind,
    /// Its size in bytes (nominal for a record).
    pub size: usize,
}

/// A record: a few fields and a nested list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// An id.
    pub id: u64,
    /// A name.
    pub name: String,
    /// A few tags.
    pub tags: Vec<String>,
    /// The list that makes up its size.
    pub items: Vec<Item>,
}

/// One entry of [`Record::items`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// A product number.
    pub sku: u64,
    /// A quantity.
    pub qty: u32,
    /// A price.
    pub price: f64,
}

impl Payload {
    /// The bytes to echo.
    pub fn bytes(&self) -> Vec<u8> {
        (0..self.size).map(|i| (i % 251) as u8).collect()
    }

    /// The text to echo.
    pub fn text(&self) -> String {
        (0..self.size).map(|i| char::from(b'a' + (i % 26) as u8)).collect()
    }

    /// The record to echo: about 20 bytes per item.
    pub fn record(&self) -> Record {
        Record {
            id: 42,
            name: "a record of the bench".to_owned(),
            tags: vec!["alpha".to_owned(), "beta".to_owned(), "gamma".to_owned()],
            items: (0..(self.size / 20).max(1) as u64)
                .map(|i| Item {
                    sku: 1_000_000 + i,
                    qty: (i % 7) as u32 + 1,
                    price: i as f64 * 0.25,
                })
                .collect(),
        }
    }
}
