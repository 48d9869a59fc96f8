//! `api_events` in a SQLite file, exactly as the application creates it.

use crate::events::EventRow;
use crate::health::Filter;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, params_from_iter, types::Value as SqlValue,
};
use std::path::Path;
use std::time::Duration;

/// The table exactly as the application creates it (SPEC §5).
pub const API_EVENTS_DDL: &str = "CREATE TABLE IF NOT EXISTS api_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type  VARCHAR(50) NOT NULL,
    api_name    VARCHAR(50) NOT NULL,
    timestamp   DATETIME NOT NULL,
    success     BOOLEAN NOT NULL,
    detail      TEXT,
    run_id      INTEGER REFERENCES runs(id)
)";

/// How long a write waits on a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const COLUMNS: &str = "id, event_type, api_name, timestamp, success, detail, run_id";

/// Open (creating the directory and file) and prepare the events database.
pub fn open_database(path: &Path) -> rusqlite::Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // If this fails, opening reports the real problem.
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The application (SQLAlchemy on SQLite) runs without foreign-key
    // enforcement, and `runs` may not exist in a fresh file; the bundled
    // SQLite enforces them by default, which would refuse every insert.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    // WAL lets the dashboard read while we write; a read-only file keeps its mode.
    let _ = conn.pragma_update(None, "journal_mode", "WAL");
    conn.execute_batch(API_EVENTS_DDL)?;
    Ok(conn)
}

/// Open an existing file read-only; `None` if it or its table is absent.
pub fn open_existing(path: &Path) -> rusqlite::Result<Option<Connection>> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let has_table = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'api_events'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    Ok(has_table.then_some(conn))
}

/// Insert all rows in one transaction.
pub fn insert(conn: &mut Connection, rows: &[EventRow]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO api_events (event_type, api_name, timestamp, success, detail, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for r in rows {
            stmt.execute(values(r))?;
        }
    }
    tx.commit()
}

/// A row's columns in `INSERT`'s order (?1 … ?6).
fn values(r: &EventRow) -> [&dyn rusqlite::ToSql; 6] {
    [
        &r.event_type,
        &r.api_name,
        &r.timestamp,
        &r.success,
        &r.detail,
        &r.run_id,
    ]
}

/// Whether a row equal in every column but the id is present.
pub fn contains(conn: &Connection, r: &EventRow) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM api_events WHERE event_type = ?1 AND api_name = ?2 \
         AND timestamp = ?3 AND success = ?4 AND detail IS ?5 AND run_id IS ?6)",
        values(r),
        |row| row.get(0),
    )
}

/// The rows matching `filter`, newest first.
pub fn query(conn: &Connection, filter: &Filter) -> rusqlite::Result<Vec<(i64, EventRow)>> {
    let mut sql = format!("SELECT {COLUMNS} FROM api_events WHERE 1 = 1");
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(after) = filter.after_id {
        sql.push_str(" AND id > ?");
        args.push(SqlValue::Integer(after));
    }
    if let Some(since) = &filter.since {
        sql.push_str(" AND timestamp >= ?");
        args.push(SqlValue::Text(since.clone()));
    }
    if let Some(t) = &filter.event_type {
        sql.push_str(" AND event_type = ?");
        args.push(SqlValue::Text(t.clone()));
    }
    if filter.failed {
        sql.push_str(" AND success = 0");
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(SqlValue::Integer(i64::from(filter.limit)));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        Ok((
            r.get(0)?,
            EventRow {
                event_type: r.get(1)?,
                api_name: r.get(2)?,
                timestamp: r.get(3)?,
                success: r.get(4)?,
                detail: r.get(5)?,
                run_id: r.get(6)?,
            },
        ))
    })?;
    rows.collect()
}

/// Read the latest `limit` rows, newest first.
pub fn latest(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<(i64, EventRow)>> {
    query(
        conn,
        &Filter {
            limit,
            ..Default::default()
        },
    )
}

/// The highest id (0 for none).
pub fn max_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM api_events", [], |r| {
        r.get(0)
    })
}

/// The newest successful acquisition or refresh.
pub fn last_success(conn: &Connection) -> rusqlite::Result<Option<(String, Option<String>)>> {
    conn.query_row(
        "SELECT timestamp, detail FROM api_events WHERE api_name = 'auth' AND success = 1 \
         AND event_type IN ('TOKEN_ACQUIRED', 'TOKEN_REFRESHED') ORDER BY id DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// `TOKEN_FAILED` rows at or after `since`.
pub fn failures_since(conn: &Connection, since: &str) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COUNT(*) FROM api_events WHERE event_type = 'TOKEN_FAILED' AND timestamp >= ?1",
        [since],
        |r| r.get(0),
    )
}

/// The most frequent `TOKEN_FAILED` detail at or after `since`.
pub fn top_failure(conn: &Connection, since: &str) -> rusqlite::Result<Option<(String, i64)>> {
    conn.query_row(
        "SELECT COALESCE(detail, ''), COUNT(*) AS n FROM api_events \
         WHERE event_type = 'TOKEN_FAILED' AND timestamp >= ?1 \
         GROUP BY detail ORDER BY n DESC, MAX(id) DESC LIMIT 1",
        [since],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}
