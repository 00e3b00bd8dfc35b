//! Outbound network grants: TCP to listed `host:port`s (the wasi:sockets address check) and
//! HTTP to listed `scheme://host[:port]`s (checked on every request in wasi:http's send hook).
//! Nothing else: no listening sockets, no UDP, no other destination.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use crate::config::{HttpGrant, TcpGrant};

/// Opens exactly the granted TCP destinations in a WASI context. Host names are resolved
/// once, when the stage starts: the plugin reaches the addresses the name had then.
pub fn grant_tcp(builder: &mut WasiCtxBuilder, grants: &[TcpGrant]) -> anyhow::Result<()> {
    if grants.is_empty() {
        return Ok(());
    }
    let mut allowed: BTreeSet<SocketAddr> = BTreeSet::new();
    for grant in grants {
        let resolved = (grant.host.as_str(), grant.port)
            .to_socket_addrs()
            .map_err(|e| anyhow::anyhow!("cannot resolve granted TCP address {grant}: {e}"))?;
        allowed.extend(resolved);
    }
    let allowed = Arc::new(allowed);
    builder
        .allow_tcp(true)
        .allow_udp(false)
        .allow_ip_name_lookup(true)
        .socket_addr_check(move |addr, use_| {
            let allowed = allowed.clone();
            Box::pin(async move {
                match use_ {
                    SocketAddrUse::TcpConnect => allowed.contains(&addr),
                    // wasmtime asks about an implicit bind to the wildcard address before every
                    // connect; an explicit bind (to listen) names a real address or port.
                    SocketAddrUse::TcpBind => addr.port() == 0 && addr.ip().is_unspecified(),
                    _ => false,
                }
            })
        });
    Ok(())
}

/// A header the host adds to every request a plugin sends to one granted origin: credentials
/// (`Authorization`) resolved by the host, so the plugin never holds them.
#[derive(Clone)]
pub struct InjectedHeader {
    pub origin: HttpGrant,
    pub name: http::HeaderName,
    /// Marked sensitive: `http` hides it from Debug output.
    pub value: http::HeaderValue,
}

impl InjectedHeader {
    pub fn new(origin: HttpGrant, name: http::HeaderName, value: &str) -> Result<Self, String> {
        let mut value = http::HeaderValue::from_str(value).map_err(|_| {
            format!("the {name} header for {origin} holds characters HTTP headers cannot carry")
        })?;
        value.set_sensitive(true);
        Ok(InjectedHeader {
            origin,
            name,
            value,
        })
    }
}

/// The wasi:http hooks of a stage: every outgoing request is checked against the grants,
/// and requests to an origin with injected headers get them (replacing the plugin's own).
pub struct HttpGrants {
    grants: Vec<HttpGrant>,
    headers: Vec<InjectedHeader>,
    plugin: Arc<str>,
}

impl HttpGrants {
    pub fn new(grants: Vec<HttpGrant>, headers: Vec<InjectedHeader>, plugin: Arc<str>) -> Self {
        HttpGrants {
            grants,
            headers,
            plugin,
        }
    }

    fn inject(&self, request: &mut http::Request<WasiBody>) {
        let uri = request.uri().clone();
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        for header in &self.headers {
            if header.origin.allows(scheme, host, uri.port_u16()) {
                request
                    .headers_mut()
                    .insert(header.name.clone(), header.value.clone());
            }
        }
    }

    fn allows(&self, uri: &http::Uri) -> bool {
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.grants
            .iter()
            .any(|g| g.allows(scheme, host, uri.port_u16()))
    }
}

impl WasiHttpHooks for HttpGrants {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        if !self.allows(request.uri()) {
            tracing::warn!(plugin = &*self.plugin, uri = %redact(request.uri()), "HTTP request denied: not granted");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        _ = fut;
        self.inject(&mut request);
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// A URI for logs: scheme, host and port only (paths and queries may carry tokens).
fn redact(uri: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("?"),
        uri.host().unwrap_or("?"),
        uri.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}
