//! Identifiers: provider ids are path-safe; user and agent ids are opaque caller strings, bounded
//! and free of control characters, and (new ones) of invisible and bidirectional formatting
//! characters.

use super::InvalidInput;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest provider id.
pub(super) const MAX_PROVIDER_ID: usize = 64;
/// Longest user or agent id, in bytes.
pub(super) const MAX_PRINCIPAL_ID: usize = 256;

/// A caller-chosen provider id: 1-64 of `[a-z0-9_-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProviderId(String);

impl ProviderId {
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        const FIELD: &str = "provider_id";
        if s.is_empty() {
            return Err(InvalidInput::new(FIELD, "is required"));
        }
        if s.len() > MAX_PROVIDER_ID {
            return Err(InvalidInput::new(
                FIELD,
                format!("is longer than {MAX_PROVIDER_ID} characters"),
            ));
        }
        if !Self::well_formed(s) {
            return Err(InvalidInput::new(
                FIELD,
                "must be lowercase letters, digits, '-' or '_', starting with a letter or digit",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// Whether `s` is a provider id (`parse` would take it), without making one.
    pub fn is_valid(s: &str) -> bool {
        (1..=MAX_PROVIDER_ID).contains(&s.len()) && Self::well_formed(s)
    }

    fn well_formed(s: &str) -> bool {
        let ok_char =
            |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_';
        s.bytes().all(ok_char) && s.starts_with(|c: char| c.is_ascii_alphanumeric())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! principal_id {
    ($name:ident, $field:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// A new id, from a request or the configuration.
            pub fn parse(s: &str) -> Result<Self, InvalidInput> {
                check_principal($field, s)?;
                check_visible($field, s)?;
                Ok(Self(s.to_owned()))
            }

            /// An id a request names to look up what may have been stored under an older
            /// version's rules (which took invisible characters): revoking or listing it.
            pub fn existing(s: &str) -> Result<Self, InvalidInput> {
                check_principal($field, s)?;
                Ok(Self(s.to_owned()))
            }

            /// Whether `s` is one (`parse` would take it), without making one.
            pub fn is_valid(s: &str) -> bool {
                check_principal($field, s).is_ok() && check_visible($field, s).is_ok()
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// A stored id (a record's): held to the rules it was written under, so a record of a
        /// version that took invisible characters still reads.
        impl TryFrom<String> for $name {
            type Error = InvalidInput;
            fn try_from(s: String) -> Result<Self, InvalidInput> {
                check_principal($field, &s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

principal_id!(UserId, "user_id", "The person an agent acts for.");

impl UserId {
    /// An id no caller can name: `s` behind a control character, which `parse` refuses. For the
    /// daemon's own slots keyed like grants (a client token's cache slot), so no request
    /// reaches them.
    pub(crate) fn reserved(s: &str) -> Self {
        Self(format!("\u{1}{s}"))
    }

    /// Whether this is a `reserved` id (a slot of the daemon's, not a person).
    pub(crate) fn is_reserved(&self) -> bool {
        self.0.starts_with('\u{1}')
    }
}
principal_id!(
    AgentId,
    "agent_id",
    "An agent, when a grant belongs to one agent only."
);
principal_id!(
    AccountId,
    "account",
    "One of a user's accounts at a provider, when they connect several (absent: the default)."
);

fn check_principal(field: &'static str, s: &str) -> Result<(), InvalidInput> {
    if s.is_empty() {
        return Err(InvalidInput::new(field, "is required"));
    }
    if s.len() > MAX_PRINCIPAL_ID {
        return Err(InvalidInput::new(
            field,
            format!("is longer than {MAX_PRINCIPAL_ID} bytes"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(InvalidInput::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Refuses the characters that show as nothing, break the line or reorder what follows
/// (zero-width spaces and joiners, the soft hyphen, the byte order mark, bidirectional
/// embeddings, overrides, isolates and marks, line and paragraph separators, variation
/// selectors, Hangul fillers, tags): an id holding one looks like another in a log line, the
/// audit trail or the CLI (`alice` and `alice\u{200b}`, or a right-to-left override reversing
/// the rest). Emoji sequences built with a joiner or a variation selector are refused with them.
fn check_visible(field: &'static str, s: &str) -> Result<(), InvalidInput> {
    let invisible = |c: char| {
        matches!(
            c,
            '\u{ad}'
                | '\u{34f}'
                | '\u{61c}'
                | '\u{115f}'
                | '\u{1160}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e0000}'..='\u{e007f}'
                | '\u{e0100}'..='\u{e01ef}'
        )
    };
    if s.chars().any(invisible) {
        return Err(InvalidInput::new(
            field,
            "must not contain invisible or bidirectional formatting characters (zero-width spaces, direction overrides)",
        ));
    }
    Ok(())
}

impl TryFrom<String> for ProviderId {
    type Error = InvalidInput;
    fn try_from(s: String) -> Result<Self, InvalidInput> {
        Self::parse(&s)
    }
}

impl From<ProviderId> for String {
    fn from(v: ProviderId) -> String {
        v.0
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_valid_agrees_with_parse() {
        let long = |n| "x".repeat(n);
        let inputs = [
            String::new(),
            "a".into(),
            "A".into(),
            "-a".into(),
            "a-b_c9".into(),
            "é".into(),
            "a b".into(),
            "a\nb".into(),
            long(MAX_PROVIDER_ID),
            long(MAX_PROVIDER_ID + 1),
            long(MAX_PRINCIPAL_ID),
            long(MAX_PRINCIPAL_ID + 1),
        ];
        for s in &inputs {
            assert_eq!(
                ProviderId::is_valid(s),
                ProviderId::parse(s).is_ok(),
                "{s:?}"
            );
            assert_eq!(UserId::is_valid(s), UserId::parse(s).is_ok(), "{s:?}");
            assert_eq!(AgentId::is_valid(s), AgentId::parse(s).is_ok(), "{s:?}");
        }
    }

    #[test]
    fn provider_ids() {
        assert!(ProviderId::parse("github").is_ok());
        assert!(ProviderId::parse("my_idp-2").is_ok());
        for bad in ["", "-x", "GitHub", "a/b", "a b", "../x", &"a".repeat(65)] {
            assert!(ProviderId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_reserved_id_is_one_no_caller_can_name() {
        let reserved = UserId::reserved("client/abc");
        assert!(reserved.is_reserved() && !UserId::parse("client/abc").unwrap().is_reserved());
        assert!(!UserId::is_valid(reserved.as_str()));
        // Nor through the wire's conversion.
        assert!(UserId::try_from(reserved.as_str().to_owned()).is_err());
    }

    #[test]
    fn principal_ids() {
        assert!(UserId::parse("alice@example.com").is_ok());
        assert_eq!(UserId::parse("").unwrap_err().field, "user_id");
        assert!(AgentId::parse("a\nb").is_err());
        assert!(AgentId::parse(&"x".repeat(257)).is_err());
    }

    #[test]
    fn new_ids_hold_no_invisible_or_direction_changing_characters() {
        for bad in [
            "alice\u{200b}",
            "\u{feff}alice",
            "ali\u{202e}ecilA",
            "a\u{2066}b\u{2069}",
            "soft\u{ad}hyphen",
            "tag\u{e0041}",
            "line\u{2028}separator",
            "filler\u{3164}",
            "selector\u{fe0f}",
        ] {
            let e = UserId::parse(bad).unwrap_err();
            assert_eq!(e.field, "user_id");
            assert!(e.reason.contains("invisible"), "{e:?}");
            assert!(
                !UserId::is_valid(bad) && AgentId::parse(bad).is_err(),
                "{bad:?}"
            );
            assert!(AccountId::parse(bad).is_err(), "{bad:?}");
            // A record written before the rule still reads, and a request may name it to
            // revoke or list it.
            let stored: UserId = serde_json::from_value(serde_json::json!(bad)).unwrap();
            assert_eq!(stored.as_str(), bad);
            assert_eq!(UserId::existing(bad).unwrap(), stored);
        }
        // Visible non-ASCII stays welcome, right-to-left scripts included.
        for good in ["josé@example.com", "محمد", "用户", "🦀"] {
            assert!(UserId::parse(good).is_ok(), "{good:?}");
        }
    }
}
