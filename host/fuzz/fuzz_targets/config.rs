//! Arbitrary tenants files: parsing and validation must never panic, and
//! whatever they accept must be valid.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mctx_host::config::{Config, Slug};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = Config::parse(text, "fuzz.toml", Path::new("/base")) {
        // No tenant at all is valid: they may all come through the deploy API.
        for tenant in &config.tenants {
            assert!(Slug::parse(tenant.slug.as_str()).is_ok());
            assert!(!tenant.versions.is_empty());
            assert!(tenant.versions.values().all(|path| path.starts_with("/") ));
        }
    }
});
