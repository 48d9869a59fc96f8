//! The `api_events` sink: rows written by a writer thread, off the token path.
//!
//! Recording never blocks and never fails the caller: a database that is
//! missing, locked or read-only costs a warning, and the rows wait in a
//! bounded queue until it can be written (or the store shuts down).

use rusqlite::{Connection, params};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Events held while the database is unusable; beyond this they are dropped
/// and counted.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;

/// How long a write waits on a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the writer retries an unusable database.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// One `api_events` row, less the id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    /// Upper-case enum member name, e.g. `TOKEN_ACQUIRED`.
    pub event_type: String,
    /// `auth` for token events.
    pub api_name: String,
    /// UTC, `YYYY-MM-DD HH:MM:SS.ffffff`.
    pub timestamp: String,
    /// Whether it succeeded.
    pub success: bool,
    /// JSON detail.
    pub detail: Option<String>,
    /// Pipeline run, if any.
    pub run_id: Option<i64>,
}

enum Message {
    Event(EventRow),
    Flush(SyncSender<usize>),
}

/// Counters shared with the writer thread.
#[derive(Default, Debug)]
pub struct EventStats {
    written: AtomicU64,
    dropped: AtomicU64,
    failed_writes: AtomicU64,
}

impl EventStats {
    /// Rows written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// Write attempts that failed (and were retried later).
    pub fn failed_writes(&self) -> u64 {
        self.failed_writes.load(Ordering::Relaxed)
    }
}

/// A handle to the writer; cheap to clone, safe to share. When the last
/// handle is dropped, pending events are written before it returns.
#[derive(Clone)]
pub struct EventStore(Arc<Inner>);

struct Inner {
    tx: SyncSender<Message>,
    stats: Arc<EventStats>,
    path: PathBuf,
}

impl Drop for Inner {
    fn drop(&mut self) {
        flush(&self.tx);
    }
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("path", &self.0.path)
            .field("stats", &self.0.stats)
            .finish()
    }
}

impl EventStore {
    /// Start a writer for the SQLite file at `path` (created, with its
    /// directory, on the first write). Opening errors are not fatal.
    pub fn open(path: impl Into<PathBuf>) -> EventStore {
        Self::with_capacity(path, DEFAULT_QUEUE_CAPACITY)
    }

    /// [`EventStore::open`] with a queue bound.
    pub fn with_capacity(path: impl Into<PathBuf>, capacity: usize) -> EventStore {
        let path = path.into();
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let stats = Arc::new(EventStats::default());
        let writer = Writer {
            path: path.clone(),
            conn: None,
            pending: VecDeque::new(),
            capacity,
            stats: stats.clone(),
            warned: false,
            unwritten: false,
        };
        std::thread::Builder::new()
            .name("api-events-writer".into())
            .spawn(move || writer.run(rx))
            .expect("spawn the api_events writer thread");
        EventStore(Arc::new(Inner { tx, stats, path }))
    }

    /// Queue an event; never blocks.
    pub fn record(&self, row: EventRow) {
        tracing::info!(
            event_type = %row.event_type,
            api = %row.api_name,
            success = row.success,
            detail = row.detail.as_deref().unwrap_or(""),
            "api event"
        );
        if self.0.tx.try_send(Message::Event(row)).is_err() {
            let n = self.0.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(dropped = n, "api_events queue is full; event dropped");
        }
    }

    /// Wait until everything queued so far has been written, or one attempt
    /// to write it failed. Returns how many events are still waiting.
    pub fn flush(&self) -> usize {
        flush(&self.0.tx)
    }

    /// Write counters.
    pub fn stats(&self) -> &EventStats {
        &self.0.stats
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.0.path
    }
}

fn flush(tx: &SyncSender<Message>) -> usize {
    let (reply, done) = mpsc::sync_channel(1);
    if tx.send(Message::Flush(reply)).is_err() {
        return 0;
    }
    done.recv().unwrap_or(0)
}

