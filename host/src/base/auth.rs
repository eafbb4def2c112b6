//! Who is asking: session tokens (HS256 JWTs) from the `session` cookie or an
//! `Authorization: Bearer` header.
//!
//! The contract requires "a valid session cookie (signed JWT)". We accept
//! exactly one algorithm, HS256, with a secret only the host knows; the
//! token's `alg` header must say HS256 (so `alg: none` and algorithm
//! confusion are refused by construction), and `exp` is required.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The name of the cookie that carries the session token.
pub const SESSION_COOKIE: &str = "session";

/// The shortest secret the host accepts, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// A token's claims.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id (a tenant's `owner`).
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
}

/// Verifies and mints session tokens with one secret.
pub struct Sessions {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Checks the signature and nothing else (`signed_by_us`).
    signature_only: Validation,
}

/// Why a request is not authenticated (always answered 401).
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Neither a `session` cookie nor a bearer token.
    Missing,
    /// Present but not valid: bad signature, algorithm, format or claims.
    Invalid(String),
    Expired,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => write!(f, "sign in first: no session cookie or bearer token"),
            AuthError::Invalid(why) => write!(f, "invalid session token: {why}"),
            AuthError::Expired => write!(f, "the session token has expired: sign in again"),
        }
    }
}

impl Sessions {
    pub fn new(secret: &[u8]) -> Result<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            bail!(
                "the session secret must be at least {MIN_SECRET_BYTES} bytes (it is {})",
                secret.len()
            );
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        let mut signature_only = Validation::new(Algorithm::HS256);
        signature_only.set_required_spec_claims::<&str>(&[]);
        signature_only.validate_exp = false;
        signature_only.validate_nbf = false;
        signature_only.validate_aud = false;
        Ok(Sessions {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            signature_only,
        })
    }

    /// A fresh secret for `--dev`: 32 bytes from the OS random source, as
    /// hex. Never a seeded generator: one printed token and the start time
    /// would be enough to find its seed and forge any session.
    pub fn generate_secret() -> Result<String> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| anyhow::anyhow!("the OS random source failed: {e}"))?;
        Ok(key.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A token for `user`, valid for `ttl`.
    pub fn mint(&self, user: &str, ttl: Duration) -> String {
        let now = unix_now();
        let claims = Claims {
            sub: user.to_string(),
            iat: now,
            exp: now + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// The user a token belongs to.
    pub fn verify(&self, token: &str) -> Result<String, AuthError> {
        self.verify_claims(token).map(|claims| claims.sub)
    }

    /// A valid token's claims.
    pub fn verify_claims(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) if data.claims.sub.is_empty() => {
                Err(AuthError::Invalid("empty subject".into()))
            }
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet".into()),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("only HS256 is accepted".into()),
                _ => AuthError::Invalid(e.to_string()),
            }),
        }
    }

    /// Whether the host signed `token` — valid, expired or not yet valid:
    /// what `crate::edge::boundary` keeps from tenants.
    pub fn signed_by_us(&self, token: &str) -> bool {
        // Three dot-separated parts or it is no JWT: most cookies stop here.
        token.bytes().filter(|&b| b == b'.').count() == 2
            && jsonwebtoken::decode::<serde_json::Value>(
                token,
                &self.decoding,
                &self.signature_only,
            )
            .is_ok()
    }

    /// The user a request is signed in as.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<String, AuthError> {
        self.authenticate_claims(headers).map(|claims| claims.sub)
    }

    /// The same, with the token's claims (a log stream closes at `exp`).
    pub fn authenticate_claims(&self, headers: &HeaderMap) -> Result<Claims, AuthError> {
        let token = request_token(headers).ok_or(AuthError::Missing)?;
        self.verify_claims(token)
    }
}

/// The session token of a request: the `session` cookie, else a bearer token.
pub fn request_token(headers: &HeaderMap) -> Option<&str> {
    let from_cookie = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(name, value)| (name == SESSION_COOKIE).then_some(value.trim_matches('"')));
    from_cookie.or_else(|| {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
    })
}

/// A browser's `Origin` must be the host's own (same `Host`) or one of
/// `allowed` (`[auth] allowed_origins`): otherwise any page a signed-in user
/// visits could use their session cookie (cross-site WebSocket hijacking,
/// cross-site deploys). Clients that send no `Origin` (terminals) pass.
pub fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), String> {
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_ascii_lowercase();
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let own = [format!("http://{host}"), format!("https://{host}")];
    if own.contains(&origin) || allowed.iter().any(|a| a.eq_ignore_ascii_case(&origin)) {
        Ok(())
    } else {
        Err(format!(
            "origin {origin:?} may not use this host's sessions (allow it in [auth] allowed_origins)"
        ))
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses a duration like `90s`, `15m`, `1h`, `7d` (for `--ttl`).
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30m, 1h or 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" | "" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_32_fresh_bytes() {
        let secrets: std::collections::HashSet<String> = (0..64)
            .map(|_| Sessions::generate_secret().unwrap())
            .collect();
        assert_eq!(secrets.len(), 64);
        assert!(
            secrets
                .iter()
                .all(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }
    use base64::Engine as _;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn sessions() -> Sessions {
        Sessions::new(SECRET).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn minted_tokens_verify() {
        let token = sessions().mint("alice", Duration::from_secs(60));
        assert_eq!(sessions().verify(&token), Ok("alice".to_string()));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Sessions::new(b"short").is_err());
    }

    #[test]
    fn wrong_secret_tampering_expiry_and_alg_none_are_refused() {
        let other = Sessions::new(b"another secret that is long enough!!").unwrap();
        let token = other.mint("alice", Duration::from_secs(60));
        assert!(matches!(
            sessions().verify(&token),
            Err(AuthError::Invalid(_))
        ));

        let token = sessions().mint("alice", Duration::from_secs(60));
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let exp = unix_now() + 60;
        parts[1] = b64(format!(r#"{{"sub":"bob","exp":{exp},"iat":0}}"#).as_bytes());
        assert!(matches!(
            sessions().verify(&parts.join(".")),
            Err(AuthError::Invalid(_))
        ));

        let none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), parts[1]);
        assert!(matches!(
            sessions().verify(&none),
            Err(AuthError::Invalid(_))
        ));

        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "alice".into(),
                exp: unix_now() - 3600,
                iat: 0,
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(sessions().verify(&expired), Err(AuthError::Expired));

        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &Claims {
                sub: "alice".into(),
                exp: unix_now() + 60,
                iat: 0,
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(
            sessions().verify(&hs512),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn token_comes_from_the_cookie_or_a_bearer_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_token(&headers), None);
        headers.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(request_token(&headers), Some("abc"));
        headers.insert(
            "cookie",
            "theme=dark; session=xyz; other=1".parse().unwrap(),
        );
        assert_eq!(request_token(&headers), Some("xyz"), "the cookie wins");
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_ttl("soon").is_err());
        assert!(parse_ttl("5y").is_err());
    }
}
