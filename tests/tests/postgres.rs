//! `api_events` on a real PostgreSQL server: the application's columns, a
//! server restart with events queued, two host processes at once, TLS, and
//! the listing and health queries.
//!
//! Each test starts its own server (`token_e2e::pg_server`); without one
//! they skip loudly, except under CI, where they fail.

use std::process::Command;
use std::time::SystemTime;
use token_e2e::pg_server::PgServer;
use token_e2e::{Harness, detail, read_rows};
use token_host::endpoint::{EndpointConfig, Scripted};
use token_host::events::{EventRow, utc_timestamp};
use token_host::health::{Filter, health};
use token_host::store::{Database, blocking};
use token_host::{DatabaseUrl, EventStore};

fn store(url: &str) -> EventStore {
    EventStore::open(DatabaseUrl::parse(url).expect("a PostgreSQL URL"))
}

async fn harness(url: &str) -> Harness {
    let url = url.to_owned();
    Harness::with_events(EndpointConfig::default(), |_| {}, move |_| store(&url)).await
}

#[tokio::test]
async fn events_land_in_postgres_with_the_application_columns() {
    let Some(pg) = PgServer::running() else {
        return;
    };
    // No sslmode: libpq's `prefer`, plain text with this server (no TLS).
    let url = pg.create_database("app").replace("?sslmode=disable", "");
    let h = harness(&url).await;
    h.manager.get_token().await.unwrap();
    h.manager.force_refresh().await.unwrap();
    h.endpoint.script([Scripted::status(401, "")]);
    assert_eq!(h.manager.force_refresh().await, None);

    let rows = h.rows();
    let kinds: Vec<_> = rows.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(kinds, ["TOKEN_ACQUIRED", "TOKEN_REFRESHED", "TOKEN_FAILED"]);
    assert_eq!(
        rows.iter().map(|r| r.success).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert_eq!(detail(&rows[2])["status_code"], 401);

    let columns = pg.psql(
        "app",
        "SELECT column_name, data_type, is_nullable, COALESCE(column_default, '') \
         FROM information_schema.columns WHERE table_name = 'api_events' ORDER BY ordinal_position",
    );
    assert_eq!(
        columns,
        "id|integer|NO|nextval('api_events_id_seq'::regclass)\n\
         event_type|character varying|NO|\n\
         api_name|character varying|NO|\n\
         timestamp|timestamp without time zone|NO|\n\
         success|boolean|NO|\n\
         detail|text|YES|\n\
         run_id|integer|YES|"
    );
    // Stored in UTC: within a minute of the server's own UTC clock, and
    // read back in the application's text form by another client.
    assert_eq!(
        pg.psql(
            "app",
            "SELECT bool_and(abs(extract(epoch FROM (now() AT TIME ZONE 'UTC') - timestamp)) < 60) FROM api_events"
        ),
        "t"
    );
    let first = pg.psql(
        "app",
        "SELECT to_char(timestamp, 'YYYY-MM-DD HH24:MI:SS.US') FROM api_events ORDER BY id LIMIT 1",
    );
    assert_eq!(first, rows[0].timestamp);
    assert_eq!(
        pg.psql(
            "app",
            "SELECT string_agg(success::text, ',' ORDER BY id), count(run_id) FROM api_events"
        ),
        "true,true,false|0"
    );
    let everything = pg.psql("app", "SELECT string_agg(detail, ' ') FROM api_events");
    let config = h.endpoint.config();
    for secret in [&config.client_id, &config.client_secret]
        .into_iter()
        .chain(h.endpoint.issued_tokens().iter())
    {
        assert!(
            !everything.contains(secret.as_str()),
            "a secret is in api_events"
        );
    }
}

#[tokio::test]
async fn queued_events_survive_a_server_restart_without_duplicates() {
    let Some(mut pg) = PgServer::running() else {
        return;
    };
    let url = pg.create_database("restart");
    let h = harness(&url).await;
    h.manager.get_token().await.unwrap();
    assert_eq!(h.events.flush(), 0);

    pg.stop();
    for _ in 0..3 {
        // Tokens keep coming while the event database is down.
        assert!(h.manager.force_refresh().await.is_some());
    }
    assert_eq!(h.events.flush(), 3, "the three refreshes wait in the queue");
    assert!(h.events.stats().failed_writes() >= 1);

    pg.start();
    assert_eq!(h.events.flush(), 0, "written after the restart");
    assert_eq!(h.events.stats().written(), 4);
    let rows = h.rows();
    let kinds: Vec<_> = rows.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "TOKEN_ACQUIRED",
            "TOKEN_REFRESHED",
            "TOKEN_REFRESHED",
            "TOKEN_REFRESHED"
        ]
    );
    assert_eq!(
        pg.psql(
            "restart",
            "SELECT count(DISTINCT detail::json->>'token_fingerprint') FROM api_events"
        ),
        "4"
    );
}

