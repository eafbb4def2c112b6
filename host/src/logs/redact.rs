//! Secrets out of entries: every entry a request produces has its tenant's
//! secret values replaced by [`REDACTED`] (`crate::logs::capture` calls
//! [`redact`] on each line, `wasi:logging` message and host entry before it
//! becomes an entry).

/// What a secret becomes in an entry.
pub(crate) const REDACTED: &str = "[REDACTED]";

/// A piece this long at the end of a cut line that begins a secret is
/// scrubbed too; shorter ones say too little to matter.
const MIN_SECRET_PREFIX: usize = 4;

/// Replaces every secret in `text` (longest first) with [`REDACTED`]. When
/// `cut`, the text was cut short: a trailing piece that begins a secret is
/// replaced as well.
pub(crate) fn redact(text: &mut String, secrets: &[String], cut: bool) {
    for secret in secrets {
        if text.contains(secret.as_str()) {
            *text = text.replace(secret.as_str(), REDACTED);
        }
    }
    if !cut {
        return;
    }
    for secret in secrets {
        let longest = secret.len().saturating_sub(1).min(text.len());
        let piece = (MIN_SECRET_PREFIX..=longest)
            .rev()
            .find(|&len| secret.is_char_boundary(len) && text.ends_with(&secret[..len]));
        if let Some(len) = piece {
            text.truncate(text.len() - len);
            text.push_str(REDACTED);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(text: &str, cut: bool) -> String {
        let mut text = text.to_string();
        redact(
            &mut text,
            &["sk-live-1234".to_string(), "abc".to_string()],
            cut,
        );
        text
    }

    #[test]
    fn whole_secrets_anywhere_and_a_cut_one_at_the_end() {
        assert_eq!(
            redacted("a sk-live-1234 b sk-live-1234", false),
            "a [REDACTED] b [REDACTED]"
        );
        assert_eq!(redacted("ends with sk-li", true), "ends with [REDACTED]");
        assert_eq!(
            redacted("ends with sk-li", false),
            "ends with sk-li",
            "only when cut"
        );
        assert_eq!(
            redacted("ends with sk-", true),
            "ends with sk-",
            "3 bytes say too little"
        );
        assert_eq!(
            redacted("abc and ab", true),
            "[REDACTED] and ab",
            "short secrets only whole"
        );
    }
}
