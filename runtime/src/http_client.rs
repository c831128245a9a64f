//! The one outgoing HTTP client of the daemon, for the `http` sink and the
//! OTLP exporter: [ureq](https://docs.rs/ureq/3) (blocking: each user runs on
//! threads of its own) with TLS by rustls (the *ring* provider). Servers are
//! verified against Mozilla's roots (the `webpki-roots` crate), or against the
//! certificates of a PEM file (`ca_file`: a private CA, a self-signed test
//! server). A leaf module: it depends on nothing of the crate.

use std::path::Path;
use std::time::Duration;

/// A client for `http://` and `https://` URLs.
///
/// - `timeout`: for a whole call (connect, send the body, read the answer);
/// - `ca_file`: a PEM file of CA certificates to trust instead of the
///   built-in roots.
///
/// Responses of every status are returned as responses (4xx and 5xx are the
/// caller's to judge), redirects are not followed (a POST is not replayed
/// elsewhere), and idle connections are kept for reuse (keep-alive).
///
/// # Errors
/// `ca_file` cannot be read or holds no certificate.
pub fn agent(timeout: Duration, ca_file: Option<&Path>) -> anyhow::Result<ureq::Agent> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(path) = ca_file {
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&read_certificates(
            path,
        )?));
    }
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls.build())
        .build();
    Ok(config.into())
}

/// The certificates of a PEM file.
///
/// # Errors
/// The file cannot be read, is not PEM, or holds no certificate.
pub fn read_certificates(path: &Path) -> anyhow::Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read the CA file {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => anyhow::bail!("the CA file {} is not PEM: {e}", path.display()),
        }
    }
    anyhow::ensure!(
        !certs.is_empty(),
        "the CA file {} holds no certificate (PEM `BEGIN CERTIFICATE` blocks)",
        path.display()
    );
    Ok(certs)
}

/// Checks that `url` is an absolute `http://` or `https://` URL with a host.
///
/// # Errors
/// Why it is not one, as a sentence.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    url.parse::<ureq::http::Uri>()
        .map_err(|e| format!("{url:?} is not a valid URL: {e}"))?;
    Ok(())
}

/// The wait a `Retry-After` header asks for (RFC 9110 §10.2.3): a number of
/// seconds, or an HTTP-date (then the time from `now` until it; zero if it is
/// past). `None` when absent or neither form.
pub fn retry_after(value: Option<&str>, now: std::time::SystemTime) -> Option<Duration> {
    let value = value?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is RFC 2822's form.
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = std::time::UNIX_EPOCH
        + Duration::from_millis(u64::try_from(date.timestamp_millis()).unwrap_or(0));
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("http://127.0.0.1:8080/ingest").is_ok());
        assert!(check_url("https://collector.example:4318").is_ok());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("http://").is_err());
        assert!(check_url("http:///path").is_err());
        assert!(check_url("127.0.0.1:80").is_err());
    }

    #[test]
    fn retry_after_both_forms() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37 UTC
        assert_eq!(
            retry_after(Some("120"), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after(Some("Sun, 06 Nov 1994 08:49:47 GMT"), now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after(Some("Sun, 06 Nov 1994 08:49:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(Some("soon"), now), None);
        assert_eq!(retry_after(None, now), None);
    }

    #[test]
    fn ca_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = read_certificates(&empty).unwrap_err().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = read_certificates(&missing).unwrap_err().to_string();
        assert!(e.contains("cannot read the CA file"), "{e}");
    }
}
