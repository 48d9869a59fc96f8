//! A throwaway PostgreSQL server for tests: `initdb` into a temporary
//! directory, started on a free loopback port, stopped and deleted on drop.
//!
//! Uses the server binaries of Debian's `postgresql` package (`.ci/run`
//! installs it when missing). Where no server can be started, [`PgServer::init`]
//! prints a loud SKIPPED banner and returns `None`, unless
//! `TOKEN_MANAGER_REQUIRE_POSTGRES` or `CI` is set: then it panics, so CI
//! never skips these tests. Std only: `host/tests/cli.rs` includes this file too.

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

/// The superuser the tests connect as.
pub const USER: &str = "tm";

/// One server, owned by the test that started it.
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    password: String,
    /// `runuser -u postgres`, when the tests run as root (PostgreSQL refuses root).
    run_as: Option<(u32, u32)>,
    settings: Vec<(String, String)>,
    running: bool,
    started_once: bool,
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn required() -> bool {
    ["TOKEN_MANAGER_REQUIRE_POSTGRES", "CI"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty() && v != "0" && v != "false"))
}

fn unavailable(why: &str) -> Option<PgServer> {
    if required() {
        panic!(
            "PostgreSQL tests are required here (CI or TOKEN_MANAGER_REQUIRE_POSTGRES) but no server can start: {why}"
        );
    }
    eprintln!(
        "\n{bar}\nSKIPPED: PostgreSQL test, no server can start here: {why}\nInstall Debian's `postgresql` package (.ci/run does) to run it.\n{bar}\n",
        bar = "!".repeat(72)
    );
    None
}

/// The directory holding `initdb`, `pg_ctl` and `psql`: `$PG_BIN`, the
/// newest `/usr/lib/postgresql/*/bin`, or `initdb` on `PATH`.
fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

/// A free loopback port below Linux's ephemeral range (32768 and up), and
/// never one this process handed out before. A port from `bind(0)` is
/// ephemeral: while a restart test has its server stopped, any outgoing
/// connection or another `bind(0)` may take it, and the restart fails.
fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let random = RandomState::new();
    let port = (0u32..10_000)
        .map(|attempt| 20_000 + (random.hash_one(attempt) % 12_000) as u16)
        .find(|port| !handed_out.contains(port) && TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free loopback port in 20000..32000");
    handed_out.push(port);
    port
}

fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:x}{:x}", std::process::id(), nanos)
}

