//! The `test-auth` runner (SPEC §7): four steps, a report for people or
//! machines, and the exit code.

use crate::config::{Config, vars};
use crate::manager::TokenManager;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use token_component::redact;

/// The runner's banner.
pub const BANNER: &str = "BrasilIntel — MMC Core API Auth Test";

/// Exit code: every step passed.
pub const EXIT_OK: i32 = 0;
/// Exit code: a token step failed.
pub const EXIT_TOKEN_FAILED: i32 = 1;
/// Exit code: configuration missing or invalid.
pub const EXIT_CONFIG: i32 = 2;

/// A cached `get-token` slower than this fails step 3.
pub const CACHE_LIMIT: Duration = Duration::from_millis(100);

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// It passed.
    Passed,
    /// It failed.
    Failed,
    /// It did not run because an earlier step failed.
    Skipped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "PASSED",
            Status::Failed => "FAILED",
            Status::Skipped => "SKIPPED",
        }
    }
}

/// One step's outcome: lines for people, fields for machines. Neither ever
/// holds a secret or a whole token.
#[derive(Clone, Debug)]
pub struct Step {
    /// Step title.
    pub title: &'static str,
    /// How it ended.
    pub status: Status,
    /// `label: value` lines for the human report.
    pub lines: Vec<(String, String)>,
    /// Fields for `--json`.
    pub data: Value,
}

impl Step {
    fn new(title: &'static str, status: Status) -> Self {
        Step {
            title,
            status,
            lines: Vec::new(),
            data: json!({}),
        }
    }

    fn line(mut self, label: &str, value: impl Into<String>) -> Self {
        self.lines.push((label.to_owned(), value.into()));
        self
    }

    fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }
}

/// The whole run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The four steps, in order.
    pub steps: Vec<Step>,
}

impl Report {
    /// 0 all passed, 1 a token step failed, 2 configuration.
    pub fn exit_code(&self) -> i32 {
        match self.steps.iter().position(|s| s.status == Status::Failed) {
            None => EXIT_OK,
            Some(0) => EXIT_CONFIG,
            Some(_) => EXIT_TOKEN_FAILED,
        }
    }

    /// The human report.
    pub fn to_text(&self) -> String {
        let mut out = format!("{BANNER}\n{}\n", "=".repeat(BANNER.chars().count()));
        let total = self.steps.len();
        for (i, step) in self.steps.iter().enumerate() {
            let head = format!("[{}/{total}] {} ", i + 1, step.title);
            let _ = writeln!(out, "\n{head:.<44} {}", step.status.as_str());
            for (label, value) in &step.lines {
                if label.is_empty() {
                    let _ = writeln!(out, "      {value}");
                } else {
                    let _ = writeln!(out, "      {:<14} {value}", format!("{label}:"));
                }
            }
        }
        let passed = self
            .steps
            .iter()
            .filter(|s| s.status == Status::Passed)
            .count();
        let verdict = if passed == total {
            "All steps PASSED"
        } else {
            "Auth test FAILED"
        };
        let _ = writeln!(
            out,
            "\n{verdict} ({passed}/{total} passed, exit code {}).",
            self.exit_code()
        );
        out
    }

    /// The machine-readable report.
    pub fn to_json(&self) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut v = json!({"step": i + 1, "name": s.title, "status": s.status.as_str(), "passed": s.status == Status::Passed});
                if let (Value::Object(dst), Value::Object(src)) = (&mut v, &s.data) {
                    dst.extend(src.clone());
                }
                v
            })
            .collect();
        json!({
            "banner": BANNER,
            "passed": self.exit_code() == EXIT_OK,
            "exit_code": self.exit_code(),
            "steps": steps,
        })
    }
}

/// Step 1: is everything there and usable? On failure, the report to print.
pub fn check_configuration(config: &Config) -> Result<Step, Report> {
    let title = "Configuration";
    let missing = config.missing();
    let fail = |step: Step| {
        let mut steps = vec![step];
        for t in ["Token acquisition", "Token cache", "Force refresh"] {
            steps.push(Step::new(t, Status::Skipped));
        }
        Report { steps }
    };
    if !missing.is_empty() {
        let mut step = Step::new(title, Status::Failed);
        for var in &missing {
            step = step.line("missing", format!("{var} ({})", describe(var)));
        }
        step = step
            .line(
                "",
                "To fix: copy .env.example to .env and fill in the MMC Core API section,",
            )
            .line(
                "",
                "or export the variables in the environment (the environment wins over .env).",
            )
            .data(json!({"missing": missing}));
        return Err(fail(step));
    }
    let endpoint = match config.endpoint() {
        Ok(e) => e,
        Err(e) => {
            let step = Step::new(title, Status::Failed)
                .line("error", e.to_string())
                .data(json!({"error": e.to_string()}));
            return Err(fail(step));
        }
    };
    let s = &config.settings;
    let client_id = redact::client_id(&s.client_id);
    Ok(Step::new(title, Status::Passed)
        .line("base URL", s.base_url.clone())
        .line("token path", s.token_path.clone())
        .line("client id", client_id.clone())
        .line("events", config.database.to_string())
        .data(json!({
            "base_url": s.base_url,
            "token_path": s.token_path,
            "token_url": endpoint.url(),
            "client_id": client_id,
            "database": config.database.to_string(),
        })))
}

fn describe(var: &str) -> &'static str {
    match var {
        vars::BASE_URL => "the gateway base URL, e.g. https://gateway.example.com",
        vars::CLIENT_ID => "the OAuth2 client id issued for BrasilIntel",
        vars::CLIENT_SECRET => "the OAuth2 client secret that goes with the client id",
        _ => "required",
    }
}

