//! Outbound network grants: TCP to listed `host:port`s (the wasi:sockets address check) and
//! HTTP to listed `scheme://host[:port]`s (checked on every request in wasi:http's send hook),
//! with the host's own HTTPS sender for origins that trust a private CA bundle.
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

/// HTTPS to one granted origin trusting exactly the certificates of a CA bundle (PEM)
/// instead of the built-in web roots, which wasi-http's default sender is fixed to.
#[derive(Clone)]
pub struct TrustedRoots {
    pub origin: HttpGrant,
    /// The bundle, as configured (for `validate` and errors).
    pub ca_file: std::path::PathBuf,
    /// How many certificates it holds.
    pub certificates: usize,
    config: Arc<rustls::ClientConfig>,
}

impl TrustedRoots {
    /// Reads every `CERTIFICATE` block of the PEM file; a file without one is refused.
    pub fn load(origin: HttpGrant, ca_file: &std::path::Path) -> Result<Self, String> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let shown = ca_file.display();
        let pem = std::fs::read(ca_file).map_err(|e| format!("`ca_file` {shown}: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("`ca_file` {shown}: not PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("`ca_file` {shown}: a certificate in it is unusable: {e}"))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "`ca_file` {shown}: no certificate in it (expected PEM blocks \
                 \"-----BEGIN CERTIFICATE-----\")"
            ));
        }
        let certificates = roots.len();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(TrustedRoots {
            origin,
            ca_file: ca_file.to_path_buf(),
            certificates,
            config: Arc::new(config),
        })
    }
}

/// The wasi:http hooks of a stage: every outgoing request is checked against the grants,
/// and requests to an origin with injected headers get them (replacing the plugin's own).
pub struct HttpGrants {
    grants: Vec<HttpGrant>,
    headers: Vec<InjectedHeader>,
    trusted: Vec<TrustedRoots>,
    plugin: Arc<str>,
}

impl HttpGrants {
    pub fn new(
        grants: Vec<HttpGrant>,
        headers: Vec<InjectedHeader>,
        trusted: Vec<TrustedRoots>,
        plugin: Arc<str>,
    ) -> Self {
        HttpGrants {
            grants,
            headers,
            trusted,
            plugin,
        }
    }

    /// The TLS configuration for an `https` request to an origin with its own CA bundle.
    fn tls_for(&self, uri: &http::Uri) -> Option<Arc<rustls::ClientConfig>> {
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        if uri.scheme_str() != Some("https") {
            return None;
        }
        self.trusted
            .iter()
            .find(|t| t.origin.allows("https", host, uri.port_u16()))
            .map(|t| t.config.clone())
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
        let tls = self.tls_for(request.uri());
        Box::new(async move {
            use http_body_util::BodyExt;
            if let Some(tls) = tls {
                return send_trusting(request, options, tls).await;
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }

    /// A certificate the trusted roots do not vouch for is named as such to the plugin
    /// (`tls-certificate-error`) and in the log, with rustls' reason.
    fn p2_error_from_tls(
        &mut self,
        err: &std::io::Error,
    ) -> wasmtime_wasi_http::p2::bindings::http::types::ErrorCode {
        use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
        let certificate = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
        if certificate {
            tracing::warn!(
                plugin = &*self.plugin,
                "TLS: the server's certificate is not trusted: {err} (a private CA needs `ca_file`)"
            );
            ErrorCode::TlsCertificateError
        } else {
            tracing::warn!(plugin = &*self.plugin, "TLS error: {err}");
            ErrorCode::TlsProtocolError
        }
    }
}

type SendOutcome = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

/// HTTP/1.1 over TLS with the given roots: connect, handshake, send, and hand back the
/// response while the connection is driven on its own task (as the default sender does,
/// with the same connect and first-byte timeouts).
async fn send_trusting(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    tls: Arc<rustls::ClientConfig>,
) -> SendOutcome {
    use http_body_util::BodyExt;
    use wasmtime_wasi_http::Error;
    let uri = request.uri().clone();
    let host = uri
        .host()
        .ok_or(Error::HttpRequestUriInvalid)?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let never = std::time::Duration::from_secs(600);
    let connect_timeout = options.and_then(|o| o.connect_timeout).unwrap_or(never);
    let first_byte_timeout = options.and_then(|o| o.first_byte_timeout).unwrap_or(never);
    let tcp = tokio::time::timeout(
        connect_timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)?
    .map_err(Error::Connect)?;
    let name =
        rustls::pki_types::ServerName::try_from(host).map_err(|_| Error::HttpRequestUriInvalid)?;
    let stream = tokio::time::timeout(
        connect_timeout,
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)?
    .map_err(Error::Tls)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(stream)).await?;
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = closed_tx.send(connection.await);
    });
    // Only the path goes on the request line (the authority is the connection's).
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
    let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
    let io = async move {
        match closed_rx.await {
            Ok(Err(e)) => Err(Error::from(e)),
            _ => Ok(()),
        }
    };
    Ok((response, Box::new(io)))
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
