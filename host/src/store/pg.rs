//! `api_events` on a PostgreSQL server, with the SQLite table's columns and
//! value semantics: `timestamp without time zone` in UTC, `success` boolean,
//! `id` serial.

use super::{StoreError, pg_tls};
use crate::config::{PostgresUrl, TlsMode};
use crate::events::EventRow;
use crate::health::Filter;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row};

/// The table as SQLAlchemy creates the application's model on PostgreSQL.
/// `run_id` references `runs` only where that table exists: PostgreSQL,
/// unlike the application's SQLite, enforces the reference.
const DDL: &str = "CREATE TABLE IF NOT EXISTS api_events (
    id          SERIAL PRIMARY KEY,
    event_type  VARCHAR(50) NOT NULL,
    api_name    VARCHAR(50) NOT NULL,
    timestamp   TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    success     BOOLEAN NOT NULL,
    detail      TEXT,
    run_id      INTEGER{runs_fk}
)";

/// Serialises table creation between hosts starting at once: `CREATE TABLE
/// IF NOT EXISTS` is not atomic in PostgreSQL, and the loser of the race
/// fails on the catalogue's unique index. (Any constant; "api_events" in
/// ASCII.)
const CREATE_LOCK: i64 = 0x6170_695f_6576_656e;

/// Timestamps read back in the exact text form SQLite holds.
const COLUMNS: &str = "id::bigint, event_type, api_name, \
    to_char(timestamp, 'YYYY-MM-DD HH24:MI:SS.US'), success, detail, run_id::bigint";

/// All rows in one statement (one round trip, atomic without a
/// transaction block); `ORDER BY n` keeps the ids in queue order.
const INSERT: &str = "INSERT INTO api_events (event_type, api_name, timestamp, success, detail, run_id) \
    SELECT event_type, api_name, timestamp::timestamp, success, detail, run_id::integer \
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::bigint[]) \
    WITH ORDINALITY AS t(event_type, api_name, timestamp, success, detail, run_id, n) ORDER BY n";

/// A connection with its insert statement, prepared on first use.
pub struct Session {
    pub(super) client: Client,
    insert: Option<postgres::Statement>,
}

impl Session {
    pub(super) fn new(client: Client) -> Session {
        Session {
            client,
            insert: None,
        }
    }

    /// One statement for all rows. Only a refusal by the server is
    /// certainly not stored: a connection that breaks after sending leaves
    /// the outcome unknown, and says so.
    pub(super) fn insert(&mut self, rows: &[EventRow]) -> Result<(), StoreError> {
        let statement = match &self.insert {
            Some(s) => s.clone(),
            None => self.insert.insert(self.client.prepare(INSERT)?).clone(),
        };
        let column = |f: fn(&EventRow) -> &str| rows.iter().map(f).collect::<Vec<_>>();
        let result = self.client.execute(
            &statement,
            &[
                &column(|r| &r.event_type),
                &column(|r| &r.api_name),
                &column(|r| &r.timestamp),
                &rows.iter().map(|r| r.success).collect::<Vec<_>>(),
                &rows.iter().map(|r| r.detail.as_deref()).collect::<Vec<_>>(),
                &rows.iter().map(|r| r.run_id).collect::<Vec<_>>(),
            ],
        );
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_db_error().is_some() => Err(e.into()),
            Err(e) => Err(StoreError::from(e).outcome_unknown_after_sending()),
        }
    }
}

/// Connect and create the table when absent.
pub(super) fn open(url: &PostgresUrl) -> Result<Client, StoreError> {
    let mut client = connect(url)?;
    let mut tx = client.transaction()?;
    tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({CREATE_LOCK})"))?;
    let has_runs: bool = tx
        .query_one("SELECT to_regclass('runs') IS NOT NULL", &[])?
        .get(0);
    let runs_fk = if has_runs { " REFERENCES runs(id)" } else { "" };
    tx.batch_execute(&DDL.replace("{runs_fk}", runs_fk))?;
    tx.commit()?;
    Ok(client)
}

/// Connect for reading; `None` when there is no `api_events` table yet.
pub(super) fn open_existing(url: &PostgresUrl) -> Result<Option<Client>, StoreError> {
    let mut client = connect(url)?;
    let exists: bool = client
        .query_one("SELECT to_regclass('api_events') IS NOT NULL", &[])?
        .get(0);
    Ok(exists.then_some(client))
}

