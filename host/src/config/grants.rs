//! What a stage's plugin may reach: directories, HTTP origins and TCP addresses (everything else is denied).

use std::fmt;
use std::path::PathBuf;

/// Everything one stage is granted. Empty means the plugin reaches nothing outside itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub dirs: Vec<DirGrant>,
    pub http: Vec<HttpGrant>,
    pub tcp: Vec<TcpGrant>,
    /// Repository keys the plugin may seal and open with, by name (only "data" exists).
    pub keys: Vec<String>,
}

/// The key names a stage can be granted.
pub const KEY_NAMES: &[&str] = &["data"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// Resolved against the pipeline file's directory.
    pub path: PathBuf,
    pub access: DirAccess,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DirAccess {
    Read,
    ReadWrite,
}

impl DirAccess {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(DirAccess::Read),
            "read-write" => Some(DirAccess::ReadWrite),
            _ => None,
        }
    }
}

impl fmt::Display for DirAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DirAccess::Read => "read",
            DirAccess::ReadWrite => "read-write",
        })
    }
}

/// Why a grant string is malformed; the caller adds where it was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GrantError(String);

/// An HTTP origin a plugin may send requests to: `scheme://host[:port]`.
/// A host `*.example.com` matches any subdomain (any depth) of example.com, not example.com itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpGrant {
    pub scheme: String,
    pub host: String,
    pub port: Option<u16>,
}

impl HttpGrant {
    pub fn parse(text: &str) -> Result<Self, GrantError> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(GrantError(
                "expected scheme://host[:port], e.g. \"https://api.example.com\"".into(),
            ));
        };
        let scheme = scheme.to_ascii_lowercase();
        if default_port(&scheme).is_none() {
            return Err(GrantError(format!(
                "unsupported scheme \"{scheme}\"; expected http or https"
            )));
        }
        let origin = rest.strip_suffix('/').unwrap_or(rest);
        if origin.contains(['/', '?', '#', '@']) {
            return Err(GrantError(
                "an http grant names an origin (scheme://host[:port]), not a path, query or user"
                    .into(),
            ));
        }
        let (host, port) = split_host_port(origin)?;
        let host = parse_host(host, true)?;
        Ok(HttpGrant { scheme, host, port })
    }

    /// Whether a request to `scheme://host[:port]` is covered by this grant. A missing port means the
    /// scheme's default (80 or 443), on both sides: a grant without a port allows only that default.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        let wanted_port = port.or_else(|| default_port(&scheme));
        if scheme != self.scheme
            || wanted_port.is_none()
            || wanted_port != self.port.or_else(|| default_port(&self.scheme))
        {
            return false;
        }
        let host = normalize_host(host);
        match self.host.strip_prefix('*') {
            Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            None => host == self.host,
        }
    }
}

impl fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, bracket_ipv6(&self.host))?;
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// A TCP address a plugin may connect to: `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TcpGrant {
    pub host: String,
    pub port: u16,
}

impl TcpGrant {
    pub fn parse(text: &str) -> Result<Self, GrantError> {
        let (host, port) = split_host_port(text)?;
        let Some(port) = port else {
            return Err(GrantError(
                "a tcp grant needs a port: expected host:port, e.g. \"db.internal:5432\"".into(),
            ));
        };
        Ok(TcpGrant {
            host: parse_host(host, false)?,
            port,
        })
    }

    pub fn allows(&self, host: &str, port: u16) -> bool {
        port == self.port && normalize_host(host) == self.host
    }
}

impl fmt::Display for TcpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", bracket_ipv6(&self.host), self.port)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Lowercase, without IPv6 brackets or a trailing root dot, so grants and requests compare equal.
fn normalize_host(host: &str) -> String {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn split_host_port(text: &str) -> Result<(&str, Option<u16>), GrantError> {
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err(GrantError("unclosed '[' in IPv6 address".into()));
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => {
                    return Err(GrantError(format!(
                        "unexpected \"{after}\" after IPv6 address"
                    )));
                }
            },
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(p) if p != 0 => Some(p),
            _ => {
                return Err(GrantError(format!(
                    "invalid port \"{port}\"; expected 1-65535"
                )));
            }
        },
    };
    Ok((host, port))
}

