//! `token-manager`: the BrasilIntel token manager's command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use token_host::config::{Config, DatabaseUrl};
use token_host::endpoint::{EndpointConfig, TokenEndpoint};
use token_host::events::{self, EventStore};
use token_host::runner::{self, EXIT_CONFIG, EXIT_TOKEN_FAILED, Report};
use token_host::store::{Database, StoreError, blocking};
use token_host::{Runtime, Settings, TokenManager};

/// OAuth2 client-credentials token manager for the MMC Core API, running
/// as a sandboxed WASI component inside this wasmtime host.
///
/// Configuration comes from the environment, then from `.env` in the working
/// directory (the environment wins): MMC_API_BASE_URL, MMC_API_CLIENT_ID,
/// MMC_API_CLIENT_SECRET, MMC_API_TOKEN_PATH (default
/// /coreapi/access-management/v1/token), MMC_API_SCOPE, MMC_API_AUDIENCE,
/// MMC_API_CLIENT_AUTH
/// (client_secret_post or client_secret_basic) and DATABASE_URL (default
/// sqlite:///./data/brasilintel.db; or
/// postgresql://user:password@host:5432/db?sslmode=verify-full for a store
/// shared by many instances). Logs go to stderr; set RUST_LOG (e.g.
/// RUST_LOG=debug) for more. Secrets and tokens are never logged.
#[derive(Parser)]
#[command(name = "token-manager", version, about, long_about)]
struct Cli {
    /// Load this component instead of the embedded one (a .wasm built from component/).
    #[arg(long, global = true, value_name = "PATH")]
    component: Option<PathBuf>,

    /// Compile the component every time instead of keeping the compiled code in
    /// $TOKEN_MANAGER_CACHE_DIR (default ~/.cache/brasilintel-token-manager).
    #[arg(long, global = true)]
    no_compile_cache: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the configured credentials against the real token endpoint.
    ///
    /// Four steps: configuration, token acquisition, cache (a second
    /// get-token must not reach the server), force refresh. Exit code 0 when
    /// all pass, 1 when a token step fails, 2 when configuration is missing
    /// or invalid. Events are written to DATABASE_URL.
    TestAuth {
        /// Print a JSON report on stdout instead of the human one.
        #[arg(long)]
        json: bool,
    },
    /// Run the four test-auth steps against an embedded local token endpoint.
    ///
    /// Needs no credentials: starts an OAuth2 endpoint on 127.0.0.1 that
    /// issues signed JWTs for a demo client, runs the steps through the
    /// component, and prints the api_events rows written.
    Demo {
        /// Print a JSON report on stdout.
        #[arg(long)]
        json: bool,
        /// Lifetime of the demo tokens, in seconds.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        lifetime: u64,
        /// Where the demo writes its events, sqlite:///… or postgresql://…
        /// (by default apart from the application's database).
        #[arg(long, default_value = "sqlite:///./data/demo.db", value_name = "URL")]
        database: String,
    },
    /// Print the latest rows of api_events from DATABASE_URL (or --database).
    Events {
        /// How many rows, newest first.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: u32,
        /// Only rows since then: 30m, 12h, 7d, 2026-12-01 or "2026-12-01 08:00" (UTC).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only this event type, e.g. TOKEN_FAILED (any case).
        #[arg(long = "type", value_name = "TYPE", value_parser = token_host::health::parse_event_type)]
        event_type: Option<String>,
        /// Only failures (success false).
        #[arg(long)]
        failed: bool,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Read this database (sqlite:///… or postgresql://…) instead of DATABASE_URL.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
    },
    /// Summarise token health from api_events: last success, failures in
    /// the last hour and day, the most common failure.
    Health {
        /// Also acquire a token with the configured credentials and report
        /// its expiry (one token request, recorded in api_events like any other).
        #[arg(long)]
        acquire: bool,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Read this database (sqlite:///… or postgresql://…) instead of DATABASE_URL.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_TOKEN_FAILED as u8)
        }
    }
}

/// `RUST_LOG` (default `warn`), except that the compiler's own tracing stays
/// at `warn` unless named: at `trace` it writes hundreds of megabytes while
/// compiling the component, which buries everything an operator wants.
fn log_filter() -> tracing_subscriber::EnvFilter {
    const COMPILER: [&str; 3] = [
        "cranelift_codegen",
        "cranelift_frontend",
        "wasmtime_internal_cranelift",
    ];
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let spec = if spec.trim().is_empty() {
        "warn".to_owned()
    } else {
        spec
    };
    let mut filter = tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|e| {
        eprintln!("warning: RUST_LOG={spec:?} is not a valid filter ({e}); using `warn`");
        tracing_subscriber::EnvFilter::new("warn")
    });
    for target in COMPILER.iter().filter(|t| !spec.contains(*t)) {
        filter = filter.add_directive(format!("{target}=warn").parse().expect("valid directive"));
    }
    filter
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::TestAuth { json } => test_auth(&cli.component, cli.no_compile_cache, json).await,
        Command::Demo {
            json,
            lifetime,
            database,
        } => {
            demo(
                &cli.component,
                cli.no_compile_cache,
                json,
                lifetime,
                &database,
            )
            .await
        }
        Command::Events {
            limit,
            since,
            event_type,
            failed,
            json,
            database,
        } => {
            let since = match since {
                Some(s) => Some(
                    token_host::health::parse_since(&s, std::time::SystemTime::now())
                        .map_err(anyhow::Error::msg)?,
                ),
                None => None,
            };
            let filter = token_host::health::Filter {
                limit,
                since,
                event_type,
                failed,
                after_id: None,
            };
            show_events(&filter, json, database)
        }
        Command::Health {
            acquire,
            json,
            database,
        } => {
            show_health(
                &cli.component,
                cli.no_compile_cache,
                acquire,
                json,
                database,
            )
            .await
        }
    }
}