fn connect(url: &PostgresUrl) -> Result<Client, StoreError> {
    let connected = match url.tls {
        TlsMode::Disable => url.config.connect(NoTls),
        _ => url.config.connect(pg_tls::connector(url)?),
    };
    connected
        .map_err(|e| StoreError::new(format!("cannot connect to {url}: {}", StoreError::from(e))))
}

/// A row's columns in the table's order ($1 … $6).
fn values(r: &EventRow) -> [&(dyn ToSql + Sync); 6] {
    [
        &r.event_type,
        &r.api_name,
        &r.timestamp,
        &r.success,
        &r.detail,
        &r.run_id,
    ]
}

pub(super) fn contains(client: &mut Client, r: &EventRow) -> Result<bool, postgres::Error> {
    let row = client.query_one(
        "SELECT EXISTS (SELECT 1 FROM api_events WHERE event_type = $1 AND api_name = $2 \
         AND timestamp = $3::text::timestamp AND success = $4 \
         AND detail IS NOT DISTINCT FROM $5 AND run_id IS NOT DISTINCT FROM $6::bigint)",
        &values(r),
    )?;
    Ok(row.get(0))
}

pub(super) fn query(
    client: &mut Client,
    filter: &Filter,
) -> Result<Vec<(i64, EventRow)>, postgres::Error> {
    let mut sql = format!("SELECT {COLUMNS} FROM api_events WHERE true");
    let mut args: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, value: Box<dyn ToSql + Sync>| {
        args.push(value);
        sql.push_str(&clause.replace('?', &format!("${}", args.len())));
    };
    if let Some(after) = filter.after_id {
        arg(&mut sql, " AND id > ?::bigint", Box::new(after));
    }
    if let Some(since) = &filter.since {
        arg(
            &mut sql,
            " AND timestamp >= ?::text::timestamp",
            Box::new(since.clone()),
        );
    }
    if let Some(t) = &filter.event_type {
        arg(&mut sql, " AND event_type = ?", Box::new(t.clone()));
    }
    if filter.failed {
        sql.push_str(" AND NOT success");
    }
    arg(
        &mut sql,
        " ORDER BY id DESC LIMIT ?::bigint",
        Box::new(i64::from(filter.limit)),
    );
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
    Ok(client
        .query(&sql, &params)?
        .iter()
        .map(|r| (r.get(0), event_row(r)))
        .collect())
}

fn event_row(r: &Row) -> EventRow {
    EventRow {
        event_type: r.get(1),
        api_name: r.get(2),
        timestamp: r.get(3),
        success: r.get(4),
        detail: r.get(5),
        run_id: r.get(6),
    }
}

pub(super) fn max_id(client: &mut Client) -> Result<i64, postgres::Error> {
    Ok(client
        .query_one("SELECT COALESCE(MAX(id), 0)::bigint FROM api_events", &[])?
        .get(0))
}

pub(super) fn last_success(
    client: &mut Client,
) -> Result<Option<(String, Option<String>)>, postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT to_char(timestamp, 'YYYY-MM-DD HH24:MI:SS.US'), detail FROM api_events \
             WHERE api_name = 'auth' AND success \
             AND event_type IN ('TOKEN_ACQUIRED', 'TOKEN_REFRESHED') ORDER BY id DESC LIMIT 1",
            &[],
        )?
        .map(|r| (r.get(0), r.get(1))))
}

pub(super) fn failures_since(client: &mut Client, since: &str) -> Result<i64, postgres::Error> {
    Ok(client
        .query_one(
            "SELECT COUNT(*) FROM api_events WHERE event_type = 'TOKEN_FAILED' \
             AND timestamp >= $1::text::timestamp",
            &[&since],
        )?
        .get(0))
}

pub(super) fn top_failure(
    client: &mut Client,
    since: &str,
) -> Result<Option<(String, i64)>, postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT COALESCE(detail, ''), COUNT(*) AS n FROM api_events \
             WHERE event_type = 'TOKEN_FAILED' AND timestamp >= $1::text::timestamp \
             GROUP BY detail ORDER BY n DESC, MAX(id) DESC LIMIT 1",
            &[&since],
        )?
        .map(|r| (r.get(0), r.get(1))))
}
