//! The admin listener: metrics, health, the routes/events API and the operator's
//! commands. Off the data path; plain HTTP/1.1.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::events::Events;
use crate::history::History;
use crate::rollout::machine::Command;
use crate::rollout::Operator;
use crate::snapshot::Snapshot;
use crate::telemetry::Telemetry;

/// The live dashboard: one self-contained page polling the JSON API (no CDN, no build).
const DASHBOARD: &str = include_str!("admin/dashboard.html");

/// Prometheus text format 0.0.4, as promtool and Prometheus expect it.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the admin endpoints read.
#[derive(Debug)]
pub struct Admin {
    pub snapshots: Arc<ArcSwap<Snapshot>>,
    pub events: Arc<Events>,
    pub telemetry: Arc<Telemetry>,
    /// False while starting and while draining (`/readyz` answers 503).
    pub ready: Arc<AtomicBool>,
    /// The last 15 minutes of every route (`/api/v1/history`).
    pub history: Arc<History>,
    /// `[fleet]`: the fleet client's status and command channel (SPEC §10).
    pub fleet: Option<Arc<crate::fleet::Handle>>,
}

type AdminResponse = Response<Full<Bytes>>;

/// Serves the admin API on `listener` until `shutdown`; a listener received on
/// `rebind` (a reload changed `[admin] listen`) replaces it.
pub async fn serve(
    mut listener: TcpListener,
    admin: Arc<Admin>,
    mut rebind: mpsc::UnboundedReceiver<TcpListener>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            Some(next) = rebind.recv() => {
                listener = next;
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let admin = Arc::clone(&admin);
        let service = service_fn(move |req| {
            let admin = Arc::clone(&admin);
            async move { Ok::<_, Infallible>(handle(&admin, req).await) }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(10));
        let conn = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), graceful.shutdown()).await;
}

async fn handle(admin: &Admin, req: Request<Incoming>) -> AdminResponse {
    let path = req.uri().path().to_owned();
    let path = path.as_str();
    let method = req.method();
    match path {
        "/metrics" => only_get(method, || {
            let now = Instant::now();
            for route in &admin.snapshots.load().routes {
                route.runtime.export_verdict(now);
            }
            with_type(
                StatusCode::OK,
                METRICS_CONTENT_TYPE,
                admin.telemetry.render(),
            )
        }),
        "/healthz" => only_get(method, || text(StatusCode::OK, "ok\n")),
        "/readyz" => only_get(method, || {
            if admin.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready (starting or draining)\n",
                )
            }
        }),
        "/api/v1/routes" => only_get(method, || {
            let snapshot = admin.snapshots.load();
            let now = Instant::now();
            let routes: Vec<_> = snapshot
                .routes
                .iter()
                .map(|r| with_fleet(admin, &r.name, r.runtime.status(now)))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({ "generation": snapshot.generation, "routes": routes }),
            )
        }),
        "/api/v1/history" => only_get(method, || {
            json_response(StatusCode::OK, &admin.history.view())
        }),
        "/api/v1/events" => only_get(method, || {
            json_response(StatusCode::OK, &json!({ "events": admin.events.list() }))
        }),
        "/" => only_get(method, || {
            with_type(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD)
        }),
        _ => match path.strip_prefix("/api/v1/routes/") {
            Some(rest) => route_command(admin, req, rest).await,
            None => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
        },
    }
}

/// Largest command body (`{"reason": "…"}`) read.
const MAX_COMMAND_BODY: usize = 4096;

/// The optional body of a command.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    /// Why, in the operator's words: the event's reason and the route's status.
    reason: Option<String>,
}

/// `POST /api/v1/routes/{name}/{action}`, with an optional JSON body
/// `{"reason": "…"}`.
async fn route_command(admin: &Admin, req: Request<Incoming>, rest: &str) -> AdminResponse {
    let Some((name, action)) = rest.split_once('/') else {
        return error(
            StatusCode::NOT_FOUND,
            "expected /api/v1/routes/{name}/{action}",
        );
    };
    let Some(command) = Command::parse(action) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown action: use rollback, resume, promote or pause",
        );
    };
    if req.method() != Method::POST {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let snapshot = admin.snapshots.load_full();
    let actor = match authorise(&snapshot, &req) {
        Ok(actor) => actor,
        Err(refusal) => return *refusal,
    };
    if snapshot.route(name).is_none() {
        return error(StatusCode::NOT_FOUND, &format!("no route named {name:?}"));
    }
    let body = match read_command_body(req).await {
        Ok(body) => body,
        Err(refusal) => return *refusal,
    };
    let operator = Operator {
        name: actor,
        reason: body.reason.filter(|r| !r.trim().is_empty()),
        ..Operator::default()
    };
    if let Some(fleet) = &admin.fleet {
        return fleet_command(admin, fleet, name, command, operator).await;
    }
    // The route as it is now (a reload may have swapped the snapshot meanwhile).
    let snapshot = admin.snapshots.load();
    let Some(route) = snapshot.route(name) else {
        return error(StatusCode::NOT_FOUND, &format!("no route named {name:?}"));
    };
    match route.runtime.command_by(command, &operator, Instant::now()) {
        Ok(status) => json_response(StatusCode::OK, &status),
        Err(conflict) => error(StatusCode::CONFLICT, &conflict.to_string()),
    }
}

