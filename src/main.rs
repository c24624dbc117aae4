//! The `canary-proxy` binary: command line, logging, then `app` (or the admin client).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use canary_proxy::app::{shutdown_signal, App};
use canary_proxy::client::{self, Action, AdminClient, ClientError};
use canary_proxy::config::{Config, ConfigError, LoadOptions, Loaded};
use canary_proxy::proxy::server::Drain;

/// jemalloc: against mimalloc (whose Rust wrapper sends every allocation, even
/// align-1 buffers, down its aligned slow path) it measured 5 % less CPU per request
/// and 24 % less memory with 7 000 idle connections (README, Performance). Its options
/// are built in from `.cargo/config.toml` (`JEMALLOC_SYS_WITH_MALLOC_CONF`; the
/// environment's `_RJEM_MALLOC_CONF` overrides them at run time): memory freed goes
/// back to the system after about a second, by jemalloc's background thread, rather
/// than staying dirty for 10 s and going back only when something allocates again.
/// That is mostly the buffers of parked idle connections (`proxy::deadline`).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `run`'s exit code when the drain timed out and connections were cut.
const EXIT_DRAIN_CUT: u8 = 3;

/// Shown under `--help`.
const EXIT_CODES: &str = "\
Exit codes:
  run      0 stopped after a clean drain
           1 invalid config, unusable [state] dir, or a listen error
           3 drain_timeout elapsed and open connections were cut
  check    0 valid (warnings are printed, still 0); 1 invalid, or [state] dir unusable
  status, rollback, resume, promote, pause
           0 done
           1 the API refused; its message is printed (409: not allowed in the route's
             state, 403: wrong token, 404: no such route)
           2 usage or config error (invalid config, no [admin], unreadable token)
           3 the proxy is unreachable (connection refused or no answer within 5 s)
  any      2 bad arguments";

/// Shown under `--help` of the admin client commands.
const CLIENT_EXIT_CODES: &str = "\
Reads [admin] listen (0.0.0.0 / [::] mean loopback) and token_file from the config.

Exit codes:
  0  done
  1  the API refused; its message is printed (409: not allowed in the route's state,
     403: wrong token, 404: no such route)
  2  usage or config error (invalid config, no [admin], unreadable token)
  3  the proxy is unreachable (connection refused or no answer within 5 s)";

