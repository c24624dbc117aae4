//! The admin API's command-line client (SPEC §12): `canary-proxy status [ROUTE]` and
//! `canary-proxy rollback|resume|promote|pause ROUTE`, run on the proxy's host against
//! the address and token its config names.
//!
//! The config is loaded offline (`LoadOptions::offline`): the client needs `[admin]
//! listen` and, for a command, the token file, not the proxy's TLS keys, which an
//! operator's account often may not read. A wildcard listen address (`0.0.0.0`, `[::]`)
//! is reached on loopback. One HTTP/1.1 exchange per run, bounded by [`TIMEOUT`].
//!
//! Failures map to exit codes scripts can branch on ([`ClientError::exit_code`]):
//! 1 the API refused (its message is printed), 2 a usage or config error, 3 the proxy
//! did not answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::config::{AdminConfig, Config, ConfigError, LoadOptions};

/// The whole exchange (connect, request, response body) must end within this.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Exit code: the API answered with an error (4xx/5xx), e.g. 409 for a command the
/// route's state does not allow, 403 for a wrong token, or no such route.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: bad arguments, or a config that cannot be used (invalid, no `[admin]`,
/// no readable token for a command).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: nothing answered at the admin address (refused, reset, or no answer
/// within [`TIMEOUT`]).
pub const EXIT_UNREACHABLE: u8 = 3;

/// An operator's command (`POST /api/v1/routes/{name}/{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Rollback,
    Resume,
    Promote,
    Pause,
}

/// Why a client command failed; [`ClientError::exit_code`] is the process's exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Arguments or config (exit 2). The message may span lines.
    #[error("{0}")]
    Usage(String),
    /// The API answered with an error status and this message (exit 1).
    #[error("{status}: {message}")]
    Refused { status: StatusCode, message: String },
    /// The proxy did not answer at `addr` (exit 3).
    #[error("cannot reach the admin API at {addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
}

/// Where a proxy's admin API is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: SocketAddr,
    /// `[admin] token_file`, read only for a command.
    token_file: Option<PathBuf>,
    /// The config file, for messages.
    source: PathBuf,
    timeout: Duration,
}

// === impl Action ===

impl Action {
    /// The path segment (`rollback`, `resume`, `promote`, `pause`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Rollback => "rollback",
            Action::Resume => "resume",
            Action::Promote => "promote",
            Action::Pause => "pause",
        }
    }
}

// === impl ClientError ===

impl ClientError {
    /// 1 refused, 2 usage/config, 3 unreachable.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused { .. } => EXIT_REFUSED,
            ClientError::Usage(_) => EXIT_USAGE,
            ClientError::Unreachable { .. } => EXIT_UNREACHABLE,
        }
    }
}

// === impl AdminClient ===

impl AdminClient {
    /// Reads the config at `path` (offline: the files it names need not be readable;
    /// only the token file is read, and only by `command`). Errors are `Usage`, with
    /// every config problem on its own line.
    pub fn from_config_file(path: &Path) -> Result<AdminClient, ClientError> {
        match Config::load_with(path, LoadOptions { offline: true }) {
            Ok(loaded) => AdminClient::new(&loaded.config),
            Err(err @ ConfigError::Read { .. }) => Err(ClientError::Usage(err.to_string())),
            Err(ConfigError::Invalid { path, errors }) => {
                let mut message: Vec<String> = errors.iter().map(ToString::to_string).collect();
                message.push(format!("{} error(s) in {}", errors.len(), path.display()));
                Err(ClientError::Usage(message.join("\n")))
            }
        }
    }

    /// The admin API of `config`; `Usage` when it has no `[admin]` or its port is 0.
    pub fn new(config: &Config) -> Result<AdminClient, ClientError> {
        let Some(admin) = &config.admin else {
            return Err(ClientError::Usage(format!(
                "{} has no [admin] section: that proxy has no admin API",
                config.source.display()
            )));
        };
        if admin.listen.port() == 0 {
            return Err(ClientError::Usage(format!(
                "{}: [admin] listen {} has port 0 (chosen at start): set a fixed port to use the client",
                config.source.display(),
                admin.listen
            )));
        }
        Ok(AdminClient {
            addr: connect_addr(admin.listen),
            token_file: admin.token_file.clone(),
            source: config.source.clone(),
            timeout: TIMEOUT,
        })
    }

