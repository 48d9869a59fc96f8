//! The `token-manager` binary: test-auth exit codes, the demo, `--json`, and
//! the security contract at `RUST_LOG=trace`.

use std::path::Path;
use std::process::{Command, Output};
use token_host::endpoint::{EndpointConfig, TokenEndpoint};

const BIN: &str = env!("CARGO_BIN_EXE_token-manager");

/// Run the binary in `dir` with only the given variables (no inherited
/// configuration, no `.env` of the repository).
fn run(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).env_clear().args(args);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run token-manager")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn endpoint_vars(e: &TokenEndpoint) -> Vec<(&'static str, String)> {
    vec![
        ("MMC_API_BASE_URL", e.base_url()),
        ("MMC_API_CLIENT_ID", e.config().client_id.clone()),
        ("MMC_API_CLIENT_SECRET", e.config().client_secret.clone()),
    ]
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn test_auth_without_configuration_exits_2_naming_each_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["test-auth"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("BrasilIntel — MMC Core API Auth Test"), "{t}");
    for var in [
        "MMC_API_BASE_URL",
        "MMC_API_CLIENT_ID",
        "MMC_API_CLIENT_SECRET",
    ] {
        assert!(t.contains(var), "{var} not named: {t}");
    }
    assert!(t.contains(".env.example") && t.contains("FAILED"), "{t}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing is written without configuration"
    );
}

#[test]
fn dotenv_supplies_configuration_and_the_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "MMC_API_BASE_URL=http://gw.example.com\nMMC_API_CLIENT_ID=abc\n",
    )
    .unwrap();
    // Only the secret is missing: .env supplied the rest.
    let out = run(dir.path(), &["test-auth", "--json"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["steps"][0]["missing"],
        serde_json::json!(["MMC_API_CLIENT_SECRET"])
    );
    // With the secret, the .env URL (plain HTTP to a remote host) is refused...
    let out = run(
        dir.path(),
        &["test-auth"],
        &[("MMC_API_CLIENT_SECRET", "x")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("loopback"), "{}", text(&out));
    // ...unless the environment overrides it.
    let out = run(
        dir.path(),
        &["test-auth"],
        &[
            ("MMC_API_CLIENT_SECRET", "x"),
            ("MMC_API_BASE_URL", "https://"),
        ],
    );
    assert!(text(&out).contains("has no host"), "{}", text(&out));
}

#[tokio::test]
async fn test_auth_against_a_server_that_answers_401_exits_1() {
    let endpoint = TokenEndpoint::start(EndpointConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut vars = endpoint_vars(&endpoint);
    vars[2].1 = "not-the-secret".into();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || run(&dir, &["test-auth"], &as_refs(&vars))
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(endpoint.request_count(), 1, "401 is not retried");
    let t = text(&out);
    assert!(
        t.contains("[2/4] Token acquisition") && t.contains("FAILED"),
        "{t}"
    );
    assert!(
        dir.path().join("data/brasilintel.db").exists(),
        "the failure is recorded in the default database"
    );
}

#[tokio::test]
async fn test_auth_against_a_working_endpoint_passes_and_reports_json() {
    let endpoint = TokenEndpoint::start(EndpointConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vars = endpoint_vars(&endpoint);
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || run(&dir, &["test-auth", "--json"], &as_refs(&vars))
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], true);
    assert_eq!(report["steps"].as_array().unwrap().len(), 4);
    assert_eq!(
        report["steps"][2]["requests"], 0,
        "the cached call made no request"
    );
    assert!(report["steps"][2]["cached_get_token_us"].as_f64().unwrap() < 100_000.0);
    assert_eq!(
        endpoint.request_count(),
        2,
        "one acquisition, one forced refresh"
    );
}

#[test]
fn demo_runs_without_credentials_and_shows_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["demo"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    for expected in [
        "[4/4] Force refresh",
        "TOKEN_ACQUIRED",
        "TOKEN_REFRESHED",
        "received 2 request(s)",
    ] {
        assert!(t.contains(expected), "{expected} missing: {t}");
    }
    let out = run(
        dir.path(),
        &["events", "--json", "--database", "sqlite:///./data/demo.db"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["event_type"], "TOKEN_REFRESHED", "newest first");
}

#[test]
fn events_on_a_missing_or_unsupported_database_explains() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["events"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no api_events in ./data/brasilintel.db"),
        "{}",
        text(&out)
    );
    let out = run(
        dir.path(),
        &["events"],
        &[("DATABASE_URL", "mysql://app:hunter2@db/app")],
    );
    assert_ne!(out.status.code(), Some(0));
    let t = text(&out);
    assert!(t.contains("not supported") && !t.contains("hunter2"), "{t}");
    // Nothing listens on port 1: a clear error naming the server, not the password.
    let out = run(
        dir.path(),
        &[
            "health",
            "--database",
            "postgres://app:hunter2@127.0.0.1:1/app",
        ],
        &[],
    );
    assert_ne!(out.status.code(), Some(0));
    let t = text(&out);
    assert!(
        t.contains("cannot connect to postgresql://app@127.0.0.1:1/app") && !t.contains("hunter2"),
        "{t}"
    );
}

#[tokio::test]
async fn secrets_never_appear_in_output_logs_or_the_database_even_at_trace() {
    let config = EndpointConfig {
        client_id: "secret-client-id-4f9a2c".into(),
        client_secret: "S3cr3t-Value-Never-Shown-81d7".into(),
        ..EndpointConfig::default()
    };
    let endpoint = TokenEndpoint::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut vars = endpoint_vars(&endpoint);
    vars.push(("RUST_LOG", "trace".into()));
    let mut output = String::new();
    for args in [vec!["test-auth"], vec!["test-auth", "--json"]] {
        let vars = vars.clone();
        let d = dir.path().to_owned();
        let out = tokio::task::spawn_blocking(move || run(&d, &args, &as_refs(&vars)))
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        output.push_str(&text(&out));
    }
    // A failing run logs errors too.
    let mut failing = vars.clone();
    failing[2].1 = "S3cr3t-Wrong-Value-Never-Shown".into();
    let d = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || run(&d, &["test-auth"], &as_refs(&failing)))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    output.push_str(&text(&out));
    assert!(
        output.contains("TRACE") || output.contains("trace"),
        "trace logging was on"
    );

    let db = std::fs::read(dir.path().join("data/brasilintel.db")).unwrap();
    let wal = std::fs::read(dir.path().join("data/brasilintel.db-wal")).unwrap_or_default();
    let stored = format!(
        "{}{}",
        String::from_utf8_lossy(&db),
        String::from_utf8_lossy(&wal)
    );
    let tokens = endpoint.issued_tokens();
    assert_eq!(tokens.len(), 4);
    let mut secrets = vec![
        "secret-client-id-4f9a2c",
        "S3cr3t-Value-Never-Shown-81d7",
        "S3cr3t-Wrong-Value-Never-Shown",
    ];
    secrets.extend(tokens.iter().map(String::as_str));
    for secret in secrets {
        assert!(!output.contains(secret), "output leaks {secret}");
        assert!(!stored.contains(secret), "database leaks {secret}");
    }
    // The signature part alone would do as much harm as the whole token.
    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!output.contains(signature) && !stored.contains(signature));
    }
    assert!(
        output.contains("secr***"),
        "the runner shows the redacted client id"
    );
}

