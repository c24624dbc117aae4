//! TOML text → `Config`, reporting every problem with file:line:column and key.
//!
//! Two stages. `toml` deserializes the text into the `raw` mirror; a syntax error, a
//! wrong type or an unknown key stops it, and becomes a single `Invalid` (`syntax`
//! derives the dotted key from the error's span). The mirror is then checked field by
//! field: each check records its own `Invalid` and the walk goes on, so an operator
//! sees every mistake in one `check` run instead of fixing them one at a time.
//!
//! Defaults live here, as consts, and are documented in `config/example.toml`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawAdmin, RawConfig, RawLog, RawRoute, RawServer, RawServerTls, RawState};
use super::{
    AccessLogTarget, AdminConfig, Config, Invalid, LoadOptions, Loaded, LogConfig, NotChecked,
    RouteConfig, ServerConfig, ServerTls, StateConfig,
};

mod fields;
mod fleet;
mod notify;
mod offline;
mod route;
mod shield;
mod syntax;
#[cfg(test)]
mod tests;

/// `[server] listen`.
const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// `[admin] listen`, when `[admin]` is present without it.
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Under 1 KiB ordinary requests (a few cookies) get 431; over 1 MiB every connection
/// may buffer that much before the proxy can reject it.
const MAX_HEADER_BYTES_RANGE: std::ops::RangeInclusive<i64> = 1024..=1024 * 1024;

/// Collects every `Invalid` found while walking one file.
#[derive(Debug)]
struct Ctx<'a> {
    src: &'a str,
    /// The config path as given, for messages.
    file: String,
    /// The config file's directory: relative paths resolve against it.
    base: PathBuf,
    errors: Vec<Invalid>,
    /// `check --offline`: the files the config names are not read (`offline`).
    offline: bool,
    /// The files an offline load did not read.
    not_checked: Vec<NotChecked>,
}

/// Parses and validates a config file's text.
///
/// `path` is where `src` was read from: it names the file in every `Invalid` and its
/// directory anchors relative paths (`token_file`, `state.dir`). The admin token file
/// is read here, so a missing token is reported with the rest of the config.
pub fn parse_str(src: &str, path: &Path) -> Result<Config, Vec<Invalid>> {
    parse_str_with(src, path, LoadOptions::default()).map(|loaded| loaded.config)
}

/// `parse_str` with options: with `offline`, the files the config names are listed in
/// `Loaded::not_checked` instead of read (their paths are still resolved and must not
/// be empty).
pub fn parse_str_with(
    src: &str,
    path: &Path,
    options: LoadOptions,
) -> Result<Loaded, Vec<Invalid>> {
    let file = path.display().to_string();
    let raw: RawConfig = match toml::from_str(src) {
        Ok(raw) => raw,
        Err(err) => return Err(vec![syntax::invalid(src, &file, &err)]),
    };
    let mut cx = Ctx {
        src,
        file,
        base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        errors: Vec::new(),
        offline: options.offline,
        not_checked: Vec::new(),
    };

    let server = cx.server(raw.server.as_ref());
    let server_listen = server.as_ref().map(|server| server.listen);
    let admin = raw
        .admin
        .as_ref()
        .map(|admin| cx.admin(admin, server_listen));
    let state = raw.state.as_ref().map(|state| cx.state(state));
    let notify = raw.notify.as_ref().map(|notify| cx.notify(notify));
    let log = match &raw.log {
        Some(log) => cx.log(log),
        None => Some(LogConfig::default()),
    };
    let routes = cx.routes(raw.route.as_ref());
    let fleet = raw.fleet.as_ref().map(|fleet| cx.fleet(fleet));

    if !cx.errors.is_empty() {
        return Err(cx.errors);
    }
    // No error was recorded, so every section is `Some`; the `else` is unreachable in
    // practice but keeps this free of panics.
    let (
        Some(server),
        Some(admin),
        Some(state),
        Some(notify),
        Some(log),
        Some(routes),
        Some(fleet),
    ) = (
        server,
        section(admin),
        section(state),
        section(notify),
        log,
        routes,
        section(fleet),
    )
    else {
        return Err(vec![cx.invalid(
            0..0,
            "",
            "internal error: invalid value without an error",
        )]);
    };
    let config = Config {
        source: path.to_path_buf(),
        server,
        admin,
        state,
        notify,
        log,
        routes,
        fleet,
    };
    Ok(Loaded {
        config,
        not_checked: cx.not_checked,
    })
}