/// `[fleet]`: a command goes to the fleet record (compare-and-swap in etcd), then is
/// applied here; the other instances apply it from their watch. etcd out of reach is
/// a 503 (the instance judges locally meanwhile); a lost race or a fleet already in
/// the target state is a 409.
async fn fleet_command(
    admin: &Admin,
    fleet: &crate::fleet::Handle,
    name: &str,
    command: Command,
    operator: Operator,
) -> AdminResponse {
    use crate::fleet::CommandError;
    let connected = admin
        .snapshots
        .load()
        .route(name)
        .is_some_and(|route| route.runtime.fleet_judges());
    if !connected {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &CommandError::Unavailable.to_string(),
        );
    }
    let written = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        fleet.command(name, command, operator.clone()),
    )
    .await
    .unwrap_or(Err(CommandError::Unavailable));
    let record = match written {
        Ok(record) => record,
        Err(err @ CommandError::Unavailable) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, &err.to_string())
        }
        Err(err @ CommandError::Conflict(_)) => {
            return error(StatusCode::CONFLICT, &err.to_string())
        }
        Err(err @ CommandError::NoRoute(_)) => {
            return error(StatusCode::NOT_FOUND, &err.to_string())
        }
    };
    let snapshot = admin.snapshots.load();
    let Some(route) = snapshot.route(name) else {
        return error(StatusCode::NOT_FOUND, &format!("no route named {name:?}"));
    };
    let operator = Operator {
        fleet: true,
        details: record.event_details(),
        ..operator
    };
    match route.runtime.fleet_apply(
        Some(record.state.command()),
        record.epoch,
        &operator,
        Instant::now(),
    ) {
        Ok(status) => json_response(StatusCode::OK, &with_fleet(admin, name, status)),
        Err(conflict) => error(StatusCode::CONFLICT, &conflict.to_string()),
    }
}

/// A route's status with its `fleet` fields (SPEC §10) when `[fleet]` is set.
fn with_fleet(admin: &Admin, name: &str, status: crate::rollout::RouteStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    if let (Some(fleet), Some(object)) = (&admin.fleet, value.as_object_mut()) {
        let fields = fleet
            .status(name)
            .unwrap_or_else(|| crate::fleet::RouteFleetStatus {
                name: fleet.name.clone(),
                ..Default::default()
            });
        object.insert(
            "fleet".into(),
            serde_json::to_value(fields).unwrap_or_default(),
        );
    }
    value
}

/// Reads a command's optional JSON body, bounded; a malformed one is a 400.
async fn read_command_body(req: Request<Incoming>) -> Result<CommandBody, Box<AdminResponse>> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_COMMAND_BODY);
    let collected = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        http_body_util::BodyExt::collect(limited),
    )
    .await;
    let bytes = match collected {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => {
            let message =
                format!("body too large or unreadable (at most {MAX_COMMAND_BODY} bytes)");
            return Err(Box::new(error(StatusCode::BAD_REQUEST, &message)));
        }
        Err(_elapsed) => {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "body not received within 5s",
            )))
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(CommandBody::default());
    }
    serde_json::from_slice(&bytes).map_err(|err| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("body must be JSON like {{\"reason\": \"…\"}}: {err}"),
        ))
    })
}

/// Bearer token check: the name of the token presented, or the refusal: 403 when
/// mutations are off, 401 without a token, 403 with a wrong one. Every token is
/// compared, each in constant time, so the timing says nothing about which is close.
fn authorise(snapshot: &Snapshot, req: &Request<Incoming>) -> Result<String, Box<AdminResponse>> {
    let tokens = snapshot
        .config
        .admin
        .as_ref()
        .map(|a| a.named_tokens())
        .unwrap_or_default();
    if tokens.is_empty() {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "mutating endpoints are disabled: set [admin] token_file to enable them",
        )));
    }
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let Some(presented) = presented else {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer TOKEN",
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Err(Box::new(response));
    };
    let presented = presented.trim().as_bytes();
    let mut matched = None;
    for (name, token) in tokens {
        if bool::from(presented.ct_eq(token.as_bytes())) && matched.is_none() {
            matched = Some(name.to_string());
        }
    }
    matched.ok_or_else(|| Box::new(error(StatusCode::FORBIDDEN, "invalid token")))
}

/// The token of `Authorization: Bearer TOKEN`. The scheme is case-insensitive and
/// separated from the token by one or more spaces (RFC 9110 §11.1, RFC 6750 §2.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn only_get(method: &Method, f: impl FnOnce() -> AdminResponse) -> AdminResponse {
    if method == Method::GET || method == Method::HEAD {
        f()
    } else {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        response
    }
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> AdminResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    with_type(status, "text/plain; charset=utf-8", body)
}

fn json_response(status: StatusCode, value: &impl serde::Serialize) -> AdminResponse {
    match serde_json::to_vec(value) {
        Ok(body) => with_type(status, "application/json", body),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> AdminResponse {
    let body = json!({ "error": message }).to_string();
    with_type(status, "application/json", body)
}
