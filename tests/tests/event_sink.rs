//! The event sink against a database that another connection keeps locked:
//! tokens are served regardless, and every event arrives once it is free.

use rusqlite::Connection;
use std::sync::Arc;
use std::time::{Duration, Instant};
use token_e2e::{Harness, runtime, settings_for};
use token_host::endpoint::{EndpointConfig, Scripted, TokenEndpoint};
use token_host::{EventStore, TokenManager};

/// Hold an exclusive lock on `path` for `hold`, from another thread.
fn lock_for(path: &std::path::Path, hold: Duration) -> std::thread::JoinHandle<()> {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    std::thread::spawn(move || {
        std::thread::sleep(hold);
        conn.execute_batch("COMMIT").unwrap();
    })
}

fn count(path: &std::path::Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM api_events", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn eight_tasks_refreshing_against_a_locked_database_lose_nothing() {
    let h = Arc::new(Harness::start().await);
    h.manager.get_token().await.unwrap();
    assert_eq!(h.rows().len(), 1);
    h.endpoint.script((0..4).map(|_| Scripted::status(401, "")));
    let unlock = lock_for(h.events.path().unwrap(), Duration::from_secs(3));

    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..10 {
                    if h.manager.force_refresh().await.is_some() {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut refreshed = 0;
    for t in tasks {
        refreshed += t.await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the token path waited on the database: {:?}",
        started.elapsed()
    );
    assert_eq!(refreshed, 76, "80 refreshes, 4 of them refused");
    unlock.join().unwrap();
    let rows = h.rows();
    assert_eq!(rows.len(), 81, "one acquisition + 80 refresh outcomes");
    assert_eq!(
        rows.iter()
            .filter(|r| r.event_type == "TOKEN_REFRESHED")
            .count(),
        76
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.event_type == "TOKEN_FAILED")
            .count(),
        4
    );
    assert_eq!(h.events.stats().dropped(), 0);
}

#[tokio::test]
async fn a_lock_longer_than_the_busy_timeout_is_retried_until_it_is_gone() {
    let h = Harness::start().await;
    h.manager.get_token().await.unwrap();
    h.rows();
    let unlock = lock_for(h.events.path().unwrap(), Duration::from_secs(6));
    let started = Instant::now();
    assert!(
        h.manager.force_refresh().await.is_some(),
        "the token does not wait"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    unlock.join().unwrap();
    // The first attempt gave up after the 5 s busy timeout; a later one wrote it.
    assert_eq!(h.events.flush(), 0);
    assert!(
        h.events.stats().failed_writes() >= 1,
        "the lock outlasted the busy timeout"
    );
    assert_eq!(h.event_types(), ["TOKEN_ACQUIRED", "TOKEN_REFRESHED"]);
}

#[tokio::test]
async fn pending_events_are_written_when_the_last_handle_is_dropped() {
    let endpoint = TokenEndpoint::start(EndpointConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    // Create the table, then lock the file for a moment.
    token_host::events::open_database(&path).unwrap();
    let events = EventStore::open(&path);
    let manager = TokenManager::new(runtime(), settings_for(&endpoint), events)
        .await
        .unwrap();
    let unlock = lock_for(&path, Duration::from_secs(1));
    manager.get_token().await.unwrap();
    manager.force_refresh().await.unwrap();
    drop(manager); // the last EventStore handle goes with it
    assert_eq!(count(&path), 2, "written on drop");
    unlock.join().unwrap();
}

/// Makes a file immutable (even for root) while alive.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(path: &std::path::Path) -> Option<Immutable> {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Immutable(path.to_owned()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_read_only_database_costs_no_token_and_is_written_once_writable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    {
        // A database in rollback-journal mode, as an application may leave it.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(token_host::events::API_EVENTS_DDL)
            .unwrap();
    }
    let Some(guard) = Immutable::set(&path) else {
        eprintln!(
            "SKIPPED: `chattr +i` is not supported here, so a read-only file cannot be made for root"
        );
        return;
    };
    let h = Harness::with_events(
        EndpointConfig::default(),
        |_| {},
        |_| EventStore::open(&path),
    )
    .await;
    assert!(
        h.manager.get_token().await.is_some(),
        "served despite the read-only database"
    );
    assert_eq!(h.events.flush(), 1, "the event waits");
    drop(guard);
    assert_eq!(h.events.flush(), 0);
    assert_eq!(count(&path), 1);
}