// === impl Ctx ===

impl Ctx<'_> {
    fn invalid(&self, span: Range<usize>, key: &str, message: &str) -> Invalid {
        let (line, column) = locate(self.src, span.start);
        Invalid {
            file: self.file.clone(),
            line,
            column,
            key: key.to_owned(),
            message: message.to_owned(),
        }
    }

    /// Records one problem with the value at `span`.
    fn error(&mut self, span: Range<usize>, key: &str, message: impl AsRef<str>) {
        let invalid = self.invalid(span, key, message.as_ref());
        self.errors.push(invalid);
    }

    /// Records a required key missing from the table whose header is at `span`.
    fn missing(&mut self, span: Range<usize>, key: &str) {
        let name = key.rsplit('.').next().unwrap_or(key);
        self.error(span, key, format!("missing required key `{name}`"));
    }

    fn server(&mut self, raw: Option<&Spanned<RawServer>>) -> Option<ServerConfig> {
        let Some(raw) = raw.map(Spanned::get_ref) else {
            return default_server();
        };
        let tls = match &raw.tls {
            Some(tls) => self.server_tls(tls).map(Some),
            None => Some(None),
        };
        let listen = match &raw.listen {
            Some(listen) => self.socket_addr(listen, "server.listen"),
            None => DEFAULT_LISTEN.parse().ok(),
        };
        let connect_timeout = self.duration_or(
            raw.connect_timeout.as_ref(),
            "server.connect_timeout",
            DEFAULT_CONNECT_TIMEOUT,
        );
        let request_timeout = self.duration_or(
            raw.request_timeout.as_ref(),
            "server.request_timeout",
            DEFAULT_REQUEST_TIMEOUT,
        );
        let header_read_timeout = self.duration_or(
            raw.header_read_timeout.as_ref(),
            "server.header_read_timeout",
            DEFAULT_HEADER_READ_TIMEOUT,
        );
        let drain_timeout = match &raw.drain_timeout {
            Some(value) => self.duration_allow_zero(value, "server.drain_timeout"),
            None => Some(DEFAULT_DRAIN_TIMEOUT),
        };
        let max_header_bytes = match &raw.max_header_bytes {
            Some(value) if MAX_HEADER_BYTES_RANGE.contains(value.get_ref()) => {
                usize::try_from(*value.get_ref()).ok()
            }
            Some(value) => {
                self.error(
                    value.span(),
                    "server.max_header_bytes",
                    format!(
                        "must be between {} and {} (bytes), got {}",
                        MAX_HEADER_BYTES_RANGE.start(),
                        MAX_HEADER_BYTES_RANGE.end(),
                        value.get_ref()
                    ),
                );
                None
            }
            None => Some(DEFAULT_MAX_HEADER_BYTES),
        };
        let workers = match &raw.workers {
            Some(value) => {
                let n = usize::try_from(*value.get_ref())
                    .ok()
                    .filter(|n| (1..=MAX_WORKERS).contains(n));
                if n.is_none() {
                    let message = format!(
                        "must be between 1 and {MAX_WORKERS} worker threads, got {} (leave it out for one per available CPU)",
                        value.get_ref()
                    );
                    self.error(value.span(), "server.workers", message);
                }
                n.map(Some)
            }
            None => Some(None),
        };
        Some(ServerConfig {
            listen: listen?,
            connect_timeout: connect_timeout?,
            request_timeout: request_timeout?,
            header_read_timeout: header_read_timeout?,
            max_header_bytes: max_header_bytes?,
            drain_timeout: drain_timeout?,
            tls: tls?,
            workers: workers?,
        })
    }

    /// `[server] tls`: cert and key must load and match; `client_ca` must load.
    fn server_tls(&mut self, raw: &Spanned<RawServerTls>) -> Option<ServerTls> {
        let tls = raw.get_ref();
        let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
            if tls.cert.is_none() {
                self.missing(raw.span(), "server.tls.cert");
            }
            if tls.key.is_none() {
                self.missing(raw.span(), "server.tls.key");
            }
            return None;
        };
        let cert_path = self.path(cert, "server.tls.cert")?;
        let key_path = self.path(key, "server.tls.key")?;
        let client_ca = match &tls.client_ca {
            Some(ca) => Some((self.path(ca, "server.tls.client_ca")?, ca.span())),
            None => None,
        };
        if self.offline {
            self.skip_offline("server.tls.cert", &cert_path);
            self.skip_offline("server.tls.key", &key_path);
            if let Some((ca, _)) = &client_ca {
                self.skip_offline("server.tls.client_ca", ca);
            }
            let config = match offline::placeholder_server_config() {
                Ok(config) => config,
                Err(err) => {
                    self.error(raw.span(), "server.tls", err.to_string());
                    return None;
                }
            };
            return Some(ServerTls {
                cert: cert_path,
                key: key_path,
                client_ca: client_ca.map(|(path, _)| path),
                config: std::sync::Arc::new(config),
            });
        }
        // Name the key whose file is at fault.
        if let Err(err) = crate::tls::load_certs(&cert_path) {
            self.error(cert.span(), "server.tls.cert", err.to_string());
            return None;
        }
        if let Err(err) = crate::tls::load_key(&key_path) {
            self.error(key.span(), "server.tls.key", err.to_string());
            return None;
        }
        if let Some((ca, span)) = &client_ca {
            if let Err(err) = crate::tls::load_certs(ca) {
                self.error(span.clone(), "server.tls.client_ca", err.to_string());
                return None;
            }
        }
        let ca = client_ca.as_ref().map(|(path, _)| path.as_path());
        match crate::tls::server_config(&cert_path, &key_path, ca) {
            Ok(config) => Some(ServerTls {
                cert: cert_path,
                key: key_path,
                client_ca: client_ca.map(|(path, _)| path),
                config: std::sync::Arc::new(config),
            }),
            Err(err) => {
                self.error(key.span(), "server.tls.key", err.to_string());
                None
            }
        }
    }

    /// `server_listen`: the data listener, which the admin listener must not reuse.
    fn admin(
        &mut self,
        raw: &Spanned<RawAdmin>,
        server_listen: Option<SocketAddr>,
    ) -> Option<AdminConfig> {
        let admin = raw.get_ref();
        let listen = match &admin.listen {
            Some(listen) => self.socket_addr(listen, "admin.listen"),
            None => DEFAULT_ADMIN_LISTEN.parse().ok(),
        };
        // Same port on the same or a wildcard address: the second bind would fail.
        let clash = listen.zip(server_listen).filter(|(admin, server)| {
            admin.port() != 0
                && admin.port() == server.port()
                && (admin.ip() == server.ip()
                    || admin.ip().is_unspecified()
                    || server.ip().is_unspecified())
        });
        if let Some((addr, server)) = clash {
            let span = admin.listen.as_ref().map_or(raw.span(), Spanned::span);
            let message = format!("{addr} clashes with server.listen {server}: use another port");
            self.error(span, "admin.listen", message);
        }
        let (token, token_file) = match &admin.token_file {
            Some(file) => {
                let (token, path) = self.token(file)?;
                (token, Some(path))
            }
            None => (None, None),
        };
        Some(AdminConfig {
            listen: listen?,
            token,
            token_file,
        })
    }

    /// Reads the admin token: relative to the config's directory, trimmed, non-empty.
    /// Offline: not read (`None`).
    fn token(&mut self, file: &Spanned<String>) -> Option<(Option<String>, PathBuf)> {
        let path = self.path(file, "admin.token_file")?;
        if self.skip_offline("admin.token_file", &path) {
            return Some((None, path));
        }
        match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().is_empty() => {
                let message = format!("token file is empty: {}", path.display());
                self.error(file.span(), "admin.token_file", message);
                None
            }
            Ok(text) => Some((Some(text.trim().to_owned()), path)),
            Err(err) => {
                let message = format!("cannot read token file {}: {err}", path.display());
                self.error(file.span(), "admin.token_file", message);
                None
            }
        }
    }

    fn state(&mut self, raw: &Spanned<RawState>) -> Option<StateConfig> {
        let Some(dir) = &raw.get_ref().dir else {
            self.missing(raw.span(), "state.dir");
            return None;
        };
        Some(StateConfig {
            dir: self.path(dir, "state.dir")?,
        })
    }

    /// `[log]`: `access` is `"stderr"` or a path (resolved against the config's
    /// directory; the file is opened when the proxy starts or reloads, not here).
    fn log(&mut self, raw: &Spanned<RawLog>) -> Option<LogConfig> {
        let log = raw.get_ref();
        let access = match &log.access {
            None => Some(None),
            Some(value) => match value.get_ref().trim() {
                "stderr" => Some(Some(AccessLogTarget::Stderr)),
                "stdout" | "-" => {
                    let message = format!(
                        "`{}` is not a destination: use \"stderr\" or a file path (\"/dev/stdout\" for standard output)",
                        value.get_ref()
                    );
                    self.error(value.span(), "log.access", message);
                    None
                }
                _ => self
                    .path(value, "log.access")
                    .map(|path| Some(AccessLogTarget::File(path))),
            },
        };
        Some(LogConfig {
            access: access?,
            side_header: log.side_header.as_ref().is_some_and(|v| *v.get_ref()),
        })
    }

    /// Every `[[route]]`; at least one, names unique.
    fn routes(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<RawRoute>>>>,
    ) -> Option<Vec<RouteConfig>> {
        let Some(list) = raw.filter(|list| !list.get_ref().is_empty()) else {
            let span = raw.map_or(0..0, Spanned::span);
            self.error(
                span,
                "route",
                "at least one [[route]] is required: nothing would be proxied",
            );
            return None;
        };
        // name -> line of its first definition
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut routes = Vec::with_capacity(list.get_ref().len());
        let mut ok = true;
        for (i, route) in list.get_ref().iter().enumerate() {
            if let Some(name) = &route.get_ref().name {
                let line = locate(self.src, name.span().start).0;
                if let Some(first) = seen.get(name.get_ref().as_str()) {
                    let message = format!(
                        "duplicate route name `{}` (first defined at line {first})",
                        name.get_ref()
                    );
                    self.error(name.span(), &format!("route[{i}].name"), message);
                    ok = false;
                } else {
                    seen.insert(name.get_ref(), line);
                }
            }
            match self.route(i, route) {
                Some(checked) => {
                    self.unreachable_route(i, route, &checked, &routes);
                    routes.push(checked);
                }
                None => ok = false,
            }
        }
        ok.then_some(routes)
    }

    /// A route with the same host and path prefix as an earlier one would never match.
    fn unreachable_route(
        &mut self,
        i: usize,
        raw: &Spanned<RawRoute>,
        route: &RouteConfig,
        earlier: &[RouteConfig],
    ) {
        let Some(first) = earlier
            .iter()
            .find(|e| e.host == route.host && e.path_prefix == route.path_prefix)
        else {
            return;
        };
        let raw = raw.get_ref();
        let span = raw
            .path_prefix
            .as_ref()
            .or(raw.host.as_ref())
            .or(raw.name.as_ref())
            .map_or(0..0, Spanned::span);
        let message = format!(
            "route `{}` has the same host and path_prefix as route `{}`, so it would never match",
            route.name, first.name
        );
        self.error(span, &format!("route[{i}].path_prefix"), message);
    }

    /// Resolves a path value against the config file's directory.
    fn path(&mut self, value: &Spanned<String>, key: &str) -> Option<PathBuf> {
        let raw = value.get_ref();
        if raw.trim().is_empty() {
            self.error(value.span(), key, "must not be empty");
            return None;
        }
        let path = Path::new(raw);
        Some(if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        })
    }

    fn socket_addr(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match value.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                let message = format!(
                    "`{}` is not a socket address: expected ip:port, e.g. 0.0.0.0:8080 or [::]:8080 (host names are not resolved)",
                    value.get_ref()
                );
                self.error(value.span(), key, message);
                None
            }
        }
    }
}

/// An optional section's result: absent is fine (`Some(None)`), present but invalid
/// is not (`None`).
fn section<T>(checked: Option<Option<T>>) -> Option<Option<T>> {
    checked.map_or(Some(None), |value| value.map(Some))
}

/// More worker threads than this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;

fn default_server() -> Option<ServerConfig> {
    Some(ServerConfig {
        listen: DEFAULT_LISTEN.parse().ok()?,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        request_timeout: DEFAULT_REQUEST_TIMEOUT,
        header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        tls: None,
        workers: None,
    })
}

/// 1-based line and column (in characters) of byte `offset` in `src`.
fn locate(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
