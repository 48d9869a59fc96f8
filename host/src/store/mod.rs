//! The databases `api_events` can live in, behind one interface: SQLite
//! (one machine) and PostgreSQL (many instances).
//!
//! Each backend keeps its SQL in its own module; everything above this
//! (the writer thread, `events`, `health`) is written once.

mod pg;
mod pg_tls;
pub mod sqlite;

use crate::config::DatabaseUrl;
use crate::events::EventRow;
use crate::health::Filter;
use std::fmt;

/// Run `f` on a plain thread and return its result. The sync PostgreSQL
/// client drives its own small runtime, which panics when started inside
/// another: callers in async code (the CLI, tests) use a [`Database`]
/// through this. A panic in `f` resumes in the caller.
pub fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join()).unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// An open events database.
pub enum Database {
    /// A SQLite file.
    Sqlite(rusqlite::Connection),
    /// A PostgreSQL server.
    Postgres(pg::Session),
}

/// A database operation that failed. The message names the database but
/// never its password.
#[derive(Debug)]
pub struct StoreError {
    message: String,
    outcome_unknown: bool,
}

impl StoreError {
    pub(crate) fn new(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            outcome_unknown: false,
        }
    }

    /// The connection broke after the write was sent: the rows may or may
    /// not be in the database.
    pub fn outcome_unknown(&self) -> bool {
        self.outcome_unknown
    }

    pub(crate) fn outcome_unknown_after_sending(mut self) -> StoreError {
        self.outcome_unknown = true;
        self
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::new(e.to_string())
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        // `Display` of a server error is only "db error"; the detail is in
        // the source chain. Neither carries connection parameters.
        let mut message = e.to_string();
        if let Some(db) = e.as_db_error() {
            message = format!("{message}: {}", db.message());
        } else if let Some(source) = std::error::Error::source(&e) {
            message = format!("{message}: {source}");
        }
        StoreError::new(message)
    }
}

impl Database {
    /// Open for writing, creating the `api_events` table (and a SQLite
    /// file with its directory) when absent.
    pub fn open(url: &DatabaseUrl) -> Result<Database, StoreError> {
        match url {
            DatabaseUrl::Sqlite(path) => Ok(Database::Sqlite(sqlite::open_database(path)?)),
            DatabaseUrl::Postgres(pg) => {
                pg::open(pg).map(|c| Database::Postgres(pg::Session::new(c)))
            }
        }
    }

    /// Open for reading, or `None` when there are no events yet (no SQLite
    /// file, or no `api_events` table). Creates nothing.
    pub fn open_existing(url: &DatabaseUrl) -> Result<Option<Database>, StoreError> {
        match url {
            DatabaseUrl::Sqlite(path) => Ok(sqlite::open_existing(path)?.map(Database::Sqlite)),
            DatabaseUrl::Postgres(pg) => {
                Ok(pg::open_existing(pg)?.map(|c| Database::Postgres(pg::Session::new(c))))
            }
        }
    }

    /// Insert `rows` in one transaction: all or none.
    pub fn insert(&mut self, rows: &[EventRow]) -> Result<(), StoreError> {
        match self {
            Database::Sqlite(c) => Ok(sqlite::insert(c, rows)?),
            Database::Postgres(s) => s.insert(rows),
        }
    }

    /// Whether a row equal in every column (but the id) is present.
    pub fn contains(&mut self, row: &EventRow) -> Result<bool, StoreError> {
        match self {
            Database::Sqlite(c) => Ok(sqlite::contains(c, row)?),
            Database::Postgres(s) => Ok(pg::contains(&mut s.client, row)?),
        }
    }

    /// The rows matching `filter`, newest first.
    pub fn query(&mut self, filter: &Filter) -> Result<Vec<(i64, EventRow)>, StoreError> {
        match self {
            Database::Sqlite(c) => Ok(sqlite::query(c, filter)?),
            Database::Postgres(s) => Ok(pg::query(&mut s.client, filter)?),
        }
    }

    /// The highest id so far (0 for none).
    pub fn max_id(&mut self) -> Result<i64, StoreError> {
        match self {
            Database::Sqlite(c) => Ok(sqlite::max_id(c)?),
            Database::Postgres(s) => Ok(pg::max_id(&mut s.client)?),
        }
    }

    /// The newest successful acquisition or refresh: timestamp and detail.
    pub fn last_success(&mut self) -> Result<Option<(String, Option<String>)>, StoreError> {
        match self {
            Database::Sqlite(c) => Ok(sqlite::last_success(c)?),
            Database::Postgres(s) => Ok(pg::last_success(&mut s.client)?),
        }
    }

    /// `TOKEN_FAILED` rows at or after `since`.
    pub fn failures_since(&mut self, since: &str) -> Result<i64, StoreError> {
        match self {
            Database::Sqlite(c) => Ok(sqlite::failures_since(c, since)?),
            Database::Postgres(s) => Ok(pg::failures_since(&mut s.client, since)?),
        }
    }

    /// The most frequent `TOKEN_FAILED` detail at or after `since`, with its count.
    pub fn top_failure(&mut self, since: &str) -> Result<Option<(String, i64)>, StoreError> {
        match self {
            Database::Sqlite(c) => Ok(sqlite::top_failure(c, since)?),
            Database::Postgres(s) => Ok(pg::top_failure(&mut s.client, since)?),
        }
    }
}
