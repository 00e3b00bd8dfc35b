//! What the host does for the built-in `elasticsearch` source: the HTTP grant its `url`
//! implies, the credentials (`api_key`, or `username` + `password`) it resolves and
//! injects into requests to that origin, so the plugin never holds them, and the CA
//! bundle (`ca_file`) its HTTPS to that origin trusts.

use base64::Engine as _;

use crate::capabilities::network::{InjectedHeader, TrustedRoots};
use crate::config::{HttpGrant, Location, SecretResolver, SecretValueRef};

/// Options whose values the host keeps: the plugin receives them as written (secret
/// references), never resolved.
pub const HOST_HELD_OPTIONS: &[&str] = &["api_key", "username", "password"];

/// What the host grants and does for the stage's HTTP.
pub struct Access {
    /// The origin of the configured `url`.
    pub origin: HttpGrant,
    /// The `Authorization` header to inject.
    pub authorization: Option<InjectedHeader>,
    /// The CA bundle `ca_file` names: HTTPS to the origin trusts it instead of the web roots.
    pub trusted: Option<TrustedRoots>,
}

/// The grant, header and trust the options imply.
pub fn access(
    options: &serde_json::Map<String, serde_json::Value>,
    base_dir: &std::path::Path,
) -> Result<Access, String> {
    let url = options
        .get("url")
        .and_then(|v| v.as_str())
        .ok_or("`url` must be set to the cluster's address, e.g. \"https://es.internal:9200\"")?;
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`url` {url:?} is not a URL: {e}"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!(
            "`url` {url:?} needs a scheme and a host, e.g. \"http://127.0.0.1:9200\""
        ));
    };
    if authority.as_str().contains('@') {
        return Err(
            "`url` must not carry credentials; use `api_key` or `username` and `password`".into(),
        );
    }
    let origin = HttpGrant::parse(&format!("{scheme}://{authority}"))
        .map_err(|e| format!("`url` {url:?}: {e}"))?;

    let secret = |name: &str| -> Result<Option<String>, String> {
        let Some(value) = options.get(name) else {
            return Ok(None);
        };
        let text = value.as_str().ok_or_else(|| {
            format!(
                "`{name}` must be a string (a secret reference such as \"${{env:ES_API_KEY}}\")"
            )
        })?;
        let location = Location::whole_file(format!("<option {name}>"));
        let template = SecretValueRef::parse(text, base_dir, &|_| location.clone())
            .map_err(|e| format!("`{name}`: {}", e.message))?;
        let resolved = template
            .resolve(&SecretResolver::from_process_env())
            .map_err(|e| format!("`{name}`: {}", e.message))?;
        Ok(Some(resolved.expose().to_string()))
    };
    let header = match (secret("api_key")?, secret("username")?, secret("password")?) {
        (None, None, None) => None,
        (Some(key), None, None) => Some(format!("ApiKey {key}")),
        (None, Some(user), Some(password)) => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )),
        (Some(_), _, _) => {
            return Err("set either `api_key` or `username` and `password`, not both".into());
        }
        (None, _, _) => {
            return Err("basic authentication needs both `username` and `password`".into());
        }
    };
    let authorization = header
        .map(|value| InjectedHeader::new(origin.clone(), http::header::AUTHORIZATION, &value))
        .transpose()?;
    let trusted = match options.get("ca_file") {
        None => None,
        Some(serde_json::Value::String(path)) => {
            if scheme != "https" {
                return Err(format!("`ca_file` is for https; `url` {url:?} is {scheme}"));
            }
            Some(TrustedRoots::load(origin.clone(), &base_dir.join(path))?)
        }
        Some(_) => {
            return Err(
                "`ca_file` must be a string: the path of a PEM file of CA certificates".into(),
            );
        }
    };
    Ok(Access {
        origin,
        authorization,
        trusted,
    })
}

/// `options` (resolved for the plugin) with the host-held ones put back as written.
pub fn withhold(
    written: &serde_json::Map<String, serde_json::Value>,
    options: &mut serde_json::Map<String, serde_json::Value>,
) {
    for name in HOST_HELD_OPTIONS {
        if let Some(value) = written.get(*name) {
            options.insert(name.to_string(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn url_origin_is_granted_and_credentials_become_a_sensitive_header() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("user"), "elastic\n").unwrap();
        std::fs::write(dir.path().join("pass"), "changeme").unwrap();
        let Access {
            origin,
            authorization: header,
            ..
        } = access(
            &options(json!({"url": "https://es.internal:9243/proxy/", "username": "${file:user}", "password": "${file:pass}"})),
            dir.path(),
        )
        .unwrap();
        assert_eq!(origin.to_string(), "https://es.internal:9243");
        let header = header.unwrap();
        assert_eq!(header.name, http::header::AUTHORIZATION);
        assert_eq!(
            header.value.to_str().unwrap(),
            "Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="
        );
        assert!(header.value.is_sensitive());
        assert!(!format!("{:?}", header.value).contains("ZWxh"));

        let plain = access(
            &options(json!({"url": "http://127.0.0.1:9200"})),
            dir.path(),
        )
        .unwrap();
        assert!(plain.authorization.is_none() && plain.trusted.is_none());
    }

    #[test]
    fn bad_auth_options_are_refused() {
        let dir = std::path::Path::new("/");
        for (value, why) in [
            (json!({}), "`url` must be set"),
            (json!({"url": "es.internal:9200"}), "needs a scheme"),
            (
                json!({"url": "http://u:p@es:9200"}),
                "must not carry credentials",
            ),
            (
                json!({"url": "http://es:9200", "username": "a"}),
                "needs both",
            ),
            (
                json!({"url": "http://es:9200", "api_key": "k", "username": "a", "password": "b"}),
                "not both",
            ),
            (
                json!({"url": "http://es:9200", "api_key": "${env:RUNNER_TEST_SURELY_UNSET_VAR}"}),
                "is not set",
            ),
            (
                json!({"url": "http://es:9200", "api_key": 5}),
                "must be a string",
            ),
            (
                json!({"url": "http://es:9200", "ca_file": "/etc/hostname"}),
                "`ca_file` is for https",
            ),
            (
                json!({"url": "https://es:9200", "ca_file": "/surely/not/there.pem"}),
                "/surely/not/there.pem",
            ),
            (
                json!({"url": "https://es:9200", "ca_file": "/etc/hostname"}),
                "no certificate in it",
            ),
        ] {
            let err = access(&options(value.clone()), dir).err().expect("refused");
            assert!(err.contains(why), "{value}: {err}");
        }
    }

    #[test]
    fn the_plugin_gets_credentials_as_written() {
        let written =
            options(json!({"url": "http://es:9200", "api_key": "${env:ES_KEY}", "page_size": 10}));
        let mut resolved =
            options(json!({"url": "http://es:9200", "api_key": "the-secret", "page_size": 10}));
        withhold(&written, &mut resolved);
        assert_eq!(resolved["api_key"], "${env:ES_KEY}");
        assert_eq!(resolved["page_size"], 10);
    }
}
