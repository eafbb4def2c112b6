//! Files the host trusts only if no other user could have read or written
//! them: secrets (a tenant's secret files, a tenants file that holds
//! `[auth] session_secret`) must be readable by their owner alone, and the
//! artifact cache — native code the host maps and runs without checking it
//! — must be a folder this user owns and nobody else can write to.
//!
//! On other systems than Unix there are no mode bits to check: both pass.

use std::path::Path;

/// A file holding a secret: refused when its group or others may read it.
pub(crate) fn check_secret_file(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot read file {shown}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "file {shown} holds a secret but is readable by group or others \
                 (mode {mode:o}): chmod 600 {shown}"
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    Ok(())
}

/// A folder whose contents the host runs: refused unless this user owns
/// it and neither group nor others may write to it.
pub(crate) fn check_own_dir(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let metadata =
        std::fs::metadata(path).map_err(|e| format!("cannot read folder {shown}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if metadata.uid() != me {
            return Err(format!(
                "folder {shown} belongs to user {}, not to this one ({me}): another user \
                 could have put code there",
                metadata.uid()
            ));
        }
        let mode = metadata.mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(format!(
                "folder {shown} may be written by group or others (mode {mode:o}): \
                 chmod 700 {shown}"
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    Ok(())
}

/// Whether a file in a checked folder is this user's (a file another user
/// left there before the folder was locked down is not).
pub(crate) fn owned_by_me(metadata: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        // SAFETY: as above.
        metadata.uid() == unsafe { libc::geteuid() }
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        true
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_secret_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s").unwrap();
        chmod(&file, 0o644);
        let refused = check_secret_file(&file).unwrap_err();
        assert!(refused.contains("chmod 600"), "{refused}");
        chmod(&file, 0o600);
        assert_eq!(check_secret_file(&file), Ok(()));
    }

    #[test]
    fn a_folder_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o777);
        let refused = check_own_dir(dir.path()).unwrap_err();
        assert!(refused.contains("chmod 700"), "{refused}");
        chmod(dir.path(), 0o755);
        assert_eq!(check_own_dir(dir.path()), Ok(()));
    }
}