/// Steps 2 to 4 against a manager, after a passed step 1.
pub async fn run_token_steps(configuration: Step, manager: &TokenManager) -> Report {
    let mut steps = vec![configuration];

    // Step 2: acquisition.
    let started = Instant::now();
    let token = manager.get_token().await;
    let took = started.elapsed();
    let info = manager.token_info().await;
    let acquired = match (&token, &info) {
        (Some(t), Some(info)) => {
            steps.push(token_step("Token acquisition", t, info, took));
            Some(t.clone())
        }
        _ => {
            steps.push(
                Step::new("Token acquisition", Status::Failed)
                    .line(
                        "error",
                        "no token; see the TOKEN_FAILED row in api_events (`just events`) for why",
                    )
                    .line("took", format_duration(took))
                    .data(json!({"took_ms": ms(took)})),
            );
            None
        }
    };

    // Step 3: cache. The requests the host let through show whether one left.
    let Some(first) = acquired else {
        steps.push(Step::new("Token cache", Status::Skipped));
        steps.push(Step::new("Force refresh", Status::Skipped));
        return Report { steps };
    };
    let sent_before = manager.egress().sent();
    let started = Instant::now();
    let cached = manager.get_token().await;
    let took = started.elapsed();
    let requests = manager.egress().sent() - sent_before;
    let same = cached.as_deref() == Some(first.as_str());
    let ok = same && requests == 0 && took < CACHE_LIMIT;
    let mut step = Step::new(
        "Token cache",
        if ok { Status::Passed } else { Status::Failed },
    )
    .line(
        "cached call",
        format!(
            "{:.1} µs (limit {} ms)",
            micros(took),
            CACHE_LIMIT.as_millis()
        ),
    )
    .line("requests", format!("{requests} reached the server"))
    .data(json!({"cached_get_token_us": micros(took), "requests": requests, "same_token": same}));
    if !same {
        step = step.line("error", "the second get-token returned a different token");
    }
    steps.push(step);

    // Step 4: forced refresh.
    let started = Instant::now();
    let refreshed = manager.force_refresh().await;
    let took = started.elapsed();
    let info = manager.token_info().await;
    match (refreshed, info) {
        (Some(t), Some(info)) => {
            let step = token_step("Force refresh", &t, &info, took);
            let changed = t != first;
            let step = step.line(
                "new token",
                if changed {
                    "yes"
                } else {
                    "no (the server returned the same token)"
                },
            );
            steps.push(Step {
                data: merge(step.data.clone(), json!({"new_token": changed})),
                ..step
            });
        }
        _ => steps.push(
            Step::new("Force refresh", Status::Failed)
                .line("error", "no token; see the TOKEN_FAILED row in api_events")
                .data(json!({"took_ms": ms(took)})),
        ),
    }
    Report { steps }
}

fn token_step(title: &'static str, token: &str, info: &crate::TokenInfo, took: Duration) -> Step {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let minutes = (info.expires_at - now) as f64 / 60.0;
    Step::new(title, Status::Passed)
        .line("token type", info.token_type.clone())
        .line("expires in", format!("{minutes:.1} min"))
        .line("took", format_duration(took))
        .line("token", redact::token(token))
        .data(json!({
            "token_type": info.token_type,
            "expires_in_minutes": (minutes * 10.0).round() / 10.0,
            "expires_at": info.expires_at,
            "took_ms": ms(took),
            "token": redact::token(token),
        }))
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Value::Object(a), Value::Object(b)) = (&mut a, b) {
        a.extend(b);
    }
    a
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

fn micros(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

fn format_duration(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned()).unwrap()
    }

    #[test]
    fn missing_configuration_names_every_variable_and_exits_2() {
        let report = check_configuration(&config(&[(vars::CLIENT_ID, "abc")])).unwrap_err();
        assert_eq!(report.exit_code(), EXIT_CONFIG);
        let text = report.to_text();
        assert!(
            text.contains(vars::BASE_URL)
                && text.contains(vars::CLIENT_SECRET)
                && !text.contains(&format!("missing:       {}", vars::CLIENT_ID)),
            "{text}"
        );
        assert!(text.contains(".env.example"), "{text}");
        assert_eq!(
            report.to_json()["steps"][0]["missing"],
            json!([vars::BASE_URL, vars::CLIENT_SECRET])
        );
    }

    #[test]
    fn a_bad_base_url_is_a_configuration_failure() {
        let c = config(&[
            (vars::BASE_URL, "http://gw.example.com"),
            (vars::CLIENT_ID, "abc"),
            (vars::CLIENT_SECRET, "s"),
        ]);
        let report = check_configuration(&c).unwrap_err();
        assert_eq!(report.exit_code(), EXIT_CONFIG);
        assert!(
            report
                .to_text()
                .contains("plain HTTP is allowed only for loopback")
        );
    }

    #[test]
    fn configuration_shows_the_client_id_redacted() {
        let c = config(&[
            (vars::BASE_URL, "https://gw.example.com"),
            (vars::CLIENT_ID, "brasilintel-client"),
            (vars::CLIENT_SECRET, "s3cret!"),
        ]);
        let step = check_configuration(&c).unwrap();
        let text = Report { steps: vec![step] }.to_text();
        assert!(
            text.contains("bras***")
                && !text.contains("brasilintel-client")
                && !text.contains("s3cret!"),
            "{text}"
        );
    }
}
