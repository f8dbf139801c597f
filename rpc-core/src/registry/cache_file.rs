//! The consumer's cache file: its last-known instances on disk, so that it can start (and
//! call providers that are up) while the registry is unreachable.
//!
//! # Format
//!
//! One JSON document, versioned and tied to the registry root it came from:
//!
//! ```json
//! {"format":"rpc-discovery-cache","version":1,"root":"/rpc","written_at_ms":1763700000000,
//!  "services":{"UserService:1.0":[{"name":"UserService","version":"1.0","host":"127.0.0.1",...}]}}
//! ```
//!
//! A file that does not parse, is of another format, another version or another registry root
//! is refused as a whole with an error naming the file and the reason; within a good file, an
//! entry that is not a valid instance of its service is skipped with a warning.
//!
//! # Writing
//!
//! The discovery cache rewrites the file after its lists change, at most once a second,
//! atomically (a temporary file in the same directory, then a rename), off the runtime's
//! threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{now_ms, InvalidInstance, ServiceInstance};

/// The `format` field of every cache file.
pub const FORMAT: &str = "rpc-discovery-cache";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;

/// A cache file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheFileError {
    /// The file could not be read.
    #[error("cannot read cache file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a cache file this build reads.
    #[error("cache file {path} is not usable: {reason}")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Contents {
    format: String,
    version: u32,
    root: String,
    written_at_ms: u64,
    services: BTreeMap<String, Vec<serde_json::Value>>,
}

/// The instances a cache file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachedInstances {
    /// When the file was written, in milliseconds since the Unix epoch.
    pub written_at_ms: u64,
    /// Instances by service key.
    pub services: BTreeMap<String, Vec<ServiceInstance>>,
}

impl CachedInstances {
    /// Number of instances over every service.
    pub fn instance_count(&self) -> usize {
        self.services.values().map(Vec::len).sum()
    }
}

/// A consumer's cache file for the registry at `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFile {
    path: PathBuf,
    root: String,
}

impl CacheFile {
    /// The cache file at `path` for the registry root `root`.
    pub fn new(path: impl Into<PathBuf>, root: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            root: root.into(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file (blocking: call it at start-up or from `spawn_blocking`).
    pub fn load(&self) -> Result<CachedInstances, CacheFileError> {
        let text = std::fs::read(&self.path).map_err(|source| CacheFileError::Read {
            path: self.path.clone(),
            source,
        })?;
        self.parse(&text)
    }

    fn unusable(&self, reason: impl Into<String>) -> CacheFileError {
        CacheFileError::Unusable {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn parse(&self, text: &[u8]) -> Result<CachedInstances, CacheFileError> {
        let contents: Contents =
            serde_json::from_slice(text).map_err(|e| self.unusable(format!("not a discovery cache file ({e})")))?;
        if contents.format != FORMAT {
            return Err(self.unusable(format!("its format is {:?}, not {FORMAT:?}", contents.format)));
        }
        if contents.version != VERSION {
            return Err(self.unusable(format!(
                "it is version {} and this build reads version {VERSION}",
                contents.version
            )));
        }
        if contents.root != self.root {
            return Err(self.unusable(format!(
                "it was written for registry root {:?}, not {:?}",
                contents.root, self.root
            )));
        }
        let mut services = BTreeMap::new();
        for (key, entries) in contents.services {
            let instances: Vec<ServiceInstance> = entries
                .into_iter()
                .filter_map(|entry| {
                    let checked = serde_json::from_value::<ServiceInstance>(entry)
                        .map_err(InvalidInstance::Json)
                        .and_then(|i| i.validate(&key).map(|()| i));
                    checked
                        .map_err(|e| warn!(file = %self.path.display(), service = %key, error = %e, "skipping a cached entry that is not a valid instance"))
                        .ok()
                })
                .collect();
            services.insert(key, instances);
        }
        Ok(CachedInstances {
            written_at_ms: contents.written_at_ms,
            services,
        })
    }

    /// The file's text for `services`.
    fn render(&self, services: &BTreeMap<String, Vec<ServiceInstance>>) -> Vec<u8> {
        let contents = Contents {
            format: FORMAT.to_owned(),
            version: VERSION,
            root: self.root.clone(),
            written_at_ms: now_ms(),
            services: services
                .iter()
                .map(|(k, list)| {
                    let entries = list.iter().filter_map(|i| serde_json::to_value(i).ok()).collect();
                    (k.clone(), entries)
                })
                .collect(),
        };
        // A map of strings to plain structs always serializes.
        serde_json::to_vec_pretty(&contents).unwrap_or_default()
    }

    /// Writes `services` atomically: a temporary file next to the target, then a rename.
    pub async fn write(&self, services: &BTreeMap<String, Vec<ServiceInstance>>) -> std::io::Result<()> {
        let text = self.render(services);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut tmp = path.clone().into_os_string();
            tmp.push(format!(".tmp-{}", std::process::id()));
            let tmp = PathBuf::from(tmp);
            std::fs::write(&tmp, &text)?;
            std::fs::rename(&tmp, &path).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> CacheFile {
        let path = std::env::temp_dir().join(format!("rpc-cache-file-{}-{name}.json", std::process::id()));
        CacheFile::new(path, "/rpc")
    }

    fn services() -> BTreeMap<String, Vec<ServiceInstance>> {
        let mut m = BTreeMap::new();
        m.insert(
            "S:1".to_owned(),
            vec![
                ServiceInstance::new("S", "1", "127.0.0.1", 9001),
                ServiceInstance::new("S", "1", "127.0.0.1", 9002),
            ],
        );
        m
    }

    #[tokio::test]
    async fn round_trips_atomically() {
        let f = file("round-trip");
        let written = services();
        f.write(&written).await.unwrap();
        let back = f.load().unwrap();
        assert_eq!(back.services, written);
        assert_eq!(back.instance_count(), 2);
        assert!(back.written_at_ms > 0);
        std::fs::remove_file(f.path()).unwrap();
    }

    #[test]
    fn corrupt_foreign_old_and_misplaced_files_are_refused_naming_the_file() {
        let f = file("bad");
        let cases: [(&str, &str); 4] = [
            ("{\"not\": json", "not a discovery cache file"),
            (
                r#"{"format":"other","version":1,"root":"/rpc","written_at_ms":1,"services":{}}"#,
                "its format is",
            ),
            (
                r#"{"format":"rpc-discovery-cache","version":0,"root":"/rpc","written_at_ms":1,"services":{}}"#,
                "version 0",
            ),
            (
                r#"{"format":"rpc-discovery-cache","version":1,"root":"/other","written_at_ms":1,"services":{}}"#,
                "registry root",
            ),
        ];
        for (text, reason) in cases {
            let e = f.parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(&f.path().display().to_string()) && e.contains(reason), "{e}");
        }
        let e = CacheFile::new("/nonexistent/dir/cache.json", "/rpc")
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/dir/cache.json"), "{e}");
    }

    #[test]
    fn entries_that_are_not_instances_of_their_service_are_skipped() {
        let f = file("entries");
        let text = r#"{"format":"rpc-discovery-cache","version":1,"root":"/rpc","written_at_ms":1,"services":{"S:1":[
            {"name":"S","version":"1","host":"127.0.0.1","port":9001},
            {"name":"T","version":"1","host":"127.0.0.1","port":9002},
            {"garbage":true}]}}"#;
        let back = f.parse(text.as_bytes()).unwrap();
        assert_eq!(back.services["S:1"].len(), 1);
        assert_eq!(back.services["S:1"][0].port, 9001);
    }
}
