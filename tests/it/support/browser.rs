//! A minimal browser: follows redirects by hand with a cookie jar, fills the provider's dev
//! login and consent forms, and stops at Valet's callback so tests can inspect or replay it.

use reqwest::StatusCode;
use url::Url;

pub(crate) struct Browser {
    http: reqwest::Client,
}

fn attr<'a>(html: &'a str, marker: &str) -> Option<&'a str> {
    let start = html.find(marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(&html[start..start + end])
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub(crate) fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Signs in as `login`, then approves (or, with `approve = false`, aborts) the consent.
    /// Returns the callback URL the provider redirected to, without visiting it.
    pub(crate) async fn authorize(&self, auth_url: &str, login: &str, approve: bool) -> Url {
        let mut url = Url::parse(auth_url).unwrap();
        let callback_marker = "/oauth/callback/";
        let mut form: Option<Vec<(String, String)>> = None;
        for _ in 0..20 {
            let resp = match form.take() {
                Some(fields) => self.http.post(url.clone()).form(&fields).send().await,
                None => self.http.get(url.clone()).send().await,
            }
            .unwrap();
            if resp.status().is_redirection() {
                let loc = resp.headers()["location"].to_str().unwrap();
                url = url.join(loc).unwrap();
                if url.path().contains(callback_marker) {
                    return url;
                }
                continue;
            }
            let status = resp.status();
            let html = resp.text().await.unwrap();
            assert_eq!(status, StatusCode::OK, "provider page failed: {html}");
            let action = attr(&html, "action=\"").expect("a form on the provider page");
            let submit = url.join(action).unwrap();
            if html.contains("name=\"login\"") {
                form = Some(vec![
                    ("prompt".into(), "login".into()),
                    ("login".into(), login.into()),
                    ("password".into(), "any".into()),
                ]);
                url = submit;
            } else if approve {
                form = Some(vec![("prompt".into(), "consent".into())]);
                url = submit;
            } else {
                url = Url::parse(&format!("{submit}/abort")).unwrap();
            }
        }
        panic!("the provider did not redirect to the callback");
    }

    /// The device flow's end-user side (RFC 8628 section 3.3) at the provider: opens
    /// `verification_uri_complete` (which posts the user code), confirms it, signs in as `login`
    /// and approves. Returns the final page, the provider's success page.
    pub(crate) async fn device_consent(
        &self,
        verification_uri_complete: &str,
        login: &str,
    ) -> String {
        let mut url = Url::parse(verification_uri_complete).unwrap();
        let mut form: Option<Vec<(String, String)>> = None;
        for _ in 0..20 {
            let resp = match form.take() {
                Some(fields) => self.http.post(url.clone()).form(&fields).send().await,
                None => self.http.get(url.clone()).send().await,
            }
            .unwrap();
            if resp.status().is_redirection() {
                let loc = resp.headers()["location"].to_str().unwrap();
                url = url.join(loc).unwrap();
                continue;
            }
            let status = resp.status();
            let html = resp.text().await.unwrap();
            assert_eq!(status, StatusCode::OK, "provider page failed: {html}");
            let Some(action) = attr(&html, "action=\"") else {
                return html;
            };
            let submit = url.join(action).unwrap();
            let hidden = |name: &str| {
                attr(&html, &format!("name=\"{name}\" value=\""))
                    .unwrap_or_default()
                    .to_owned()
            };
            form = Some(if html.contains("name=\"xsrf\"") {
                // The user-code form (auto-posted) and then its confirmation.
                let mut f = vec![
                    ("xsrf".into(), hidden("xsrf")),
                    ("user_code".into(), hidden("user_code")),
                ];
                if html.contains("name=\"confirm\"") {
                    f.push(("confirm".into(), "yes".into()));
                }
                f
            } else if html.contains("name=\"login\"") {
                vec![
                    ("prompt".into(), "login".into()),
                    ("login".into(), login.into()),
                    ("password".into(), "any".into()),
                ]
            } else {
                vec![("prompt".into(), "consent".into())]
            });
            url = submit;
        }
        panic!("the device verification did not finish");
    }

    /// Visits a URL (the callback) and returns the status and page.
    pub(crate) async fn visit(
        &self,
        url: &Url,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let resp = self.http.get(url.clone()).send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap())
    }

    /// Authorizes and visits the callback; asserts the success page.
    pub(crate) async fn consent(&self, auth_url: &str, login: &str) {
        let cb = self.authorize(auth_url, login, true).await;
        let (status, _, body) = self.visit(&cb).await;
        assert_eq!(status, StatusCode::OK, "callback failed: {body}");
        assert!(body.contains("Authorization complete"), "{body}");
    }
}
