//! The `api_events` sink: rows written by a writer thread, off the token path.
//!
//! Recording never blocks and never fails the caller: a database that is
//! missing, locked, read-only or restarting costs a warning, and the rows
//! wait in a bounded queue until it can be written (or the store shuts down).

use crate::config::DatabaseUrl;
use crate::store::{Database, StoreError};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::store::sqlite::{API_EVENTS_DDL, latest, open_database};

/// Events held while the database is unusable; beyond this they are dropped
/// and counted.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;

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
    database: DatabaseUrl,
}

impl Drop for Inner {
    fn drop(&mut self) {
        flush(&self.tx);
    }
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("database", &self.0.database)
            .field("stats", &self.0.stats)
            .finish()
    }
}

impl EventStore {
    /// Start a writer for `database`: a SQLite path, or any [`DatabaseUrl`].
    /// The database (a SQLite file with its directory) is created on the
    /// first write; opening errors are not fatal.
    pub fn open(database: impl Into<DatabaseUrl>) -> EventStore {
        Self::with_capacity(database, DEFAULT_QUEUE_CAPACITY)
    }

    /// [`EventStore::open`] with a queue bound.
    pub fn with_capacity(database: impl Into<DatabaseUrl>, capacity: usize) -> EventStore {
        let database = database.into();
        let url = database.clone();
        let connect = move || Database::open(&url);
        let stats = Arc::new(EventStats::default());
        let tx = Writer::new(connect, capacity, stats.clone(), database.to_string()).spawn();
        EventStore(Arc::new(Inner {
            tx,
            stats,
            database,
        }))
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

    /// Where the events go.
    pub fn database(&self) -> &DatabaseUrl {
        &self.0.database
    }

    /// The SQLite file, when the events go to SQLite.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.0.database.sqlite_path()
    }
}

fn flush(tx: &SyncSender<Message>) -> usize {
    let (reply, done) = mpsc::sync_channel(1);
    if tx.send(Message::Flush(reply)).is_err() {
        return 0;
    }
    done.recv().unwrap_or(0)
}

/// Where the writer puts rows: the real [`Database`], or a scripted one in
/// the unit tests below.
trait Sink {
    fn insert(&mut self, rows: &[EventRow]) -> Result<(), StoreError>;
    fn contains(&mut self, row: &EventRow) -> Result<bool, StoreError>;
}

impl Sink for Database {
    fn insert(&mut self, rows: &[EventRow]) -> Result<(), StoreError> {
        Database::insert(self, rows)
    }
    fn contains(&mut self, row: &EventRow) -> Result<bool, StoreError> {
        Database::contains(self, row)
    }
}

struct Writer<S, C> {
    connect: C,
    conn: Option<S>,
    pending: VecDeque<EventRow>,
    capacity: usize,
    stats: Arc<EventStats>,
    /// For warnings: the database without its password.
    name: String,
    warned: bool,
    /// Events pushed since the last write attempt.
    unwritten: bool,
    /// The first rows of `pending` went out in a write whose answer was
    /// cut off: they may already be stored. Checked before resending,
    /// so a server restart never duplicates a row.
    unconfirmed: usize,
}

