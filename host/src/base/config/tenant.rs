//! The `[[tenants]]` tables: who a tenant is, who owns it, and its versions.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use semver::Version;
use serde::Deserialize;

/// A tenant's name: a DNS label (`^[a-z0-9](-?[a-z0-9])*$`, at most 63 chars),
/// so that `{slug}.{base_domain}` is always a valid host name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(String);

impl Slug {
    pub const MAX_LEN: usize = 63;

    pub fn parse(name: &str) -> Result<Slug, SlugError> {
        if name.is_empty() {
            return Err(SlugError::Empty);
        }
        if name.len() > Self::MAX_LEN {
            return Err(SlugError::TooLong(name.len()));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
        {
            return Err(SlugError::BadChar(c));
        }
        if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
            return Err(SlugError::BadHyphen);
        }
        Ok(Slug(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a name is not a slug.
#[derive(Debug, PartialEq, Eq)]
pub enum SlugError {
    Empty,
    TooLong(usize),
    BadChar(char),
    BadHyphen,
}

impl fmt::Display for SlugError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlugError::Empty => write!(f, "a slug cannot be empty"),
            SlugError::TooLong(n) => write!(
                f,
                "a slug has at most {} characters, this one has {n}",
                Slug::MAX_LEN
            ),
            SlugError::BadChar(c) => write!(f, "a slug may only use a-z, 0-9 and '-', not {c:?}"),
            SlugError::BadHyphen => {
                write!(f, "a slug cannot start or end with '-' or contain '--'")
            }
        }
    }
}

impl std::error::Error for SlugError {}

/// Whether a tenant serves requests (the contract's "server status").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Inactive,
}

/// One tenant ("server" in the contract) with its deployed versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantSpec {
    pub slug: Slug,
    pub owner: String,
    pub status: Status,
    /// Version → component file (absolute, or relative to the working
    /// directory once resolved against the config file).
    pub versions: BTreeMap<Version, PathBuf>,
}

/// A `[[tenants]]` table as written: names and versions still unchecked,
/// so that every bad one can be reported at once.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantTable {
    slug: String,
    owner: String,
    status: Status,
    versions: BTreeMap<String, PathBuf>,
}

impl TenantTable {
    /// The tenant this table describes, or `None` when its slug is unusable;
    /// every problem goes to `problems`, named by `position` (1-based).
    /// Component paths resolve against `base` (the file's directory).
    pub(super) fn check(
        self,
        position: usize,
        base: &Path,
        problems: &mut Vec<String>,
    ) -> Option<TenantSpec> {
        let name = format!("tenant {:?} ([[tenants]] #{position})", self.slug);
        let slug = match Slug::parse(&self.slug) {
            Ok(slug) => slug,
            Err(e) => {
                problems.push(format!("{name}: invalid slug: {e}"));
                return None;
            }
        };
        if self.owner.trim().is_empty() {
            problems.push(format!("{name}: owner cannot be empty"));
        }
        if self.versions.is_empty() {
            problems.push(format!(
                "{name}: no versions: add versions = {{ \"1.0.0\" = \"app.wasm\" }}"
            ));
        }
        let mut versions = BTreeMap::new();
        for (version, path) in self.versions {
            match Version::parse(&version) {
                Ok(v) => {
                    versions.insert(v, base.join(path));
                }
                Err(e) => problems.push(format!(
                    "{name}: version {version:?} is not semver (MAJOR.MINOR.PATCH): {e}"
                )),
            }
        }
        Some(TenantSpec {
            slug,
            owner: self.owner,
            status: self.status,
            versions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_dns_label_rules() {
        for good in ["a", "a1", "my-server", "0", &"a".repeat(63)] {
            assert!(Slug::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a--b",
            "A",
            "a.b",
            "a_b",
            "ü",
            "../x",
            &"a".repeat(64),
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
    }
}
