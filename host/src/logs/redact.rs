//! Secrets out of entries: every entry a request produces has its tenant's
//! secret values replaced by [`REDACTED`] (`crate::logs::capture` calls
//! [`redact`] on each line, `wasi:logging` message and host entry before it
//! becomes an entry, and [`redact_json`] on a structured line's parsed
//! message and fields, where a JSON escape such as `\u0073` has become the
//! secret's own text again).
//!
//! A guest can print a secret in other forms than its own bytes, so a
//! tenant's secrets are redacted as [`forms_of`] spells them: each line of
//! a multi-line secret (output is split into lines before redaction), its
//! JSON-string and base64 forms; and with any of its bytes percent-encoded.

/// What a secret becomes in an entry.
pub(crate) const REDACTED: &str = "[REDACTED]";

/// A piece this long at the end of a cut line that begins a secret is
/// scrubbed too; shorter ones say too little to matter.
const MIN_SECRET_PREFIX: usize = 4;

/// Pieces shorter than this (a line of a multi-line secret, the
/// unambiguous middle of a base64 form) are not redacted on their own:
/// they would take ordinary text with them.
const MIN_PIECE: usize = 8;

/// Every spelling of `secrets` to redact, longest first (so that a form
/// containing another is replaced whole), without repeats.
pub(crate) fn forms_of(secrets: &[String]) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut forms = Vec::new();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        forms.push(secret.clone());
        let piece = |form: &str| (form.len() >= MIN_PIECE).then(|| form.to_string());
        // Lines, with or without their CR.
        if secret.contains(['\n', '\r']) {
            forms.extend(secret.split(['\n', '\r']).filter_map(piece));
        }
        // As a JSON string's contents.
        let json = serde_json::to_string(secret).expect("a string serializes");
        forms.push(json[1..json.len() - 1].to_string());
        // Base64 at each of the three alignments it can start at inside a
        // longer encoded text, standard and URL-safe: only the characters
        // that the secret's bits alone decide.
        for shift in 0..3usize {
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(secret.as_bytes());
            let decided = bytes.len() * 8 / 6;
            let skip = (shift * 8).div_ceil(6);
            for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                let text = engine.encode(&bytes);
                forms.extend(text.get(skip..decided).and_then(piece));
            }
        }
    }
    forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    forms.dedup();
    forms
}

/// Where `secret` appears in `text` with any of its bytes percent-encoded
/// (`%73`, `%2f` or `%2F`): a guest may encode as few or as many as it
/// likes, so no list of encoded forms could cover them. Returns the first
/// match at or after `from`, as a byte range.
fn find_percent_encoded(text: &str, secret: &str, from: usize) -> Option<std::ops::Range<usize>> {
    let (text, secret) = (text.as_bytes(), secret.as_bytes());
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    (from..text.len()).find_map(|start| {
        let mut at = start;
        for &wanted in secret {
            match text.get(at..) {
                Some([b'%', high, low, ..])
                    if hex(*high).zip(hex(*low)).map(|(h, l)| h << 4 | l) == Some(wanted) =>
                {
                    at += 3;
                }
                Some([byte, ..]) if *byte == wanted => at += 1,
                _ => return None,
            }
        }
        Some(start..at)
    })
}

/// [`redact`] on every string in a parsed structured line: keys and
/// values, however deep.
pub(crate) fn redact_json(value: &mut serde_json::Value, secrets: &[String]) {
    match value {
        serde_json::Value::String(text) => redact(text, secrets, false),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| redact_json(v, secrets)),
        serde_json::Value::Object(map) => redact_fields(map, secrets),
        _ => {}
    }
}

/// The same for a structured line's fields.
pub(crate) fn redact_fields(
    fields: &mut serde_json::Map<String, serde_json::Value>,
    secrets: &[String],
) {
    let taken = std::mem::take(fields);
    for (mut key, mut value) in taken {
        redact(&mut key, secrets, false);
        redact_json(&mut value, secrets);
        fields.insert(key, value);
    }
}

/// Replaces every secret in `text` (longest first) with [`REDACTED`]. When
/// `cut`, the text was cut short: a trailing piece that begins a secret is
/// replaced as well.
pub(crate) fn redact(text: &mut String, secrets: &[String], cut: bool) {
    for secret in secrets {
        if text.contains(secret.as_str()) {
            *text = text.replace(secret.as_str(), REDACTED);
        }
    }
    if text.contains('%') {
        for secret in secrets {
            // From past each replacement: a secret inside `[REDACTED]`
            // itself must not be found there again.
            let mut from = 0;
            while let Some(found) = find_percent_encoded(text, secret, from) {
                from = found.start + REDACTED.len();
                text.replace_range(found, REDACTED);
            }
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

    /// What a guest printing `secret` in `shown` form leaves in an entry.
    fn printed(secret: &str, shown: &str) -> String {
        let forms = forms_of(&[secret.to_string()]);
        let mut text = format!("before {shown} after");
        redact(&mut text, &forms, false);
        text
    }

    #[test]
    fn every_spelling_of_a_secret_is_redacted() {
        use base64::Engine as _;
        let two_lines = "line-one-of-it\nline-two-of-it";
        for shown in ["line-one-of-it", "line-two-of-it"] {
            assert_eq!(printed(two_lines, shown), "before [REDACTED] after");
        }
        let crlf = "first-part-x\r\nsecond-part-y";
        assert_eq!(printed(crlf, "first-part-x"), "before [REDACTED] after");
        let quoted = "pa\"ss\\word-1234";
        assert_eq!(
            printed(quoted, r#"pa\"ss\\word-1234"#),
            "before [REDACTED] after"
        );
        let spaced = "my secret/value+1";
        assert_eq!(
            printed(spaced, "my%20secret%2Fvalue%2B1"),
            "before [REDACTED] after"
        );
        assert_eq!(
            printed(spaced, "my%20secret%2fvalue%2b1"),
            "before [REDACTED] after"
        );
        let secret = "sk-live-1234567890";
        for prefix in ["", "u:", "us:"] {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{prefix}{secret}"));
            let text = printed(secret, &encoded);
            assert!(text.contains("[REDACTED]"), "{prefix}: {text}");
            assert!(!text.contains(&encoded), "{prefix}: {text}");
        }
        // A short line of a secret does not take ordinary text with it.
        assert_eq!(printed("ab\nlong-enough-line", "ab"), "before ab after");
    }

    #[test]
    fn parsed_fields_are_redacted_keys_and_values() {
        let secrets = forms_of(&["sk-live-1234567890".to_string()]);
        let mut value: serde_json::Value = serde_json::from_str(
            r#"{"\u0073k-live-1234567890": ["x \u0073k-live-1234567890", {"deep": "sk-live-1234567890"}]}"#,
        )
        .unwrap();
        redact_json(&mut value, &secrets);
        assert_eq!(
            value,
            serde_json::json!({"[REDACTED]": ["x [REDACTED]", {"deep": "[REDACTED]"}]})
        );
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