#[tokio::test]
async fn a_table_locked_by_another_client_delays_events_not_tokens() {
    let Some(pg) = PgServer::running() else {
        return;
    };
    let url = pg.create_database("locked");
    let h = harness(&url).await;
    h.manager.get_token().await.unwrap();
    assert_eq!(h.events.flush(), 0);

    // A migration-like transaction holds the table until we end it, well
    // past the writer's default lock_timeout (5 s).
    let mut locker = pg
        .psql_command(
            "locked",
            "BEGIN; LOCK TABLE api_events IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600); COMMIT;",
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let held = "SELECT count(*) FROM pg_locks WHERE relation = 'api_events'::regclass \
                AND mode = 'AccessExclusiveLock' AND granted";
    while pg.psql("locked", held) != "1" {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        h.manager.force_refresh().await.is_some(),
        "the token is not held up"
    );
    assert_eq!(
        h.events.flush(),
        1,
        "the insert gave up on the lock; the row waits"
    );
    assert!(h.events.stats().failed_writes() >= 1);

    pg.psql(
        "locked",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()",
    );
    let _ = locker.wait();
    assert_eq!(h.events.flush(), 0);
    let kinds: Vec<_> = h.rows().into_iter().map(|r| r.event_type).collect();
    assert_eq!(kinds, ["TOKEN_ACQUIRED", "TOKEN_REFRESHED"]);
}

#[test]
fn two_host_processes_write_every_event_once() {
    let Some(pg) = PgServer::running() else {
        return;
    };
    // No table yet: both processes create it at the same moment.
    let url = pg.create_database("shared");
    const REFRESHES: usize = 150;
    let writers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_event-writer"))
                .args([&url, &REFRESHES.to_string()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start event-writer")
        })
        .collect();
    for writer in writers {
        let out = writer.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "event-writer failed: {stderr}");
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(stats["written"], REFRESHES + 1, "{stats} {stderr}");
        assert_eq!(stats["waiting"], 0);
        assert!(!stderr.contains(pg.password()), "password in the log");
    }
    let total = 2 * (REFRESHES + 1);
    assert_eq!(
        pg.psql(
            "shared",
            "SELECT count(*), count(DISTINCT detail::json->>'token_fingerprint'), \
             count(*) FILTER (WHERE event_type = 'TOKEN_ACQUIRED') FROM api_events"
        ),
        format!("{total}|{total}|2"),
        "every event once: as many rows as distinct tokens"
    );
}