/// A reverse proxy that splits traffic between a stable and a canary upstream and
/// rolls the canary back by itself.
#[derive(Debug, Parser)]
#[command(name = "canary-proxy", version, about, after_help = EXIT_CODES)]
struct Cli {
    /// Config file (TOML). `canary-proxy -c FILE` alone means `run`.
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log line format on stderr. The level comes from RUST_LOG (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve until SIGTERM/SIGINT, then drain (exit 3 if the drain had to cut
    /// connections).
    Run,
    /// Validate a config file, probe its [state] dir, print a summary of its routes
    /// and warnings.
    Check {
        /// Validate away from the config's host: the files it names (token,
        /// certificates, keys, CAs, webhook secret) are listed, not read, and the
        /// [state] dir is not probed.
        #[arg(long)]
        offline: bool,
    },
    /// Self-contained demo: backends, proxy, load; the canary fails and is rolled back.
    /// Brings its own config (no -c).
    Demo {
        /// Compress every phase (about 3 s in all).
        #[arg(long)]
        short: bool,
        /// Keep everything running, load included, after the summary (explore the
        /// dashboard); Ctrl-C stops it.
        #[arg(long)]
        keep_running: bool,
    },
    /// Show each route's state, weights, verdict and canary version (admin API).
    #[command(after_help = CLIENT_EXIT_CODES)]
    Status {
        /// Only this route.
        route: Option<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Roll the route's canary back to weight 0 now (admin API).
    #[command(after_help = CLIENT_EXIT_CODES)]
    Rollback(CommandArgs),
    /// Re-arm a rolled-back canary, or continue a paused one (admin API).
    #[command(after_help = CLIENT_EXIT_CODES)]
    Resume(CommandArgs),
    /// Send the route's canary to 100 % (admin API).
    #[command(after_help = CLIENT_EXIT_CODES)]
    Promote(CommandArgs),
    /// Hold the route's current weight: rollout steps stop (admin API).
    #[command(after_help = CLIENT_EXIT_CODES)]
    Pause(CommandArgs),
}

/// The arguments of an operator's command.
#[derive(Debug, Args)]
struct CommandArgs {
    /// The route's name.
    route: String,
    /// Why, in your words: recorded in the event and the route's status.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// With a token_file of `NAME:TOKEN` lines, the token to present (default: the
    /// first).
    #[arg(long, value_name = "NAME")]
    token_name: Option<String>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    // The demo prints its own timeline, the client its answer; logs would only
    // interleave with them.
    let default_level = match command {
        Command::Run | Command::Check { .. } => "info",
        _ => "warn",
    };
    init_tracing(cli.log_format, default_level);
    if let Command::Demo {
        short,
        keep_running,
    } = command
    {
        if let Some(path) = cli.config {
            eprintln!(
                "error: `demo` brings its own config (in-process backends on free ports); -c {} is for run, check and the admin client",
                path.display()
            );
            return ExitCode::from(client::EXIT_USAGE);
        }
        return demo(short, keep_running);
    }
    let Some(path) = cli.config else {
        eprintln!(
            "error: a config file is required: canary-proxy {} -c FILE (see --help)",
            name(&command)
        );
        return ExitCode::from(client::EXIT_USAGE);
    };
    match command {
        Command::Check { offline } => check(&path, offline),
        Command::Run | Command::Demo { .. } => run(&path),
        Command::Status { route, json } => client_command(&path, |admin| async move {
            let body = admin.routes().await?;
            if json && route.is_none() {
                return Ok(String::from_utf8_lossy(&body).trim_end().to_owned() + "\n");
            }
            let routes = client::select_routes(&body, route.as_deref())?;
            if json {
                let route = routes.into_iter().next().unwrap_or_default();
                return Ok(format!("{route}\n"));
            }
            Ok(client::status_table(&routes))
        }),
        Command::Rollback(args) => mutate(&path, Action::Rollback, args),
        Command::Resume(args) => mutate(&path, Action::Resume, args),
        Command::Promote(args) => mutate(&path, Action::Promote, args),
        Command::Pause(args) => mutate(&path, Action::Pause, args),
    }
}

/// The subcommand's name, for messages.
fn name(command: &Command) -> &'static str {
    match command {
        Command::Run => "run",
        Command::Check { .. } => "check",
        Command::Demo { .. } => "demo",
        Command::Status { .. } => "status",
        Command::Rollback(_) => "rollback",
        Command::Resume(_) => "resume",
        Command::Promote(_) => "promote",
        Command::Pause(_) => "pause",
    }
}

/// The multi-threaded runtime (one worker per available core).
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    runtime_with(workers)
}

/// The multi-threaded runtime with `workers` worker threads.
fn runtime_with(workers: usize) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .map_err(|err| {
            eprintln!("error: cannot start the runtime: {err}");
            ExitCode::from(1)
        })
}

fn demo(short: bool, keep_running: bool) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let options = canary_proxy::demo::DemoOptions {
        short,
        keep_running,
    };
    match runtime.block_on(canary_proxy::demo::run(options)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: demo failed: {err}");
            ExitCode::from(1)
        }
    }
}

