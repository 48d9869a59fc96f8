//! Performance of the token manager, every figure next to a baseline measured
//! in the same run (see the README's "Performance" section).
//!
//! `just bench` (= `cargo bench --profile dev -p token-host --bench perf`)
//! runs it in full and prints a Markdown table. Without `--bench` (as
//! `cargo test --bench perf` runs it) it is a smoke run: few iterations and
//! loose ratio checks, so that CI notices a fast path that stopped being one.

use std::hint::black_box;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use token_host::endpoint::{EndpointConfig, TokenEndpoint};
use token_host::events::{EventRow, utc_timestamp};
use token_host::manager::EMBEDDED_COMPONENT;
use token_host::{DatabaseUrl, EventStore, Runtime, Settings, TokenManager};

#[path = "../../tests/src/pg_server.rs"]
#[allow(dead_code)]
mod pg_server;

struct Scale {
    /// Calls per latency sample set.
    calls: usize,
    /// Calls per task in the throughput runs.
    per_task: usize,
    /// Repetitions of the slower measurements.
    reps: usize,
    /// Refreshes in the memory run.
    refreshes: usize,
    /// Concurrent callers in the single-flight run.
    callers: usize,
}

const FULL: Scale = Scale {
    calls: 200_000,
    per_task: 200_000,
    reps: 30,
    refreshes: 10_000,
    callers: 1_000,
};
const SMOKE: Scale = Scale {
    calls: 2_000,
    per_task: 2_000,
    reps: 3,
    refreshes: 50,
    callers: 100,
};

/// One row of the report.
struct Row {
    what: String,
    value: String,
    baseline: String,
    ratio: String,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { FULL } else { SMOKE };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = rt.block_on(run(&scale, full));
    if full {
        rows.extend(event_writes());
    }
    println!("\n| measurement | value | baseline (same run) | ratio |\n|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} |",
            r.what, r.value, r.baseline, r.ratio
        );
    }
    if !full {
        println!("\nsmoke run passed (run `just bench` for the full figures)");
    }
}

fn settings(endpoint: &TokenEndpoint) -> Settings {
    Settings {
        base_url: endpoint.base_url(),
        client_id: endpoint.config().client_id.clone(),
        client_secret: endpoint.config().client_secret.clone(),
        token_path: endpoint.config().path.clone(),
        ..Settings::default()
    }
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

fn fmt_ns(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} ms", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2} µs", v / 1e3)
    } else {
        format!("{v:.0} ns")
    }
}

/// Median and p99 of per-call times: the median from batches of 100 calls
/// (timer cost spread), the p99 from single calls.
async fn latency<F, Fut>(calls: usize, mut f: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
{
    let mut batches = Vec::with_capacity(calls / 100);
    for _ in 0..calls / 100 {
        let t = Instant::now();
        for _ in 0..100 {
            black_box(f().await);
        }
        batches.push(ns(t.elapsed()) / 100.0);
    }
    let mut singles = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        black_box(f().await);
        singles.push(ns(t.elapsed()));
    }
    (
        percentile(&mut batches, 0.5),
        percentile(&mut singles, 0.99),
    )
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The physical floor: a token behind a lock plus an expiry check.
struct NativeCache {
    slot: RwLock<Option<(Arc<str>, i64)>>,
}

impl NativeCache {
    async fn get(&self) -> Option<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let slot = self.slot.read().unwrap();
        slot.as_ref()
            .filter(|(_, refresh_at)| now < *refresh_at)
            .map(|(t, _)| t.to_string())
    }
}

/// Calls per second from `tasks` tasks, each making `per_task` calls.
async fn throughput<F, Fut>(tasks: usize, per_task: usize, f: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future + Send,
{
    let f = Arc::new(f);
    let t = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    black_box(f().await);
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    (tasks * per_task) as f64 / t.elapsed().as_secs_f64()
}

fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}x", a / b)
}