impl<S, C> Writer<S, C>
where
    S: Sink,
    C: FnMut() -> Result<S, StoreError> + Send + 'static,
{
    fn new(connect: C, capacity: usize, stats: Arc<EventStats>, name: String) -> Self {
        Writer {
            connect,
            conn: None,
            pending: VecDeque::new(),
            capacity,
            stats,
            name,
            warned: false,
            unwritten: false,
            unconfirmed: 0,
        }
    }

    fn spawn(self) -> SyncSender<Message>
    where
        S: Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(self.capacity.max(1));
        std::thread::Builder::new()
            .name("api-events-writer".into())
            .spawn(move || self.run(rx))
            .expect("spawn the api_events writer thread");
        tx
    }

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
                        tracing::warn!(lost = self.pending.len(), database = %self.name, "api_events: could not write events before shutdown");
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
        if let Err(e) = self.try_write() {
            // A connection that failed may be stale (server restarted,
            // file removed): start afresh next time.
            self.conn = None;
            self.stats.failed_writes.fetch_add(1, Ordering::Relaxed);
            if !self.warned {
                tracing::warn!(database = %self.name, error = %e, waiting = self.pending.len(), "api_events: cannot write; will retry");
                self.warned = true;
            }
        }
    }

    fn try_write(&mut self) -> Result<(), StoreError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert((self.connect)()?),
        };
        if self.unconfirmed > 0 {
            // One transaction: its last row tells whether all of it landed.
            if conn.contains(&self.pending[self.unconfirmed - 1])? {
                self.stats
                    .written
                    .fetch_add(self.unconfirmed as u64, Ordering::Relaxed);
                self.pending.drain(..self.unconfirmed);
            }
            self.unconfirmed = 0;
        }
        if !self.pending.is_empty() {
            let batch = self.pending.make_contiguous();
            if let Err(e) = conn.insert(batch) {
                if e.outcome_unknown() {
                    self.unconfirmed = batch.len();
                }
                return Err(e);
            }
            self.stats
                .written
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.pending.clear();
        }
        if self.warned {
            tracing::info!(database = %self.name, "api_events: database usable again");
            self.warned = false;
        }
        Ok(())
    }
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
    use rusqlite::Connection;
    use std::sync::Mutex;

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

    /// A database that stores the first batch but reports the connection
    /// lost before it could answer, as a server restart can.
    #[derive(Clone, Default)]
    struct Flaky {
        stored: Arc<Mutex<Vec<EventRow>>>,
        cut_commits: Arc<AtomicU64>,
        fail_connects: Arc<AtomicU64>,
    }

    impl Sink for Flaky {
        fn insert(&mut self, rows: &[EventRow]) -> Result<(), StoreError> {
            self.stored.lock().unwrap().extend_from_slice(rows);
            if self.cut_commits.load(Ordering::SeqCst) > 0 {
                self.cut_commits.fetch_sub(1, Ordering::SeqCst);
                return Err(StoreError::new("connection closed").outcome_unknown_after_sending());
            }
            Ok(())
        }
        fn contains(&mut self, row: &EventRow) -> Result<bool, StoreError> {
            Ok(self.stored.lock().unwrap().contains(row))
        }
    }

    fn writer_for(
        db: &Flaky,
    ) -> Writer<Flaky, impl FnMut() -> Result<Flaky, StoreError> + Send + use<>> {
        let db2 = db.clone();
        let connect = move || {
            if db2.fail_connects.load(Ordering::SeqCst) > 0 {
                db2.fail_connects.fetch_sub(1, Ordering::SeqCst);
                return Err(StoreError::new("connection refused"));
            }
            Ok(db2.clone())
        };
        Writer::new(connect, 100, Arc::new(EventStats::default()), "test".into())
    }

    fn numbered(n: usize) -> EventRow {
        EventRow {
            detail: Some(format!("{{\"n\":{n}}}")),
            timestamp: "2026-12-03 10:00:00.000000".into(),
            ..row("TOKEN_REFRESHED")
        }
    }

    #[test]
    fn a_cut_off_write_that_landed_is_not_sent_again() {
        let db = Flaky::default();
        db.cut_commits.store(1, Ordering::SeqCst);
        db.fail_connects.store(0, Ordering::SeqCst);
        let mut w = writer_for(&db);
        w.push(numbered(1));
        w.push(numbered(2));
        w.write_pending();
        assert_eq!(w.unconfirmed, 2);
        // The server restarts; the next attempt reconnects (after one refusal).
        db.fail_connects.store(1, Ordering::SeqCst);
        w.push(numbered(3));
        w.write_pending();
        assert_eq!(
            w.pending.len(),
            3,
            "nothing resolved while the server is down"
        );
        w.write_pending();
        let stored = db.stored.lock().unwrap().clone();
        assert_eq!(stored, [numbered(1), numbered(2), numbered(3)]);
        assert!(w.pending.is_empty());
        assert_eq!(w.stats.written(), 3);
        assert_eq!(w.stats.failed_writes(), 2);
    }

    #[test]
    fn a_cut_off_write_that_did_not_land_is_sent_again() {
        let db = Flaky::default();
        db.cut_commits.store(1, Ordering::SeqCst);
        let mut w = writer_for(&db);
        w.push(numbered(1));
        w.write_pending();
        // The server rolled it back after all.
        db.stored.lock().unwrap().clear();
        w.write_pending();
        assert_eq!(*db.stored.lock().unwrap(), [numbered(1)]);
        assert_eq!(w.stats.written(), 1);
    }
}