struct Writer {
    path: PathBuf,
    conn: Option<Connection>,
    pending: VecDeque<EventRow>,
    capacity: usize,
    stats: Arc<EventStats>,
    warned: bool,
    /// Events pushed since the last write attempt.
    unwritten: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<Message>) {
        loop {
            let timeout = if self.pending.is_empty() {
                Duration::from_secs(3600)
            } else {
                RETRY_EVERY
            };
            match rx.recv_timeout(timeout) {
                Ok(first) => {
                    // Take whatever else is queued so a burst is one transaction.
                    self.handle(first);
                    while let Ok(msg) = rx.try_recv() {
                        self.handle(msg);
                    }
                    if self.unwritten {
                        self.write_pending();
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.write_pending(),
                Err(RecvTimeoutError::Disconnected) => {
                    self.write_pending();
                    if !self.pending.is_empty() {
                        tracing::warn!(lost = self.pending.len(), path = %self.path.display(), "api_events: could not write events before shutdown");
                    }
                    return;
                }
            }
        }
    }

    fn handle(&mut self, msg: Message) {
        match msg {
            Message::Event(row) => self.push(row),
            Message::Flush(reply) => {
                self.write_pending();
                let _ = reply.send(self.pending.len());
            }
        }
    }

    fn push(&mut self, row: EventRow) {
        if self.pending.len() >= self.capacity {
            let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(dropped = n, "api_events queue is full; event dropped");
            return;
        }
        self.pending.push_back(row);
        self.unwritten = true;
    }

    fn write_pending(&mut self) {
        self.unwritten = false;
        if self.pending.is_empty() {
            return;
        }
        if self.conn.is_none() {
            match open_database(&self.path) {
                Ok(conn) => self.conn = Some(conn),
                Err(e) => return self.write_failed(&e),
            }
        }
        let conn = self.conn.as_mut().expect("opened above");
        let result = insert_all(conn, &self.pending);
        match result {
            Ok(()) => {
                self.stats
                    .written
                    .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
                self.pending.clear();
                if self.warned {
                    tracing::info!(path = %self.path.display(), "api_events: database usable again");
                    self.warned = false;
                }
            }
            Err(e) => self.write_failed(&e),
        }
    }

    fn write_failed(&mut self, e: &rusqlite::Error) {
        // A connection that failed may be stale (file removed, locked).
        self.conn = None;
        self.stats.failed_writes.fetch_add(1, Ordering::Relaxed);
        if !self.warned {
            tracing::warn!(path = %self.path.display(), error = %e, waiting = self.pending.len(), "api_events: cannot write; will retry");
            self.warned = true;
        }
    }
}

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

fn insert_all(conn: &mut Connection, rows: &VecDeque<EventRow>) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO api_events (event_type, api_name, timestamp, success, detail, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for r in rows {
            stmt.execute(params![
                r.event_type,
                r.api_name,
                r.timestamp,
                r.success,
                r.detail,
                r.run_id
            ])?;
        }
    }
    tx.commit()
}

/// Read the latest `limit` rows, newest first.
pub fn latest(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<(i64, EventRow)>> {
    crate::health::query(
        conn,
        &crate::health::Filter {
            limit,
            ..Default::default()
        },
    )
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` in UTC, as the application's ORM writes it.
pub fn utc_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01 00:00:00.000000");
        let t = UNIX_EPOCH + Duration::from_micros(1_709_164_800_123_456); // 2024-02-29
        assert_eq!(utc_timestamp(t), "2024-02-29 00:00:00.123456");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799); // 2099-12-31 23:59:59
        assert_eq!(utc_timestamp(t), "2099-12-31 23:59:59.000000");
    }

    fn row(kind: &str) -> EventRow {
        EventRow {
            event_type: kind.into(),
            api_name: "auth".into(),
            timestamp: utc_timestamp(SystemTime::now()),
            success: true,
            detail: Some("{}".into()),
            run_id: None,
        }
    }

    #[test]
    fn writes_into_a_new_directory_and_flushes() {
        let dir = std::env::temp_dir().join(format!("tm-events-{}", std::process::id()));
        let path = dir.join("nested/events.db");
        let store = EventStore::open(&path);
        store.record(row("TOKEN_ACQUIRED"));
        assert_eq!(store.flush(), 0);
        let conn = Connection::open(&path).unwrap();
        let rows = latest(&conn, 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].1.event_type, "TOKEN_ACQUIRED");
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn full_queue_drops_and_counts() {
        // A directory where the file should be: never writable.
        let dir = std::env::temp_dir().join(format!("tm-events-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = EventStore::with_capacity(&dir, 2);
        for _ in 0..10 {
            store.record(row("TOKEN_FAILED"));
        }
        let waiting = store.flush();
        assert!(waiting <= 2, "{waiting}");
        assert!(store.stats().dropped() >= 6, "{}", store.stats().dropped());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
