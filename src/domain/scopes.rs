//! OAuth scopes (RFC 6749 section 3.3): a bounded, sorted set of scope tokens.

use super::InvalidInput;
use serde::{Deserialize, Serialize};

pub(super) const MAX_SCOPES: usize = 64;
pub(super) const MAX_SCOPE_LEN: usize = 256;

/// Sorted, without duplicates. A shared slice rather than a set: a pending flow or cached token
/// holds a few scopes, and a tree node costs several times their size; shared, as a handout
/// copies a provider's default scopes and a cached token's on every call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "Vec<String>")]
pub struct Scopes(std::sync::Arc<[String]>);

impl From<Vec<String>> for Scopes {
    fn from(mut items: Vec<String>) -> Self {
        items.sort_unstable();
        items.dedup();
        Self(items.into())
    }
}

impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Scopes {
    /// Parses scope tokens; `field` names the request field in errors.
    pub fn parse<S: AsRef<str>>(field: &'static str, items: &[S]) -> Result<Self, InvalidInput> {
        if items.len() > MAX_SCOPES {
            return Err(InvalidInput::new(
                field,
                format!("at most {MAX_SCOPES} scopes are allowed"),
            ));
        }
        let mut set = Vec::with_capacity(items.len());
        for item in items {
            let s = item.as_ref();
            if s.is_empty() || s.len() > MAX_SCOPE_LEN {
                return Err(InvalidInput::new(
                    field,
                    format!("each scope must be 1-{MAX_SCOPE_LEN} characters"),
                ));
            }
            // scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            if !s
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
            {
                return Err(InvalidInput::new(
                    field,
                    "a scope may only hold visible ASCII other than '\"' and '\\' (no spaces)",
                ));
            }
            set.push(s.to_owned());
        }
        Ok(Self::from(set))
    }

    /// Parses a space-separated scope string as a provider returns it.
    pub fn parse_spaced(field: &'static str, s: &str) -> Result<Self, InvalidInput> {
        let items: Vec<&str> = s.split_whitespace().collect();
        Self::parse(field, &items)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains(&self, scope: &String) -> bool {
        self.0.binary_search(scope).is_ok()
    }

    pub fn contains_all(&self, other: &Scopes) -> bool {
        other.0.iter().all(|s| self.contains(s))
    }

    /// The scopes of `self` that `other` lacks.
    pub fn difference(&self, other: &Scopes) -> Scopes {
        Scopes(
            self.0
                .iter()
                .filter(|s| !other.contains(s))
                .cloned()
                .collect(),
        )
    }

    /// A granted `scope` as a provider wrote it: split on `separator`; tokens that are not valid
    /// scopes are dropped (a provider's answer never makes a request fail).
    pub fn parse_granted(raw: &str, separator: super::Separator) -> Self {
        let split: Vec<&str> = match separator {
            super::Separator::Space => raw.split(' ').collect(),
            super::Separator::Comma => raw.split(',').collect(),
            super::Separator::Any => raw.split([' ', ',']).collect(),
        };
        let set: Vec<String> = split
            .into_iter()
            .map(str::trim)
            .filter(|s| Self::parse("scope", &[*s]).is_ok())
            .map(str::to_owned)
            .take(MAX_SCOPES)
            .collect();
        Scopes::from(set)
    }

    /// Joins the scopes for an authorization request.
    pub fn join(&self, separator: super::Separator) -> String {
        let sep = match separator {
            super::Separator::Comma => ",",
            super::Separator::Space | super::Separator::Any => " ",
        };
        self.0
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(sep)
    }

    /// The OpenID Connect scopes `self` holds (`openid`, `profile`, `email`, `offline_access`):
    /// they name the user and a refresh token, not an API's permissions, and providers often
    /// leave them out of a token response's `scope` (Entra never echoes `offline_access`; MSAL
    /// drops them before comparing, "if the default scopes are not returned from the server":
    /// `removeOIDCScopes` in microsoft-authentication-library-for-js, ScopeSet.ts).
    pub fn oidc(&self) -> Scopes {
        const OIDC: [&str; 4] = ["email", "offline_access", "openid", "profile"];
        Scopes(
            self.0
                .iter()
                .filter(|s| OIDC.contains(&s.as_str()))
                .cloned()
                .collect(),
        )
    }

    pub fn union(&self, other: &Scopes) -> Scopes {
        Scopes::from(
            self.0
                .iter()
                .chain(other.0.iter())
                .cloned()
                .collect::<Vec<_>>(),
        )
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openid_connect_scopes_are_picked_out() {
        let s = Scopes::parse(
            "scopes",
            &[
                "User.Read",
                "offline_access",
                "openid",
                "profile",
                "email",
                "openidx",
            ],
        )
        .unwrap();
        assert_eq!(
            s.oidc().to_vec(),
            ["email", "offline_access", "openid", "profile"]
        );
        assert!(Scopes::parse("s", &["repo"]).unwrap().oidc().is_empty());
    }

    #[test]
    fn parses_and_compares() {
        let a = Scopes::parse("scopes", &["read", "write", "read"]).unwrap();
        let b = Scopes::parse("scopes", &["read"]).unwrap();
        assert_eq!(a.to_vec(), vec!["read", "write"]);
        assert!(a.contains_all(&b));
        assert!(!b.contains_all(&a));
        assert_eq!(b.union(&a), a);
        assert_eq!(Scopes::parse_spaced("scope", " read  write ").unwrap(), a);
    }

    #[test]
    fn refuses_bad_scopes() {
        for bad in ["", "a b", "quote\"", "back\\slash", "tab\t"] {
            let err = Scopes::parse("scopes", &[bad]).unwrap_err();
            assert_eq!(err.field, "scopes");
        }
        let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
        assert!(Scopes::parse("scopes", &many).is_err());
        assert!(Scopes::parse("scopes", &["x".repeat(257)]).is_err());
    }
}