async fn run(scale: &Scale, full: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compile-cache");
    let endpoint = TokenEndpoint::start(EndpointConfig::default())
        .await
        .unwrap();
    let events = EventStore::open(dir.path().join("events.db"));

    // 2. Cold start: compile (cold cache) vs load (warm cache).
    let mut cold = Vec::new();
    for _ in 0..scale.reps.min(5) {
        let t = Instant::now();
        black_box(Runtime::from_bytes(EMBEDDED_COMPONENT, None).unwrap());
        cold.push(ns(t.elapsed()));
    }
    Runtime::from_bytes(EMBEDDED_COMPONENT, Some(&cache)).unwrap();
    let (mut ready, mut first) = (Vec::new(), Vec::new());
    for _ in 0..scale.reps {
        let t = Instant::now();
        let runtime = Runtime::from_bytes(EMBEDDED_COMPONENT, Some(&cache)).unwrap();
        let manager = TokenManager::new(&runtime, settings(&endpoint), events.clone())
            .await
            .unwrap();
        ready.push(ns(t.elapsed()));
        assert!(manager.get_token().await.is_some());
        first.push(ns(t.elapsed()));
    }
    let cold = percentile(&mut cold, 0.5);
    let ready = percentile(&mut ready, 0.5);
    let first = percentile(&mut first, 0.5);
    rows.push(Row {
        what: "cold start: ready manager, warm compile cache (median)".into(),
        value: fmt_ns(ready),
        baseline: format!("compile, cold cache: {}", fmt_ns(cold)),
        ratio: ratio(ready, cold),
    });
    rows.push(Row {
        what: "cold start: first token on loopback, warm cache (median)".into(),
        value: fmt_ns(first),
        baseline: format!("ready manager: {}", fmt_ns(ready)),
        ratio: ratio(first, ready),
    });

    // 1. Cached get-token.
    let runtime = Runtime::from_bytes(EMBEDDED_COMPONENT, Some(&cache)).unwrap();
    let manager = Arc::new(
        TokenManager::new(&runtime, settings(&endpoint), events.clone())
            .await
            .unwrap(),
    );
    let token = manager.get_token().await.unwrap();
    let native = Arc::new(NativeCache {
        slot: RwLock::new(Some((Arc::from(token.as_str()), i64::MAX))),
    });
    let (native_med, native_p99) = latency(scale.calls, || native.get()).await;
    let (floor_med, floor_p99) = latency(scale.calls / 10, || manager.is_configured()).await;
    let (fast_med, fast_p99) = latency(scale.calls, || manager.get_token()).await;
    let (slow_med, slow_p99) =
        latency(scale.calls / 10, || manager.get_token_from_component()).await;
    rows.push(Row {
        what: "cached get_token, host API (median)".into(),
        value: fmt_ns(fast_med),
        baseline: format!("native Arc<str> cache: {}", fmt_ns(native_med)),
        ratio: ratio(fast_med, native_med),
    });
    rows.push(Row {
        what: "cached get_token, host API (p99)".into(),
        value: fmt_ns(fast_p99),
        baseline: format!("native: {}", fmt_ns(native_p99)),
        ratio: ratio(fast_p99, native_p99),
    });
    rows.push(Row {
        what: "no-op export call (wasmtime floor, median)".into(),
        value: fmt_ns(floor_med),
        baseline: format!("native: {}", fmt_ns(native_med)),
        ratio: ratio(floor_med, native_med),
    });
    rows.push(Row {
        what: "cached get-token through the guest (median)".into(),
        value: fmt_ns(slow_med),
        baseline: format!("no-op export: {}", fmt_ns(floor_med)),
        ratio: ratio(slow_med, floor_med),
    });
    rows.push(Row {
        what: "cached get-token through the guest (p99)".into(),
        value: fmt_ns(slow_p99),
        baseline: format!("no-op export: {}", fmt_ns(floor_p99)),
        ratio: ratio(slow_p99, floor_p99),
    });
    for tasks in [1, 8] {
        let m = manager.clone();
        let ours = throughput(tasks, scale.per_task, move || {
            let m = m.clone();
            async move { m.get_token().await }
        })
        .await;
        let n = native.clone();
        let base = throughput(tasks, scale.per_task, move || {
            let n = n.clone();
            async move { n.get().await }
        })
        .await;
        rows.push(Row {
            what: format!("cached get_token calls/s, {tasks} task(s)"),
            value: format!("{:.2} M/s", ours / 1e6),
            baseline: format!("native: {:.2} M/s", base / 1e6),
            ratio: ratio(ours, base),
        });
    }

    // 3. One acquisition through the component vs natively from the host.
    let mut through = Vec::new();
    let mut native_req = Vec::new();
    let body = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        token_component::form::encode(&endpoint.config().client_id),
        token_component::form::encode(&endpoint.config().client_secret)
    );
    for _ in 0..scale.reps * 3 {
        let t = Instant::now();
        assert!(manager.force_refresh().await.is_some());
        through.push(ns(t.elapsed()));
        let t = Instant::now();
        native_post(&endpoint, &body).await;
        native_req.push(ns(t.elapsed()));
    }
    let through = percentile(&mut through, 0.5);
    let native_req = percentile(&mut native_req, 0.5);
    rows.push(Row {
        what: "one token request through the component (median)".into(),
        value: fmt_ns(through),
        baseline: format!("native hyper POST: {}", fmt_ns(native_req)),
        ratio: ratio(through, native_req),
    });

    // 4. Single flight: many callers on an empty cache.
    let fresh = TokenEndpoint::start(EndpointConfig::default())
        .await
        .unwrap();
    let one = {
        let m = TokenManager::new(&runtime, settings(&fresh), events.clone())
            .await
            .unwrap();
        let t = Instant::now();
        m.get_token().await.unwrap();
        ns(t.elapsed())
    };
    let before = fresh.request_count();
    let m = Arc::new(
        TokenManager::new(&runtime, settings(&fresh), events.clone())
            .await
            .unwrap(),
    );
    let t = Instant::now();
    let handles: Vec<_> = (0..scale.callers)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move { m.get_token().await })
        })
        .collect();
    for h in handles {
        assert!(h.await.unwrap().is_some());
    }
    let all = ns(t.elapsed());
    let requests = fresh.request_count() - before;
    assert_eq!(requests, 1, "single flight");
    rows.push(Row {
        what: format!(
            "{} concurrent callers, empty cache: all served ({requests} request)",
            scale.callers
        ),
        value: fmt_ns(all),
        baseline: format!("one caller: {}", fmt_ns(one)),
        ratio: ratio(all, one),
    });

    // 5. Component size.
    rows.push(Row {
        what: "component size (profile `component`)".into(),
        value: format!("{} bytes", EMBEDDED_COMPONENT.len()),
        baseline: "target 200,000 bytes".into(),
        ratio: ratio(EMBEDDED_COMPONENT.len() as f64, 200_000.0),
    });

    // 6. Memory.
    let rss_before = rss_bytes();
    let extra = TokenManager::new(&runtime, settings(&endpoint), events.clone())
        .await
        .unwrap();
    extra.get_token().await.unwrap();
    let rss_after = rss_bytes();
    rows.push(Row {
        what: "resident memory of the bench process".into(),
        value: format!("{:.1} MiB", rss_after as f64 / 1048576.0),
        baseline: format!(
            "one more manager: +{:.1} MiB",
            rss_after.saturating_sub(rss_before) as f64 / 1048576.0
        ),
        ratio: "-".into(),
    });
    for _ in 0..100.min(scale.refreshes) {
        extra.force_refresh().await.unwrap();
    }
    let early = extra.guest_memory_bytes().await;
    for _ in 0..scale.refreshes {
        extra.force_refresh().await.unwrap();
    }
    let late = extra.guest_memory_bytes().await;
    rows.push(Row {
        what: format!(
            "guest linear memory after {} refreshes",
            scale.refreshes + 100.min(scale.refreshes)
        ),
        value: format!("{late} bytes"),
        baseline: format!("after 100: {early} bytes"),
        ratio: ratio(late as f64, early as f64),
    });
    assert_eq!(late, early, "guest memory grew across refreshes");

    // Regression guards (generous: shared machines are noisy).
    let fast_limit = if full { 10.0 } else { 50.0 };
    assert!(
        fast_med / native_med < fast_limit,
        "the cached fast path is {:.1}x the native baseline",
        fast_med / native_med
    );
    assert!(
        fast_med < floor_med,
        "the fast path is no faster than entering the component"
    );
    events.flush();
    rows
}