#[tokio::test]
async fn events_and_health_read_postgres_like_sqlite() {
    let Some(pg) = PgServer::running() else {
        return;
    };
    let url = pg.create_database("health");
    let database = DatabaseUrl::parse(&url).unwrap();
    assert!(
        blocking(|| Database::open_existing(&database).unwrap().is_none()),
        "no table yet: nothing to read, and nothing created"
    );
    let before = utc_timestamp(SystemTime::now());
    let h = harness(&url).await;
    h.manager.get_token().await.unwrap();
    h.endpoint.script([
        Scripted::status(401, r#"{"error":"invalid_client"}"#),
        Scripted::status(403, ""),
        Scripted::status(403, ""),
    ]);
    for _ in 0..3 {
        assert_eq!(h.manager.force_refresh().await, None);
    }
    assert_eq!(h.events.flush(), 0);

    let (failed, typed, since, after, report) = blocking(|| {
        let mut db = Database::open_existing(&database).unwrap().unwrap();
        let all = Filter {
            limit: 100,
            ..Filter::default()
        };
        let failed = db
            .query(&Filter {
                failed: true,
                ..all.clone()
            })
            .unwrap();
        let typed = db
            .query(&Filter {
                event_type: Some("TOKEN_ACQUIRED".into()),
                ..all.clone()
            })
            .unwrap();
        let since = db
            .query(&Filter {
                since: Some("2999-01-01 00:00:00.000000".into()),
                ..all.clone()
            })
            .unwrap()
            .len()
            + db.query(&Filter {
                since: Some(before.clone()),
                ..all.clone()
            })
            .unwrap()
            .len();
        let first_id = typed[0].0;
        let after = db
            .query(&Filter {
                after_id: Some(first_id),
                ..all.clone()
            })
            .unwrap();
        (
            failed,
            typed,
            since,
            after,
            health(&mut db, SystemTime::now()).unwrap(),
        )
    });
    assert_eq!(failed.len(), 3);
    assert!(
        failed
            .iter()
            .all(|(_, r)| !r.success && r.event_type == "TOKEN_FAILED")
    );
    assert!(failed.windows(2).all(|w| w[0].0 > w[1].0), "newest first");
    assert_eq!(typed.len(), 1);
    assert_eq!(since, 4, "nothing after 2999, all four after the start");
    assert_eq!(after.len(), 3);

    assert_eq!(report.failures_last_hour, 3);
    assert_eq!(report.failures_last_day, 3);
    let (top, count) = report.top_failure.clone().unwrap();
    assert_eq!(count, 2);
    assert!(top.contains("403"), "{top}");
    let (ts, lifetime) = report.last_success.clone().unwrap();
    assert_eq!(ts, typed[0].1.timestamp);
    assert_eq!(lifetime, Some(3600));

    // The same questions give the same answers on SQLite.
    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite = DatabaseUrl::from(sqlite_dir.path().join("events.db"));
    let copy = EventStore::open(sqlite.clone());
    for (_, row) in read_rows(&database) {
        copy.record(row);
    }
    assert_eq!(copy.flush(), 0);
    let mut db = Database::open_existing(&sqlite).unwrap().unwrap();
    let mirror = health(&mut db, SystemTime::now()).unwrap();
    assert_eq!(mirror, report);
}

/// A CA, and a server certificate it signs for 127.0.0.1 only.
fn certificates(dir: &std::path::Path) -> (String, String, String) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=token-manager test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "other.key",
                "-out",
                "other.pem",
                "-days",
                "2",
                "-subj",
                "/CN=another CA",
            ],
        ]
        .concat(),
    );
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    (read("server.pem"), read("server.key"), read("ca.pem"))
}

#[test]
fn tls_follows_sslmode_against_a_server_that_requires_it() {
    let Some(mut pg) = PgServer::init() else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificates(scratch.path());
    let cert = pg.write_file("server.pem", &cert, 0o600);
    let key = pg.write_file("server.key", &key, 0o600);
    pg.set("ssl", "on");
    pg.set("ssl_cert_file", cert.to_str().unwrap());
    pg.set("ssl_key_file", key.to_str().unwrap());
    // TLS or nothing: a connection that gets in was encrypted.
    pg.hba("local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n");
    pg.start();

    let ca = scratch.path().join("ca.pem");
    let other = scratch.path().join("other.pem");
    let writes = |host: &str, query: &str| -> bool {
        let url = format!(
            "postgresql://tm:{}@{host}:{}/postgres?{query}",
            pg.password(),
            pg.port()
        );
        let events = store(&url);
        events.record(EventRow {
            event_type: "TOKEN_ACQUIRED".into(),
            api_name: "auth".into(),
            timestamp: utc_timestamp(SystemTime::now()),
            success: true,
            detail: Some(format!("{{\"query\":\"{host} {query}\"}}")),
            run_id: None,
        });
        events.flush() == 0
    };
    let ca = ca.display();
    let other = other.display();
    assert!(writes(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}")
    ));
    assert!(
        writes("127.0.0.1", "sslmode=require"),
        "require encrypts without checking"
    );
    assert!(
        writes("127.0.0.1", ""),
        "prefer (the default) encrypts when offered"
    );
    assert!(
        !writes("127.0.0.1", "sslmode=disable"),
        "the server refuses plain text"
    );
    assert!(
        !writes("127.0.0.1", "sslmode=verify-full"),
        "not signed by a public CA"
    );
    assert!(
        !writes(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={other}")
        ),
        "another CA"
    );
    assert!(
        !writes("127.0.0.1", &format!("sslmode=require&sslrootcert={other}")),
        "require + root cert checks, as libpq"
    );
    assert!(
        writes("localhost", &format!("sslmode=verify-ca&sslrootcert={ca}")),
        "verify-ca ignores the name"
    );
    assert!(
        !writes(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}")
        ),
        "the certificate names 127.0.0.1, not localhost"
    );
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM api_events"), "4");
}

/// The fixture itself: parallel tests can race for a port.
#[test]
fn a_server_whose_port_was_taken_starts_on_another() {
    let Some(mut pg) = PgServer::init() else {
        return;
    };
    let taken = pg.port();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", taken)).unwrap();
    pg.start();
    assert_ne!(pg.port(), taken);
    assert_eq!(pg.psql("postgres", "SELECT 1"), "1");
}