/// Level from `RUST_LOG`; an unset or empty one means `default_level`. One that does
/// not parse, or names a target with a `-` (`canary-proxy=debug`: targets are module
/// paths, `canary_proxy`, so it would match nothing and silence every log), is warned
/// about on stderr and replaced by `default_level`.
fn init_tracing(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            match (EnvFilter::builder().parse(&value), dashed_target(&value)) {
                (Ok(_), Some(target)) => {
                    eprintln!(
                    "warning: RUST_LOG={value:?}: target `{target}` matches nothing (log targets are module paths: `{}`); logging at `{default_level}`",
                    target.replace('-', "_")
                );
                    EnvFilter::new(default_level)
                }
                (Ok(filter), None) => filter,
                (Err(err), _) => {
                    eprintln!(
                    "warning: RUST_LOG={value:?} is not a valid filter ({err}); logging at `{default_level}` (e.g. RUST_LOG=info,canary_proxy=debug)"
                );
                    EnvFilter::new(default_level)
                }
            }
        }
        Ok(_) => EnvFilter::new(default_level),
        Err(std::env::VarError::NotPresent) => EnvFilter::new(default_level),
        Err(std::env::VarError::NotUnicode(_)) => {
            eprintln!("warning: RUST_LOG is not valid UTF-8; logging at `{default_level}`");
            EnvFilter::new(default_level)
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    canary_proxy::events::set_json_logs(matches!(format, LogFormat::Json));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The first directive target of a `RUST_LOG` value that holds a `-` (module paths
/// never do).
fn dashed_target(value: &str) -> Option<&str> {
    value
        .split(',')
        .map(|directive| directive.split(['[', '=']).next().unwrap_or("").trim())
        .find(|target| target.contains('-'))
}

fn load(path: &Path, options: LoadOptions) -> Result<Loaded, ExitCode> {
    Config::load_with(path, options).map_err(|err| {
        match &err {
            ConfigError::Read { .. } => eprintln!("error: {err}"),
            ConfigError::Invalid { errors, .. } => {
                for invalid in errors {
                    eprintln!("error: {invalid}");
                }
                eprintln!("{err}");
            }
        }
        ExitCode::from(1)
    })
}

fn check(path: &Path, offline: bool) -> ExitCode {
    let Loaded {
        config,
        not_checked,
    } = match load(path, LoadOptions { offline }) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    if let (Some(state), false) = (&config.state, offline) {
        if let Err(err) = canary_proxy::rollout::store::probe(&state.dir) {
            eprintln!("error: {}: state.dir: {err}", path.display());
            return ExitCode::from(1);
        }
    }
    println!(
        "{}: ok{}, listen {}, {} route(s)",
        path.display(),
        if offline { " (offline)" } else { "" },
        config.server.listen,
        config.routes.len()
    );
    for route in &config.routes {
        println!(
            "  route {:<16} host={:<24} prefix={:<12} stable={} canary={}{} weight={}",
            route.name,
            route.host.as_deref().unwrap_or("*"),
            route.path_prefix,
            route.stable.endpoints.len(),
            route.canary.endpoints.len(),
            route
                .canary_version
                .as_deref()
                .map(|v| format!(" ({v})"))
                .unwrap_or_default(),
            route.canary_weight,
        );
    }
    for file in &not_checked {
        println!(
            "  not checked offline: {} {}",
            file.key,
            file.path.display()
        );
    }
    if let (Some(state), true) = (&config.state, offline) {
        println!(
            "  not checked offline: state.dir {} (created and probed by `check` without --offline, and at start)",
            state.dir.display()
        );
    }
    ExitCode::SUCCESS
}

fn run(path: &Path) -> ExitCode {
    let config = match load(path, LoadOptions::default()) {
        Ok(loaded) => loaded.config,
        Err(code) => return code,
    };
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let (workers, source) = canary_proxy::app::workers(&config.server);
    tracing::info!(workers, source, "runtime worker threads");
    let runtime = match runtime_with(workers) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let app = match App::bind(config).await {
            Ok(app) => app.reload_from(path.to_path_buf()),
            Err(err) => {
                tracing::error!(error = %err, "cannot start");
                return ExitCode::from(1);
            }
        };
        if let Ok(addr) = app.local_addr() {
            tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "canary-proxy listening");
        }
        if let Some(addr) = app.admin_addr() {
            tracing::info!(%addr, "admin listening");
        }
        match app.serve_drained(shutdown_signal()).await {
            Drain::Clean => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Drain::Cut { connections } => {
                tracing::warn!(
                    connections,
                    exit_code = EXIT_DRAIN_CUT,
                    "stopped; the drain cut open connections"
                );
                ExitCode::from(EXIT_DRAIN_CUT)
            }
        }
    })
}

/// A status or mutation: builds the client from the config, runs `exchange` on a
/// small runtime, prints its output (or the error) and maps the result to the exit
/// code.
fn client_command<F, Fut>(path: &Path, exchange: F) -> ExitCode
where
    F: FnOnce(AdminClient) -> Fut,
    Fut: std::future::Future<Output = Result<String, ClientError>>,
{
    let result = AdminClient::from_config_file(path).and_then(|admin| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| ClientError::Usage(format!("cannot start the runtime: {err}")))?;
        runtime.block_on(exchange(admin))
    });
    match result {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            for line in err.to_string().lines() {
                eprintln!("error: {line}");
            }
            ExitCode::from(err.exit_code())
        }
    }
}

fn mutate(path: &Path, action: Action, args: CommandArgs) -> ExitCode {
    client_command(path, |admin| async move {
        let body = admin
            .command(
                &args.route,
                action,
                args.reason.as_deref(),
                args.token_name.as_deref(),
            )
            .await?;
        if args.json {
            return Ok(String::from_utf8_lossy(&body).trim_end().to_owned() + "\n");
        }
        // The answer is the route's new status.
        let route: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(client::status_table(&[route]))
    })
}
