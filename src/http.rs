//! The outgoing HTTP client shared by captures and scrapes.

use std::time::Duration;

/// A client with rustls on ring, a connect timeout, and redirects followed only within
/// the same host and port (a target must not be able to send alertprof elsewhere).
pub fn client() -> reqwest::Client {
    builder().build().expect("the HTTP client builds")
}

/// Makes rustls on ring the process's TLS provider, for every client built after it:
/// alertprof's own and those inside `object_store`. Part of [`crate::init`].
pub(crate) fn install_tls_provider() {
    // Fails only if a provider was installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The builder behind `client`, for clients that need more (pinned addresses). Needs
/// [`crate::init`] first.
pub fn builder() -> reqwest::ClientBuilder {
    assert!(
        rustls::crypto::CryptoProvider::get_default().is_some(),
        "alertprof::init() runs before any HTTP client is built"
    );
    let same_origin = reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first();
        let same = first.is_some_and(|first| {
            first.host_str() == attempt.url().host_str()
                && first.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if attempt.previous().len() >= 5 {
            attempt.error("too many redirects")
        } else if same {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(same_origin)
        .user_agent(concat!("alertprof/", env!("CARGO_PKG_VERSION")))
}

/// An error with its causes, `a: b: c`, since reqwest's own message hides the cause.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether nothing listened: a connection refused somewhere in the error's causes.
pub fn is_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = cause.source();
    }
    false
}
