//! The daemon's HTTP endpoint: `GET /health` (200 while every pipeline is fresh, 503
//! otherwise), `GET /metrics` (Prometheus), `POST /run/NAME` (bearer token).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::sync::{mpsc, oneshot};

use super::{Clock, DaemonError, RunReply, RunRequest, View};
use crate::config::Secret;
use crate::monitor::metrics::Metrics;

pub(super) struct Endpoint {
    pub views: Arc<Mutex<Vec<View>>>,
    pub clock: Clock,
    pub token: Option<Secret>,
    pub requests: mpsc::Sender<RunRequest>,
}

/// Binds `address` and serves in a task; returns the bound address (port 0 resolved).
pub(super) async fn serve(
    address: SocketAddr,
    endpoint: Endpoint,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), DaemonError> {
    let listen_error = |source| DaemonError::Listen { address, source };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    if !bound.ip().is_loopback() {
        tracing::warn!(
            "serving on {bound}, not a loopback address: /health and /metrics are readable by anyone who can reach it"
        );
    }
    let endpoint = Arc::new(endpoint);
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accepting a connection: {e}");
                    continue;
                }
            };
            let endpoint = endpoint.clone();
            let service = hyper::service::service_fn(move |request| {
                let endpoint = endpoint.clone();
                async move { Ok::<_, Infallible>(endpoint.answer(request).await) }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!("connection: {e}");
                }
            });
        }
    });
    Ok((bound, task))
}

type Answer = Response<Full<Bytes>>;

impl Endpoint {
    async fn answer<B>(&self, request: Request<B>) -> Answer {
        let path = request.uri().path().to_string();
        match (request.method(), path.as_str()) {
            (&Method::GET | &Method::HEAD, "/health") => self.health(),
            (&Method::GET | &Method::HEAD, "/metrics") => self.metrics(&request),
            (&Method::POST, run) if run.starts_with("/run/") => {
                let authorization = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_string);
                self.run(authorization, &run["/run/".len()..]).await
            }
            (_, "/health" | "/metrics") => method_not_allowed("GET, HEAD"),
            (_, run) if run.starts_with("/run/") => method_not_allowed("POST"),
            _ => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({
                    "error": format!("no such endpoint {path}"),
                    "endpoints": ["GET /health", "GET /metrics", "POST /run/NAME"],
                }),
            ),
        }
    }

    fn views(&self) -> Vec<View> {
        self.views.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn health(&self) -> Answer {
        let now = self.clock.now();
        let views = self.views();
        let pipelines: Vec<serde_json::Value> = views
            .iter()
            .map(|view| {
                let state = view.state.as_ref();
                serde_json::json!({
                    "pipeline": view.name,
                    "healthy": view.healthy(now),
                    "problems": view.problems(now),
                    "error": view.error,
                    "running": view.running,
                    "schedule": view.schedule,
                    "next_run": view.next_run,
                    "newest_snapshot": state.and_then(|s| s.newest_snapshot),
                    "age_seconds": state.and_then(|s| s.age(now)).map(|a| a.as_secs()),
                    "last_outcome": state.and_then(|s| s.last_run()).map(|r| r.outcome),
                })
            })
            .collect();
        let healthy = views.iter().all(|view| view.healthy(now));
        json(
            if healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            serde_json::json!({
                "status": if healthy { "ok" } else { "unhealthy" },
                "pipelines": pipelines,
            }),
        )
    }

    fn metrics<B>(&self, request: &Request<B>) -> Answer {
        let now = self.clock.now();
        let views = self.views();
        let read: Vec<_> = views
            .iter()
            .filter_map(|v| v.state.as_ref().map(|state| (state, &v.monitor)))
            .collect();
        let mut metrics = Metrics::new(&read, now);
        for view in &views {
            metrics.add_daemon(&view.name, view.next_run, view.running);
        }
        // Prometheus asks for OpenMetrics when it can read it; anything else gets the
        // classic text format.
        let open_metrics = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| accept.contains("application/openmetrics-text"));
        let (body, content_type) = if open_metrics {
            (metrics.exposition(), Metrics::CONTENT_TYPE)
        } else {
            (metrics.textfile(), Metrics::TEXT_CONTENT_TYPE)
        };
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    }

    async fn run(&self, authorization: Option<String>, pipeline: &str) -> Answer {
        let Some(token) = &self.token else {
            return json(
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": "POST /run is disabled: start the daemon with --token '${env:NAME}' (a secret reference)"}),
            );
        };
        let given = authorization
            .as_deref()
            .and_then(|value| value.strip_prefix("Bearer "));
        // Digests compared, so the comparison's time says nothing about the token.
        let sha256 = crate::plugins::sha256;
        if given.is_none_or(|given| sha256(given.as_bytes()) != sha256(token.expose().as_bytes())) {
            tracing::warn!("POST /run/{pipeline} refused: missing or wrong bearer token");
            let mut answer = json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "a valid `Authorization: Bearer TOKEN` header is required"}),
            );
            answer.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"runner\""),
            );
            return answer;
        }
        let (reply, answer) = oneshot::channel();
        let forwarded = self
            .requests
            .send(RunRequest {
                pipeline: pipeline.to_string(),
                reply,
            })
            .await;
        match (forwarded, answer.await) {
            (Ok(()), Ok(RunReply::Started)) => json(
                StatusCode::ACCEPTED,
                serde_json::json!({"pipeline": pipeline, "status": "started"}),
            ),
            (Ok(()), Ok(RunReply::AlreadyRunning)) => json(
                StatusCode::CONFLICT,
                serde_json::json!({"pipeline": pipeline, "error": "a run of this pipeline is in progress"}),
            ),
            (Ok(()), Ok(RunReply::Unknown)) => {
                let names: Vec<String> = self.views().into_iter().map(|v| v.name).collect();
                json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": format!("no pipeline named {pipeline:?}"), "pipelines": names}),
                )
            }
            _ => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "the daemon is stopping"}),
            ),
        }
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Answer {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(format!("{body}\n"))))
        .expect("a valid response")
}

fn method_not_allowed(allow: &'static str) -> Answer {
    let mut answer = json(
        StatusCode::METHOD_NOT_ALLOWED,
        serde_json::json!({"error": format!("method not allowed; use {allow}")}),
    );
    answer
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    answer
}
