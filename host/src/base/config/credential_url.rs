//! URLs that may carry a credential in their userinfo
//! (`nats://user:password@host`, `nats://token@host`): the host connects
//! with the whole URL but shows it — in `/healthz`, a viewer's `notice`,
//! logs, errors and `Debug` output — without the userinfo. The type has no
//! way to print the credential; [`CredentialUrl::expose`] is for the one
//! call that connects.

use std::borrow::Cow;
use std::fmt;

/// A URL (or a comma-separated list of them, as NATS takes) whose
/// userinfo is never shown.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct CredentialUrl(String);

impl CredentialUrl {
    pub fn new(url: impl Into<String>) -> Self {
        CredentialUrl(url.into())
    }

    /// The URL as given, credentials and all: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL as it may be shown: every userinfo taken out.
    pub fn shown(&self) -> Cow<'_, str> {
        without_userinfo(&self.0)
    }

    /// The first URL's userinfo, as NATS reads it: `user:password`, or a
    /// lone token. (The NATS client parses it but does not send it.)
    pub fn userinfo(&self) -> Option<Userinfo> {
        let first = self.0.split(',').next()?.trim();
        let (_, authority, _) = split_url(first);
        let (userinfo, _) = authority.rsplit_once('@')?;
        Some(match userinfo.split_once(':') {
            Some((user, password)) => Userinfo::UserPassword(user.into(), password.into()),
            None => Userinfo::Token(userinfo.into()),
        })
    }

    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }
}

/// A credential carried in a URL.
#[derive(Clone, PartialEq, Eq)]
pub enum Userinfo {
    UserPassword(String, String),
    Token(String),
}

impl fmt::Display for CredentialUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

impl fmt::Debug for CredentialUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

/// `text` with the userinfo (`…@`) of every URL in it removed: a URL is
/// `scheme://authority/…`, its userinfo whatever precedes the last `@` of
/// the authority. Text that is not a URL is returned unchanged, except
/// that an `@` before any `/` marks userinfo too (`user:pw@host:4222`).
pub fn without_userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let parts: Vec<String> = text.split(',').map(one_without_userinfo).collect();
    Cow::Owned(parts.join(","))
}

/// `scheme://`, the authority and the rest of a URL (no scheme: `""`).
fn split_url(url: &str) -> (&str, &str, &str) {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    (scheme, authority, path)
}

fn one_without_userinfo(url: &str) -> String {
    let (scheme, authority, path) = split_url(url);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}{}{path}", &authority[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_never_shows() {
        for (given, shown) in [
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            ("nats://user:password@n1:4222", "nats://n1:4222"),
            ("nats://s3cr3t-token@n1", "nats://n1"),
            ("tls://u:p@a:1, tls://v:q@b:2", "tls://a:1, tls://b:2"),
            ("u:p@host:4222", "host:4222"),
            ("nats://u:p%40x@h:1/path@x", "nats://h:1/path@x"),
            ("nats://a@b@h:1", "nats://h:1"),
        ] {
            let url = CredentialUrl::new(given);
            assert_eq!(url.to_string(), shown, "{given}");
            assert_eq!(format!("{url:?}"), format!("{shown:?}"));
            assert_eq!(url.expose(), given);
        }
        let userinfo = |url: &str| CredentialUrl::new(url).userinfo();
        assert!(userinfo("nats://h:1").is_none());
        assert!(userinfo("nats://t0k@h:1") == Some(Userinfo::Token("t0k".into())));
        assert!(
            userinfo("nats://u:p@h:1,nats://h2")
                == Some(Userinfo::UserPassword("u".into(), "p".into()))
        );
    }
}