fn load_runtime(component: &Option<PathBuf>, no_cache: bool) -> anyhow::Result<Runtime> {
    let cache = if no_cache {
        None
    } else {
        token_host::compile_cache::default_dir()
    };
    match component {
        Some(path) => Runtime::from_file(path, cache.as_deref()),
        None => Runtime::from_bytes(token_host::manager::EMBEDDED_COMPONENT, cache.as_deref()),
    }
}

fn print(report: &Report, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).expect("JSON")
        );
    } else {
        print!("{}", report.to_text());
    }
}

async fn test_auth(component: &Option<PathBuf>, no_cache: bool, json: bool) -> anyhow::Result<i32> {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "{}\n{}\n\nconfiguration error: {e}",
                runner::BANNER,
                "=".repeat(runner::BANNER.chars().count())
            );
            return Ok(EXIT_CONFIG);
        }
    };
    let step = match runner::check_configuration(&config) {
        Ok(step) => step,
        Err(report) => {
            print(&report, json);
            return Ok(report.exit_code());
        }
    };
    let runtime = load_runtime(component, no_cache)?;
    let events = EventStore::open(config.database.clone());
    let manager = TokenManager::new(&runtime, config.settings, events.clone()).await?;
    let report = runner::run_token_steps(step, &manager).await;
    events.flush();
    print(&report, json);
    Ok(report.exit_code())
}

