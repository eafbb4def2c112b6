//! The rules of a change, checked before anything is read or written:
//! who may change a server, whether an owner is within their quotas, and
//! what a version label must be.

use super::*;

impl Deployments {
    /// Whether `caller` may deploy `version` of `slug`, `declared` bytes
    /// long if the request says: decided from the path and headers alone,
    /// before the body is read, so a stranger's upload is refused without
    /// being buffered. [`Deployments::deploy`] decides again under the lock.
    pub(crate) async fn may_deploy(
        &self,
        caller: &Caller,
        slug: &str,
        version: &str,
        declared: Option<u64>,
    ) -> Result<(), DeployError> {
        let version = parse_version(version)?;
        let (_, document) = self.begin().await?;
        let record = self.changeable(&document, caller, slug)?;
        if record.versions.contains_key(&version) {
            return Ok(()); // the same bytes again is no change; other bytes, a conflict
        }
        self.within_quota(&document, &record.owner, declared.unwrap_or(0))
    }

    /// Whether `owner` may store one more version of `size` bytes
    /// (`[host] max_versions_per_owner`, `max_bytes_per_owner`): without a
    /// quota one owner could fill `state_dir` for everyone.
    pub(super) fn within_quota(
        &self,
        document: &Document,
        owner: &str,
        size: u64,
    ) -> Result<(), DeployError> {
        let (mut versions, mut bytes) = (0usize, 0u64);
        for record in document.servers.values().filter(|r| r.owner == owner) {
            versions += record.versions.len();
            bytes += record.versions.values().map(|p| p.size).sum::<u64>();
        }
        let refuse = |what: String| Err(DeployError::new(Why::OverQuota, what));
        if versions >= self.host.max_versions_per_owner {
            return refuse(format!(
                "{owner} already has {versions} versions deployed, the most an owner may have                  ([host] max_versions_per_owner): delete some first"
            ));
        }
        if bytes + size > self.host.max_bytes_per_owner {
            return refuse(format!(
                "{owner}'s versions take {bytes} bytes; {size} more would pass the {} an owner                  may store ([host] max_bytes_per_owner): delete some first",
                self.host.max_bytes_per_owner
            ));
        }
        Ok(())
    }

    /// The record of a server of the API that `caller` may change.
    pub(super) fn changeable<'a>(
        &self,
        document: &'a Document,
        caller: &Caller,
        slug: &str,
    ) -> Result<&'a ServerRecord, DeployError> {
        if let Some(tenant) = self.live.get(slug)
            && let Source::File(_) = tenant.source
        {
            may_change(caller, &tenant.owner, slug)?;
            return Err(self.declared_in_file(slug));
        }
        let record = document.servers.get(slug).ok_or_else(|| {
            DeployError::new(
                Why::NotFound,
                format!("no server {slug:?}: an admin creates it with POST /api/servers"),
            )
        })?;
        may_change(caller, &record.owner, slug)?;
        Ok(record)
    }

    pub(super) fn declared_in_file(&self, slug: &str) -> DeployError {
        DeployError::new(
            Why::Conflict,
            format!(
                "server {slug} is declared in {}: change it there and reload (SIGHUP or POST /api/reload)",
                self.source
            ),
        )
    }
}

/// The owner or an admin.
pub(super) fn may_change(caller: &Caller, owner: &str, slug: &str) -> Result<(), DeployError> {
    if caller.admin || owner == caller.user {
        Ok(())
    } else {
        Err(DeployError::new(
            Why::Forbidden,
            format!("you do not own server {slug}"),
        ))
    }
}

pub(super) fn parse_version(text: &str) -> Result<Version, DeployError> {
    Version::parse(text).map_err(|e| {
        DeployError::new(
            Why::Invalid,
            format!("version {text:?} is not a semantic version like 1.2.0: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(user: &str, admin: bool) -> Caller {
        Caller {
            user: user.into(),
            admin,
        }
    }

    #[test]
    fn only_the_owner_or_an_admin_may_change_a_server() {
        assert!(may_change(&caller("alice", false), "alice", "app").is_ok());
        assert!(may_change(&caller("root", true), "alice", "app").is_ok());
        let refused = may_change(&caller("bob", false), "alice", "app").unwrap_err();
        assert_eq!(refused.why, Why::Forbidden);
        assert!(refused.message.contains("app"), "{}", refused.message);
    }

    #[test]
    fn a_version_is_semver_or_refused_as_invalid() {
        assert_eq!(parse_version("1.2.3").unwrap(), Version::new(1, 2, 3));
        for bad in ["1.2", "v1.2.3", "", "1.2.3.4"] {
            assert_eq!(parse_version(bad).unwrap_err().why, Why::Invalid, "{bad:?}");
        }
    }
}