/// A demo database plus failures at known ages: two 10 minutes ago (same
/// detail), one 2 hours ago, one 3 days ago.
fn database_with_history(dir: &Path) -> String {
    let out = run(dir, &["demo"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let conn = token_host::events::open_database(&dir.join("data/demo.db")).unwrap();
    let now = std::time::SystemTime::now();
    let ago =
        |secs: u64| token_host::events::utc_timestamp(now - std::time::Duration::from_secs(secs));
    for (secs, detail) in [
        (600, r#"{"status_code":401,"error":"invalid_credentials"}"#),
        (590, r#"{"status_code":401,"error":"invalid_credentials"}"#),
        (
            7_200,
            r#"{"error":"max_retries_exceeded","attempts":3,"last_status":503}"#,
        ),
        (3 * 86_400, r#"{"error":"tls_error"}"#),
    ] {
        conn.execute(
            "INSERT INTO api_events (event_type, api_name, timestamp, success, detail) VALUES ('TOKEN_FAILED', 'auth', ?1, 0, ?2)",
            rusqlite::params![ago(secs), detail],
        )
        .unwrap();
    }
    "sqlite:///./data/demo.db".to_owned()
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn events_filters_by_time_type_and_failure() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_with_history(dir.path());
    let list = |extra: &[&str]| {
        let mut args = vec!["events", "--json", "-n", "100", "--database", db.as_str()];
        args.extend_from_slice(extra);
        let out = run(dir.path(), &args, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        json_lines(&out)
    };
    assert_eq!(list(&[]).len(), 6);
    assert_eq!(list(&["--failed"]).len(), 4);
    assert_eq!(list(&["--type", "token-failed", "--since", "1h"]).len(), 2);
    assert_eq!(list(&["--since", "1d"]).len(), 5);
    let refreshed = list(&["--type", "TOKEN_REFRESHED"]);
    assert_eq!(refreshed.len(), 1);
    assert_eq!(refreshed[0]["success"], true);
    assert!(list(&["--since", "2000-01-01"]).len() == 6);

    let out = run(
        dir.path(),
        &["events", "--type", "TOKEN_LOST", "--database", &db],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("TOKEN_ACQUIRED"),
        "the error lists the valid types: {}",
        text(&out)
    );
    let out = run(
        dir.path(),
        &["events", "--since", "yesterday", "--database", &db],
        &[],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("30m, 12h, 7d"), "{}", text(&out));
}

#[test]
fn health_summarises_successes_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_with_history(dir.path());
    let out = run(dir.path(), &["health", "--json", "--database", &db], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h["failures_last_hour"], 2);
    assert_eq!(h["failures_last_day"], 3);
    assert_eq!(h["top_failure_last_day"]["count"], 2);
    assert_eq!(
        h["top_failure_last_day"]["detail"]["error"],
        "invalid_credentials"
    );
    assert_eq!(h["last_success"]["expires_in_seconds"], 3600);
    assert_eq!(h["live"], serde_json::Value::Null);
    let out = run(dir.path(), &["health", "--database", &db], &[]);
    let t = text(&out);
    assert!(
        t.contains("failures, 1 h:")
            && t.contains("invalid_credentials")
            && t.contains("(2x in 24 h)"),
        "{t}"
    );
}

#[tokio::test]
async fn health_can_acquire_a_live_token() {
    let endpoint = TokenEndpoint::start(EndpointConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vars = endpoint_vars(&endpoint);
    let d = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        run(&d, &["health", "--acquire", "--json"], &as_refs(&vars))
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h["live"]["acquired"], true);
    assert!(h["live"]["expires_in_minutes"].as_f64().unwrap() > 59.0);
    assert!(
        h["last_success"]["timestamp"].is_string(),
        "the acquisition was recorded and read back"
    );
    assert_eq!(endpoint.request_count(), 1);
}

#[path = "../../tests/src/pg_server.rs"]
#[allow(dead_code)]
mod pg_server;

#[test]
fn demo_events_and_health_work_on_postgres_without_showing_the_password() {
    let Some(pg) = pg_server::PgServer::running() else {
        return;
    };
    let url = pg.create_database("cli");
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["demo", "--json", "--database", &url],
        &[("RUST_LOG", "trace")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !text(&out).contains(pg.password()),
        "password in the demo output"
    );
    let demo: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<_> = demo["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["TOKEN_ACQUIRED", "TOKEN_REFRESHED"], "{demo}");

    let env = [("DATABASE_URL", url.as_str())];
    let out = run(
        dir.path(),
        &["events", "--json", "--type", "token-refreshed"],
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["event_type"], "TOKEN_REFRESHED");
    assert_eq!(lines[0]["success"], true);

    let out = run(dir.path(), &["health", "--json"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let health: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(health["last_success"]["timestamp"], lines[0]["timestamp"]);
    assert_eq!(health["failures_last_day"], 0);

    let wrong = url.replace(pg.password(), "wrong-pw-1234");
    let out = run(dir.path(), &["events", "--database", &wrong], &[]);
    let t = text(&out);
    assert_ne!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("password authentication failed") && t.contains("127.0.0.1"),
        "{t}"
    );
    assert!(!t.contains("wrong-pw-1234"), "password in the error: {t}");
}

#[test]
fn demo_against_an_unreachable_postgres_still_gets_tokens_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let url = "postgresql://app:hunter2@127.0.0.1:1/app";
    let out = run(dir.path(), &["demo", "--database", url], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("All steps PASSED"), "{t}");
    assert!(
        t.contains(
            "cannot read the api_events rows: cannot connect to postgresql://app@127.0.0.1:1/app"
        ),
        "{t}"
    );
    assert!(t.contains("api_events: cannot write; will retry"), "{t}");
    assert!(!t.contains("hunter2"), "{t}");
}

#[test]
fn a_bad_sslrootcert_is_named_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-cert.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for (file, says) in [
        (dir.path().join("absent.pem"), "No such file"),
        (not_pem, "no certificate in it"),
    ] {
        let url = format!(
            "postgresql://app:hunter2@127.0.0.1:1/app?sslmode=verify-full&sslrootcert={}",
            file.display()
        );
        let out = run(dir.path(), &["events", "--database", &url], &[]);
        let t = text(&out);
        assert_ne!(out.status.code(), Some(0), "{t}");
        assert!(
            t.contains(&format!("sslrootcert {}", file.display())) && t.contains(says),
            "{t}"
        );
        assert!(!t.contains("hunter2"), "{t}");
    }
}