async fn demo(
    component: &Option<PathBuf>,
    no_cache: bool,
    json: bool,
    lifetime: u64,
    database: &str,
) -> anyhow::Result<i32> {
    let database = DatabaseUrl::parse(database)?;
    let endpoint = TokenEndpoint::start(EndpointConfig {
        lifetime_secs: lifetime,
        ..EndpointConfig::default()
    })
    .await?;
    let config = Config {
        settings: Settings {
            base_url: endpoint.base_url(),
            client_id: endpoint.config().client_id.clone(),
            client_secret: endpoint.config().client_secret.clone(),
            token_path: endpoint.config().path.clone(),
            ..Settings::default()
        },
        database,
    };
    if !json {
        println!(
            "Demo: local OAuth2 token endpoint at {} (demo client, random secret)\n",
            endpoint.base_url()
        );
    }
    let step = runner::check_configuration(&config)
        .map_err(|r| anyhow::anyhow!("demo configuration invalid: {:?}", r.steps[0].lines))?;
    let runtime = load_runtime(component, no_cache)?;
    let events = EventStore::open(config.database.clone());
    let first_id = blocking(|| {
        Database::open_existing(&config.database)
            .ok()
            .flatten()
            .and_then(|mut db| db.max_id().ok())
    })
    .unwrap_or(0);
    let manager = TokenManager::new(&runtime, config.settings, events.clone()).await?;
    let report = runner::run_token_steps(step, &manager).await;
    events.flush();
    // The tokens are the demo's result; an events database that cannot be
    // read is reported beside them (exit 1), not instead of them.
    let rows = blocking(|| events_since(&config.database, first_id))
        .map_err(|e| format!("cannot read the api_events rows: {e}"));
    let code = if rows.is_ok() { report.exit_code() } else { 1 };
    if json {
        let mut v = report.to_json();
        v["endpoint"] = serde_json::json!(endpoint.base_url());
        v["server_requests"] = serde_json::json!(endpoint.request_count());
        match &rows {
            Ok(rows) => v["events"] = rows.iter().map(|(id, r)| row_json(*id, r)).collect(),
            Err(e) => v["events_error"] = serde_json::json!(e),
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", report.to_text());
        println!(
            "\nThe endpoint received {} request(s).",
            endpoint.request_count()
        );
        match &rows {
            Ok(rows) => {
                println!("api_events rows written ({}):\n", config.database);
                print!("{}", events_table(rows));
            }
            Err(e) => println!("{e}"),
        }
    }
    Ok(code)
}

fn events_since(
    database: &DatabaseUrl,
    after: i64,
) -> anyhow::Result<Vec<(i64, events::EventRow)>> {
    let Some(mut db) = Database::open_existing(database)? else {
        return Ok(Vec::new());
    };
    let mut rows = db.query(&token_host::health::Filter {
        limit: 1000,
        after_id: Some(after),
        ..Default::default()
    })?;
    rows.reverse();
    Ok(rows)
}

/// Run `read` on the events database, on a plain thread; `Err(code)` after
/// saying why there is nothing to read.
fn read_events<T: Send>(
    database: Option<String>,
    read: impl FnOnce(&mut Database) -> Result<T, StoreError> + Send,
) -> anyhow::Result<Result<T, i32>> {
    let database = match database {
        Some(url) => DatabaseUrl::parse(&url)?,
        None => Config::from_env()?.database,
    };
    blocking(|| match Database::open_existing(&database)? {
        Some(mut db) => Ok(Ok(read(&mut db).map_err(|e| {
            anyhow::anyhow!("cannot read api_events in {database}: {e}")
        })?)),
        None => {
            eprintln!(
                "no api_events in {database} yet: run `just test-auth` first, or set DATABASE_URL (the demo writes to --database sqlite:///./data/demo.db)"
            );
            Ok(Err(EXIT_TOKEN_FAILED))
        }
    })
}

fn show_events(
    filter: &token_host::health::Filter,
    json: bool,
    database: Option<String>,
) -> anyhow::Result<i32> {
    let rows = match read_events(database, |db| db.query(filter))? {
        Ok(rows) => rows,
        Err(code) => return Ok(code),
    };
    if json {
        for (id, row) in &rows {
            println!("{}", row_json(*id, row));
        }
    } else {
        print!("{}", events_table(&rows));
    }
    Ok(0)
}

async fn show_health(
    component: &Option<PathBuf>,
    no_cache: bool,
    acquire: bool,
    json: bool,
    database: Option<String>,
) -> anyhow::Result<i32> {
    let mut live_json = None;
    let mut live_lines = Vec::new();
    let mut code = 0;
    if acquire {
        let config = Config::from_env()?;
        if let Err(report) = runner::check_configuration(&config) {
            eprintln!(
                "cannot acquire: configuration is incomplete (run `just test-auth` for details)"
            );
            return Ok(report.exit_code());
        }
        let events = EventStore::open(config.database.clone());
        let runtime = load_runtime(component, no_cache)?;
        let manager = TokenManager::new(&runtime, config.settings, events.clone()).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        match (manager.get_token().await, manager.token_info().await) {
            (Some(_), Some(info)) => {
                let minutes = (info.expires_at - now) as f64 / 60.0;
                live_lines.push((
                    "live token".to_owned(),
                    format!("expires in {minutes:.1} min (at {} Unix)", info.expires_at),
                ));
                live_json = Some(
                    serde_json::json!({"acquired": true, "expires_at": info.expires_at, "expires_in_minutes": (minutes * 10.0).round() / 10.0}),
                );
            }
            _ => {
                live_lines.push((
                    "live token".to_owned(),
                    "FAILED to acquire; see the newest TOKEN_FAILED row".to_owned(),
                ));
                live_json = Some(serde_json::json!({"acquired": false}));
                code = EXIT_TOKEN_FAILED;
            }
        }
        events.flush();
    }
    let health = match read_events(database, |db| {
        token_host::health::health(db, std::time::SystemTime::now())
    })? {
        Ok(health) => health,
        Err(c) => return Ok(c),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&health.to_json(live_json))?
        );
    } else {
        print!("{}", health.to_text(&live_lines));
    }
    Ok(code)
}

fn row_json(id: i64, r: &events::EventRow) -> serde_json::Value {
    let detail = r
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok());
    serde_json::json!({
        "id": id, "event_type": r.event_type, "api_name": r.api_name, "timestamp": r.timestamp,
        "success": r.success, "detail": detail, "run_id": r.run_id,
    })
}

fn events_table(rows: &[(i64, events::EventRow)]) -> String {
    if rows.is_empty() {
        return "(no events)\n".into();
    }
    let mut out = format!(
        "{:>5}  {:<26}  {:<16}  {:<5}  {:<7}  {}\n",
        "id", "timestamp (UTC)", "event_type", "api", "success", "detail"
    );
    for (id, r) in rows {
        out.push_str(&format!(
            "{id:>5}  {:<26}  {:<16}  {:<5}  {:<7}  {}\n",
            r.timestamp,
            r.event_type,
            r.api_name,
            r.success,
            r.detail.as_deref().unwrap_or("")
        ));
    }
    out
}
