//! Why a change to the server list was refused.
//!
//! The deploy layer says what went wrong in its own terms; whoever asked
//! decides what that means on its wire. The deploy API maps each [`Why`] to
//! an HTTP status (`edge::deploy_api`), and nothing here knows HTTP.

/// What kind of refusal: what the caller could do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// The request itself is wrong: a bad version, a body that is no
    /// component, a change that changes nothing.
    Invalid,
    /// The caller may not make this change (not the owner, a slug in its
    /// cooling-off period, a server declared in the tenants file).
    Forbidden,
    /// No such server or version.
    NotFound,
    /// The change conflicts with what is there (the version exists, the
    /// slug is taken, the last active version).
    Conflict,
    /// A well-formed component this host cannot serve (an import it does
    /// not provide).
    Unservable,
    /// The owner is at a quota (`max_versions_per_owner`,
    /// `max_bytes_per_owner`).
    OverQuota,
    /// The host failed (its state could not be written, a compile task
    /// died); nothing changed.
    Failed,
}

/// A refused change: its kind and the sentence that says why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DeployError {
    pub(crate) why: Why,
    pub(crate) message: String,
}

impl DeployError {
    pub(crate) fn new(why: Why, message: impl Into<String>) -> Self {
        DeployError {
            why,
            message: message.into(),
        }
    }

    /// The state could not be written: logged for the operator, said to
    /// the caller; nothing changed.
    pub(crate) fn storage(e: anyhow::Error) -> Self {
        tracing::error!("cannot write the state directory: {e:#}");
        DeployError::new(
            Why::Failed,
            format!("nothing changed: cannot write the state directory: {e:#}"),
        )
    }
}
