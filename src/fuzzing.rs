//! Entry points for the fuzz targets under `fuzz/` and for the property tests: each takes raw
//! bytes, runs one parser Valet applies to untrusted input, and asserts what must hold for any
//! input. A panic is the finding. Not part of Valet's API.

use crate::config::{Config, Overrides};
use crate::domain::TokenDialect;
use crate::oauth::OAuthError;
use crate::service::ReferenceKeys;

/// The callback query (`GET /oauth/callback/{provider}?…`): parsed or refused, never a panic.
pub fn callback_query(data: &[u8]) {
    let _ = crate::transport::http::parse_callback_query(Some(&String::from_utf8_lossy(data)));
}

/// A token endpoint's answer, the first byte choosing status and content type, under the plain
/// RFC 6749 dialect and a Slack-like nested one. A provider's error code reaches logs and
/// statuses, so whatever it sent comes out short and on one line.
pub fn token_response(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let status = [200, 400, 401, 429, 500][usize::from(pick % 5)];
    let content_type = if pick & 0x80 == 0 {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    };
    let nested = TokenDialect {
        token_path: Some("authed_user".into()),
        ok_field: Some("ok".into()),
        metadata: vec!["team.id".into()],
        ..TokenDialect::default()
    };
    for (dialect, refresh) in [&TokenDialect::default(), &nested]
        .into_iter()
        .flat_map(|d| [(d, false), (d, true)])
    {
        if let Err(OAuthError::Rejected(code)) =
            crate::oauth::parse_token_response(status, content_type, body, dialect, refresh)
        {
            assert!(code.len() <= 64 && !code.contains(['\n', '\r']), "{code:?}");
        }
    }
}

/// A presented reference: parsed or refused, and random bytes never carry a valid tag.
pub fn reference(data: &[u8]) {
    let keys = ReferenceKeys::from_master(b"fuzz master key 0123456789abcdef");
    let presented = String::from_utf8_lossy(data);
    assert!(keys.parse(&presented).is_err(), "a forged reference parsed");
}

/// A config file's text: it loads, or is refused with every problem named.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = Config::from_toml("fuzz.toml", &text, &Overrides::default(), &|_| None, &[]) {
        assert!(!e.0.is_empty(), "a refusal names its problems");
    }
}