    /// Where requests go.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET /api/v1/routes`: the body, as sent.
    pub async fn routes(&self) -> Result<Bytes, ClientError> {
        let req = Request::get("/api/v1/routes")
            .header(HOST, self.addr.to_string())
            .body(Full::new(Bytes::new()))
            .map_err(|err| ClientError::Usage(err.to_string()))?;
        self.send(req).await
    }

    /// `POST /api/v1/routes/{route}/{action}` with the bearer token (the `token_name`
    /// line of a `NAME:TOKEN` file, else its first token) and, when `reason` is given,
    /// the body `{"reason": "…"}`. Returns the route's new status, as sent.
    pub async fn command(
        &self,
        route: &str,
        action: Action,
        reason: Option<&str>,
        token_name: Option<&str>,
    ) -> Result<Bytes, ClientError> {
        let valid = !route.is_empty()
            && route
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(ClientError::Usage(format!(
                "`{route}` is not a route name (letters, digits, '_', '.' and '-')"
            )));
        }
        let token = self.token(token_name)?;
        let body = match reason {
            Some(reason) => Bytes::from(serde_json::json!({ "reason": reason }).to_string()),
            None => Bytes::new(),
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("/api/v1/routes/{route}/{}", action.as_str()))
            .header(HOST, self.addr.to_string())
            .header(AUTHORIZATION, format!("Bearer {token}"));
        if reason.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body))
            .map_err(|err| ClientError::Usage(format!("cannot build the request: {err}")))?;
        self.send(req).await
    }

    /// The token to present: read from `token_file` now (a token rotated since the
    /// proxy started is the one it reloaded).
    fn token(&self, name: Option<&str>) -> Result<String, ClientError> {
        let Some(path) = &self.token_file else {
            return Err(ClientError::Usage(format!(
                "{}: [admin] has no token_file, so that proxy's mutating endpoints are disabled",
                self.source.display()
            )));
        };
        let text = std::fs::read_to_string(path).map_err(|err| {
            ClientError::Usage(format!("cannot read token file {}: {err}", path.display()))
        })?;
        let admin = AdminConfig {
            listen: self.addr,
            token: Some(text.trim().to_owned()),
            token_file: Some(path.clone()),
        };
        let tokens = admin.named_tokens();
        let chosen = match name {
            Some(name) => tokens.iter().find(|(n, _)| *n == name),
            None => tokens.first(),
        };
        match (chosen, name) {
            (Some((_, token)), _) => Ok((*token).to_owned()),
            (None, Some(name)) => Err(ClientError::Usage(format!(
                "token file {} has no token named `{name}`",
                path.display()
            ))),
            (None, None) => Err(ClientError::Usage(format!(
                "token file {} holds no token",
                path.display()
            ))),
        }
    }

    /// One exchange on a fresh connection, bounded by `timeout`. 2xx: the body; any
    /// other status: `Refused` with the API's `error` message (or the body's text).
    async fn send(&self, req: Request<Full<Bytes>>) -> Result<Bytes, ClientError> {
        let addr = self.addr;
        let exchange = async move {
            let stream = TcpStream::connect(addr).await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
            let conn = tokio::spawn(conn);
            let response = sender
                .send_request(req)
                .await
                .map_err(std::io::Error::other)?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes();
            conn.abort();
            Ok::<_, std::io::Error>((status, body))
        };
        let (status, body) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => {
                return Err(ClientError::Unreachable {
                    addr,
                    reason: err.to_string(),
                })
            }
            Err(_) => {
                return Err(ClientError::Unreachable {
                    addr,
                    reason: format!("no answer within {}s", self.timeout.as_secs()),
                })
            }
        };
        if status.is_success() {
            return Ok(body);
        }
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
        Err(ClientError::Refused { status, message })
    }
}