fn check(what: &str, out: std::io::Result<Output>) -> Result<Output, String> {
    match out {
        Ok(o) if o.status.success() => Ok(o),
        Ok(o) => Err(format!(
            "{what} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Err(format!("{what} could not run: {e}")),
    }
}

impl PgServer {
    /// A new cluster, initialised but not started (so a test can configure
    /// it), or `None` after the SKIPPED banner.
    pub fn init() -> Option<PgServer> {
        let Some(bin) = find_bin() else {
            return unavailable("no initdb (looked in $PG_BIN, /usr/lib/postgresql/*/bin, PATH)");
        };
        let dir = std::env::temp_dir().join(format!("tm-pg-{}", unique()));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return unavailable(&format!("cannot create {}: {e}", dir.display()));
        }
        let is_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let run_as = if is_root {
            let id = |flag: &str| -> Option<u32> {
                let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
                String::from_utf8_lossy(&out.stdout).trim().parse().ok()
            };
            match (id("-u"), id("-g")) {
                (Some(u), Some(g)) => Some((u, g)),
                _ => {
                    return unavailable(
                        "running as root and there is no `postgres` user to run the server as",
                    );
                }
            }
        } else {
            None
        };
        let server = PgServer {
            dir,
            bin,
            port: free_port(),
            password: format!("pw-{}", unique()),
            run_as,
            // Tests need no durability; `set("fsync", "on")` restores it.
            settings: vec![
                ("fsync".into(), "off".into()),
                ("full_page_writes".into(), "off".into()),
            ],
            running: false,
            started_once: false,
        };
        server.own(&server.dir.clone());
        let pwfile = server.dir.join("pwfile");
        server.write_file("pwfile", &server.password.clone(), 0o600);
        let data = server.data_dir();
        let initdb = server.bin.join("initdb");
        let mut initdb = server.command(&initdb);
        initdb.args([
            "-D".as_ref(),
            data.as_os_str(),
            "-U".as_ref(),
            USER.as_ref(),
            "--auth-local=trust".as_ref(),
            "--auth-host=scram-sha-256".as_ref(),
            "--pwfile".as_ref(),
            pwfile.as_os_str(),
            "-E".as_ref(),
            "UTF8".as_ref(),
            "--no-sync".as_ref(),
        ]);
        if let Err(e) = check("initdb", initdb.output()) {
            return unavailable(&e);
        }
        Some(server)
    }

    /// A started server, or `None` after the SKIPPED banner.
    pub fn running() -> Option<PgServer> {
        let mut server = Self::init()?;
        server.start();
        Some(server)
    }

    /// Set a `postgresql.conf` setting for the next start.
    pub fn set(&mut self, name: &str, value: &str) {
        self.settings.retain(|(k, _)| k != name);
        self.settings.push((name.to_owned(), value.to_owned()));
    }

    /// Replace `pg_hba.conf`.
    pub fn hba(&self, rules: &str) {
        self.write_file("data/pg_hba.conf", rules, 0o600);
    }

    /// Write a file under the server's directory, owned by the server's user.
    pub fn write_file(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).expect("write a server file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        self.own(&path);
        path
    }

    fn own(&self, path: &Path) {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
        }
    }

    /// The server's own directory (certificates and the like go here).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &Path) -> Command {
        match self.run_as {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output, String> {
        let data = self.data_dir();
        let out = self
            .command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(args)
            .output();
        check("pg_ctl", out)
    }

    /// Start (or start again after [`PgServer::stop`]) on the same port.
    pub fn start(&mut self) {
        // The first start may lose its port to a parallel test between
        // picking and binding it: then it takes another. A restart keeps
        // its port, as clients hold URLs with it.
        let first = !self.started_once;
        for attempt in 1.. {
            match self.try_start() {
                Ok(()) => break,
                Err(log) if first && attempt < 5 && log.contains("could not bind") => {
                    self.port = free_port();
                }
                Err(log) => panic!("PostgreSQL did not start:\n{log}"),
            }
        }
        self.running = true;
        self.started_once = true;
    }

    fn try_start(&self) -> Result<(), String> {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        for (k, v) in &self.settings {
            options.push_str(&format!(" -c {k}={v}"));
        }
        let log = self.dir.join("server.log");
        let log = log.to_str().expect("UTF-8 temp path");
        self.pg_ctl(&["-l", log, "-w", "-t", "60", "-o", &options, "start"])
            .map(drop)
            .map_err(|e| format!("{e}\n{}", std::fs::read_to_string(log).unwrap_or_default()))
    }

    /// Stop the server (fast shutdown: connections are cut).
    pub fn stop(&mut self) {
        self.pg_ctl(&["stop", "-m", "fast", "-w"])
            .expect("pg_ctl stop");
        self.running = false;
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A URL for `database` with the password, no TLS.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://{USER}:{}@127.0.0.1:{}/{database}?sslmode=disable",
            self.password, self.port
        )
    }

    /// Create a database and return its [`PgServer::url`].
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// `psql` running `sql` in `database` (another client of the server).
    pub fn psql_command(&self, database: &str, sql: &str) -> Command {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10");
        psql
    }

    /// Run SQL with `psql` (an independent reader); unaligned rows, `|`-separated.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = self.psql_command(database, sql).output();
        let out = check("psql", out).unwrap_or_else(|e| panic!("{sql}: {e}"));
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }
}