fn parse_host(host: &str, wildcard_allowed: bool) -> Result<String, GrantError> {
    let host = normalize_host(host);
    if host.contains(':') {
        return match host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(host),
            Err(_) => Err(GrantError(format!("invalid IPv6 address \"{host}\""))),
        };
    }
    let labels: Vec<&str> = host.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if *label == "*" {
            if !wildcard_allowed {
                return Err(GrantError(
                    "wildcards are not allowed in tcp grants; name the host".into(),
                ));
            }
            if i != 0 || labels.len() < 2 {
                return Err(GrantError(format!(
                    "invalid wildcard in \"{host}\"; '*' may only be the first label, as in \"*.example.com\""
                )));
            }
        } else if label.is_empty()
            || !label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(GrantError(format!("invalid host \"{host}\"")));
        }
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_grant_matching() {
        let exact = HttpGrant::parse("https://es.example.com:9200").unwrap();
        assert_eq!(
            exact,
            HttpGrant {
                scheme: "https".into(),
                host: "es.example.com".into(),
                port: Some(9200)
            }
        );
        assert!(exact.allows("https", "ES.example.com", Some(9200)));
        assert!(
            !exact.allows("https", "es.example.com", None),
            "443 is not 9200"
        );
        assert!(!exact.allows("http", "es.example.com", Some(9200)));
        assert!(!exact.allows("https", "es.example.com.evil.net", Some(9200)));

        let wildcard = HttpGrant::parse("https://*.example.com").unwrap();
        assert!(wildcard.allows("https", "a.example.com", None));
        assert!(wildcard.allows("https", "a.b.example.com", Some(443)));
        assert!(
            !wildcard.allows("https", "example.com", None),
            "the apex is not a subdomain"
        );
        assert!(!wildcard.allows("https", "evilexample.com", None));
        assert!(!wildcard.allows("https", "a.example.com", Some(8443)));
        assert!(!wildcard.allows("http", "a.example.com", None));
        assert_eq!(wildcard.to_string(), "https://*.example.com");

        let plain = HttpGrant::parse("http://127.0.0.1/").unwrap();
        assert!(plain.allows("http", "127.0.0.1", Some(80)));
        assert!(!plain.allows("ftp", "127.0.0.1", None));
        let v6 = HttpGrant::parse("http://[::1]:8080").unwrap();
        assert!(v6.allows("http", "[::1]", Some(8080)));
        assert_eq!(v6.to_string(), "http://[::1]:8080");
    }

    #[test]
    fn malformed_http_grants() {
        for (bad, why) in [
            ("es.example.com", "scheme://host"),
            ("ftp://x.org", "unsupported scheme"),
            ("https://x.org/api", "not a path"),
            ("https://x.org:0", "invalid port"),
            ("https://x.org:99999", "invalid port"),
            ("https://a.*.org", "first label"),
            ("https://*", "first label"),
            ("https://bad host", "invalid host"),
            ("https://", "invalid host"),
        ] {
            let err = HttpGrant::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn tcp_grants() {
        let db = TcpGrant::parse("db.internal:5432").unwrap();
        assert!(db.allows("DB.internal", 5432));
        assert!(!db.allows("db.internal", 5433));
        assert!(!db.allows("db.internal.evil", 5432));
        assert_eq!(
            TcpGrant::parse("[::1]:5432").unwrap().to_string(),
            "[::1]:5432"
        );
        assert!(
            TcpGrant::parse("db.internal")
                .unwrap_err()
                .to_string()
                .contains("needs a port")
        );
        assert!(
            TcpGrant::parse("*.internal:5432")
                .unwrap_err()
                .to_string()
                .contains("wildcards")
        );
    }
}