/// Event rows per second into PostgreSQL against SQLite, both durable
/// (fsync on), both through `EventStore`: one row per commit as the token
/// path produces them, and a burst that the writer batches.
fn event_writes() -> Vec<Row> {
    let Some(mut pg) = pg_server::PgServer::init() else {
        return Vec::new();
    };
    pg.set("fsync", "on");
    pg.set("full_page_writes", "on");
    pg.start();
    let postgres = DatabaseUrl::parse(&pg.create_database("bench")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = DatabaseUrl::from(dir.path().join("events.db"));
    let row = || {
        EventRow {
        event_type: "TOKEN_REFRESHED".into(),
        api_name: "auth".into(),
        timestamp: utc_timestamp(SystemTime::now()),
        success: true,
        detail: Some(r#"{"expires_in_seconds":3600,"token_type":"Bearer","token_fingerprint":"1f0c4e9a2b7d"}"#.into()),
        run_id: None,
    }
    };
    // Microseconds per row: `single` rows each flushed (one transaction
    // each), then a burst of `burst` rows flushed once.
    let measure = |db: &DatabaseUrl, single: usize, burst: usize| -> (f64, f64) {
        let store = EventStore::with_capacity(db.clone(), burst);
        store.record(row());
        assert_eq!(store.flush(), 0, "{db} is writable");
        let t = Instant::now();
        for _ in 0..single {
            store.record(row());
            assert_eq!(store.flush(), 0);
        }
        let one = t.elapsed().as_secs_f64() * 1e6 / single as f64;
        let t = Instant::now();
        for _ in 0..burst {
            store.record(row());
        }
        assert_eq!(store.flush(), 0);
        (one, t.elapsed().as_secs_f64() * 1e6 / burst as f64)
    };
    let (single, burst) = (500, 10_000);
    let (pg_one, pg_burst) = measure(&postgres, single, burst);
    let (sq_one, sq_burst) = measure(&sqlite, single, burst);
    let us = |v: f64| format!("{v:.1} µs/row");
    vec![
        Row {
            what: format!(
                "event write, one row per commit ({single} rows), PostgreSQL on loopback"
            ),
            value: us(pg_one),
            baseline: format!("SQLite WAL: {}", us(sq_one)),
            ratio: ratio(pg_one, sq_one),
        },
        Row {
            what: format!("event write, burst of {burst} rows batched by the writer, PostgreSQL"),
            value: us(pg_burst),
            baseline: format!("SQLite WAL: {}", us(sq_burst)),
            ratio: ratio(pg_burst, sq_burst),
        },
    ]
}

/// The same request, made natively: a fresh connection, as the component's is.
async fn native_post(endpoint: &TokenEndpoint, body: &str) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(endpoint.addr())
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(&endpoint.config().path)
        .header("host", endpoint.addr().to_string())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let _: serde_json::Value = serde_json::from_slice(&body).unwrap();
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}
