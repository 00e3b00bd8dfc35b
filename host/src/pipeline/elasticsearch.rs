//! What the host does for the built-in `elasticsearch` source: the HTTP grant its `url`
//! implies, and the credentials (`api_key`, or `username` + `password`) it resolves and
//! injects into requests to that origin, so the plugin never holds them.

use base64::Engine as _;

use crate::capabilities::network::InjectedHeader;
use crate::config::{HttpGrant, Location, SecretResolver, SecretValueRef};

/// Options whose values the host keeps: the plugin receives them as written (secret
/// references), never resolved.
pub const HOST_HELD_OPTIONS: &[&str] = &["api_key", "username", "password"];

/// The origin of the configured `url` as a grant, and the `Authorization` header to inject.
pub fn access(
    options: &serde_json::Map<String, serde_json::Value>,
    base_dir: &std::path::Path,
) -> Result<(HttpGrant, Option<InjectedHeader>), String> {
    let url = options
        .get("url")
        .and_then(|v| v.as_str())
        .ok_or("`url` must be set to the cluster's address, e.g. \"https://es.internal:9200\"")?;
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`url` {url:?} is not a URL: {e}"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!("`url` {url:?} needs a scheme and a host, e.g. \"http://127.0.0.1:9200\""));
    };
    if authority.as_str().contains('@') {
        return Err("`url` must not carry credentials; use `api_key` or `username` and `password`".into());
    }
    let origin = HttpGrant::parse(&format!("{scheme}://{authority}"))
        .map_err(|e| format!("`url` {url:?}: {e}"))?;

    let secret = |name: &str| -> Result<Option<String>, String> {
        let Some(value) = options.get(name) else {
            return Ok(None);
        };
        let text = value
            .as_str()
            .ok_or_else(|| format!("`{name}` must be a string (a secret reference such as \"${{env:ES_API_KEY}}\")"))?;
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
        (Some(_), _, _) => return Err("set either `api_key` or `username` and `password`, not both".into()),
        (None, _, _) => return Err("basic authentication needs both `username` and `password`".into()),
    };
    let header = header
        .map(|value| InjectedHeader::new(origin.clone(), http::header::AUTHORIZATION, &value))
        .transpose()?;
    Ok((origin, header))
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
