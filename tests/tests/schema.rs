//! The `api_events` table as the application creates and reads it.

use rusqlite::Connection;
use token_e2e::Harness;
use token_host::EventStore;
use token_host::endpoint::{EndpointConfig, Scripted};
use token_host::events::API_EVENTS_DDL;

fn normalise(sql: &str) -> String {
    sql.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("IF NOT EXISTS ", "")
}

#[tokio::test]
async fn table_matches_the_ddl_and_values_have_the_application_formats() {
    let h = Harness::start().await;
    h.manager.get_token().await.unwrap();
    h.manager.force_refresh().await.unwrap();
    h.endpoint.script([Scripted::status(401, "")]);
    assert_eq!(h.manager.force_refresh().await, None);
    assert_eq!(
        h.event_types(),
        ["TOKEN_ACQUIRED", "TOKEN_REFRESHED", "TOKEN_FAILED"]
    );

    let conn = Connection::open(h.events.path().unwrap()).unwrap();
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'api_events'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(normalise(&sql), normalise(API_EVENTS_DDL));
    assert!(normalise(&sql).contains("run_id INTEGER REFERENCES runs(id)"));

    let mut stmt = conn.prepare("SELECT event_type, typeof(success), success, timestamp, run_id IS NULL FROM api_events").unwrap();
    let rows: Vec<(String, String, i64, String, bool)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (event_type, success_type, success, timestamp, run_id_null) in &rows {
        assert_eq!(event_type, &event_type.to_uppercase());
        assert_eq!(success_type, "integer");
        assert!(*success == 0 || *success == 1);
        assert!(run_id_null);
        assert!(is_app_timestamp(timestamp), "{timestamp}");
    }
    assert_eq!(rows.iter().map(|r| r.2).collect::<Vec<_>>(), [1, 1, 0]);
}

/// `YYYY-MM-DD HH:MM:SS.ffffff`
fn is_app_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 26
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b' '
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26)
}

#[tokio::test]
async fn an_existing_application_database_is_used_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("brasilintel.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE runs (id INTEGER PRIMARY KEY, started DATETIME);
             INSERT INTO runs (id) VALUES (7);
             CREATE TABLE api_events (
                id INTEGER PRIMARY KEY AUTOINCREMENT, event_type VARCHAR(50) NOT NULL,
                api_name VARCHAR(50) NOT NULL, timestamp DATETIME NOT NULL,
                success BOOLEAN NOT NULL, detail TEXT, run_id INTEGER REFERENCES runs(id));
             INSERT INTO api_events (event_type, api_name, timestamp, success, detail, run_id)
                VALUES ('NEWS_FETCH', 'news', '2026-01-01 00:00:00.000000', 1, '{}', 7);",
        )
        .unwrap();
    }
    let h = Harness::with_events(
        EndpointConfig::default(),
        |_| {},
        |_| EventStore::open(&path),
    )
    .await;
    h.manager.get_token().await.unwrap();
    assert_eq!(h.events.flush(), 0);
    let conn = Connection::open(&path).unwrap();
    let types: Vec<String> = conn
        .prepare("SELECT event_type FROM api_events ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(types, ["NEWS_FETCH", "TOKEN_ACQUIRED"]);
    let runs: i64 = conn
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(runs, 1, "other tables are left alone");
}

#[tokio::test]
async fn a_broken_database_costs_no_token_and_events_arrive_once_it_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("later/brasilintel.db");
    // A file where the directory should be: the database cannot be created.
    std::fs::write(dir.path().join("later"), b"not a directory").unwrap();
    let h = Harness::with_events(
        EndpointConfig::default(),
        |_| {},
        |_| EventStore::open(&path),
    )
    .await;
    assert!(
        h.manager.get_token().await.is_some(),
        "the token is served without a database"
    );
    assert!(h.manager.force_refresh().await.is_some());
    assert_eq!(h.events.flush(), 2, "both events wait for the database");
    std::fs::remove_file(dir.path().join("later")).unwrap();
    assert_eq!(h.events.flush(), 0);
    let conn = Connection::open(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM api_events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2, "nothing lost");
}