/// The address to connect to for a listen address: a wildcard is reached on loopback
/// (`0.0.0.0` → `127.0.0.1`, `[::]` → `[::1]`).
pub fn connect_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The routes of a `GET /api/v1/routes` body (all, or the one named `route`); an
/// unknown name is `Refused` (404) and names the routes there are.
pub fn select_routes(body: &[u8], route: Option<&str>) -> Result<Vec<Value>, ClientError> {
    let parsed: Value = serde_json::from_slice(body).map_err(|err| ClientError::Refused {
        status: StatusCode::OK,
        message: format!("the admin API answered something that is not JSON: {err}"),
    })?;
    let routes = parsed
        .get("routes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(name) = route else {
        return Ok(routes);
    };
    let found: Vec<Value> = routes
        .iter()
        .filter(|r| r.get("name").and_then(Value::as_str) == Some(name))
        .cloned()
        .collect();
    if found.is_empty() {
        let names: Vec<&str> = routes
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str))
            .collect();
        return Err(ClientError::Refused {
            status: StatusCode::NOT_FOUND,
            message: format!("no route named {name:?} (routes: {})", names.join(", ")),
        });
    }
    Ok(found)
}

/// A table of route statuses (objects shaped like `/api/v1/routes`' entries): route,
/// state, configured and effective weight, verdict, canary version, and `reason` and
/// `since` of the last decision when the API carries them. Ends with a newline.
pub fn status_table(routes: &[Value]) -> String {
    let has = |key: &str| routes.iter().any(|r| r.get(key).is_some());
    let (reason, since) = (has("reason"), has("since"));
    let mut header = vec![
        "ROUTE",
        "STATE",
        "CONFIGURED",
        "EFFECTIVE",
        "VERDICT",
        "CANARY",
    ];
    if reason {
        header.push("REASON");
    }
    if since {
        header.push("SINCE");
    }
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for route in routes {
        let text = |value: Option<&Value>| match value {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Null) | None => "-".to_owned(),
            Some(Value::String(_)) => "-".to_owned(),
            Some(other) => other.to_string(),
        };
        let weight = |key: &str| {
            route
                .get(key)
                .and_then(Value::as_f64)
                .map_or("-".to_owned(), |w| format!("{w}%"))
        };
        let mut row = vec![
            text(route.get("name")),
            text(route.get("state")),
            weight("configured_weight"),
            weight("effective_weight"),
            text(route.get("verdict").and_then(|v| v.get("verdict"))),
            text(route.get("canary_version")),
        ];
        if reason {
            row.push(text(route.get("reason")));
        }
        if since {
            row.push(text(route.get("since")));
        }
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                let pad = widths[c] - cell.chars().count() + 2;
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_is_reached_on_loopback() {
        let cases = [
            ("0.0.0.0:9901", "127.0.0.1:9901"),
            ("[::]:9901", "[::1]:9901"),
            ("10.0.0.7:9901", "10.0.0.7:9901"),
            ("[::1]:1", "[::1]:1"),
        ];
        for (listen, expected) in cases {
            let addr = connect_addr(listen.parse().unwrap());
            assert_eq!(addr, expected.parse::<SocketAddr>().unwrap(), "{listen}");
        }
    }

    #[test]
    fn table_shows_reason_and_since_only_when_present() {
        let route = serde_json::json!({
            "name": "checkout", "state": "rolled_back", "configured_weight": 10.0,
            "effective_weight": 0.0, "canary_version": null,
            "verdict": {"verdict": "failing"}
        });
        let table = status_table(std::slice::from_ref(&route));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "ROUTE     STATE        CONFIGURED  EFFECTIVE  VERDICT  CANARY"
        );
        assert_eq!(
            lines[1],
            "checkout  rolled_back  10%         0%         failing  -"
        );

        let mut with = route;
        with["reason"] = "manual".into();
        with["since"] = Value::Null;
        let table = status_table(&[with]);
        assert!(
            table
                .lines()
                .next()
                .unwrap()
                .ends_with("CANARY  REASON  SINCE"),
            "{table}"
        );
        assert!(
            table.lines().nth(1).unwrap().ends_with("-       manual  -"),
            "{table}"
        );
    }

    #[test]
    fn unknown_route_names_the_known_ones() {
        let body = br#"{"generation":1,"routes":[{"name":"a"},{"name":"b"}]}"#;
        assert_eq!(select_routes(body, Some("b")).unwrap().len(), 1);
        let err = select_routes(body, Some("c")).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_REFUSED);
        assert!(err.to_string().contains("routes: a, b"), "{err}");
    }
}
