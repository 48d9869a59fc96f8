//! Configuration from the environment and `.env` (SPEC §2).
//!
//! The real environment wins over `.env`; `.env` is read, never applied to the
//! process environment, so nothing else in the process sees the secret.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use token_component::settings::{ClientAuth, DEFAULT_TOKEN_PATH, Endpoint, Settings, UrlError};

/// The variables the token manager reads.
pub mod vars {
    /// Gateway base URL.
    pub const BASE_URL: &str = "MMC_API_BASE_URL";
    /// OAuth2 client id.
    pub const CLIENT_ID: &str = "MMC_API_CLIENT_ID";
    /// OAuth2 client secret.
    pub const CLIENT_SECRET: &str = "MMC_API_CLIENT_SECRET";
    /// Token endpoint path.
    pub const TOKEN_PATH: &str = "MMC_API_TOKEN_PATH";
    /// Optional OAuth2 scope.
    pub const SCOPE: &str = "MMC_API_SCOPE";
    /// Optional OAuth2 audience.
    pub const AUDIENCE: &str = "MMC_API_AUDIENCE";
    /// `client_secret_post` (default) or `client_secret_basic`.
    pub const CLIENT_AUTH: &str = "MMC_API_CLIENT_AUTH";
    /// Where `api_events` lives.
    pub const DATABASE_URL: &str = "DATABASE_URL";
}

/// Default `DATABASE_URL` (SPEC §2).
pub const DEFAULT_DATABASE_URL: &str = "sqlite:///./data/brasilintel.db";

/// Host configuration: the component's settings and the event database.
#[derive(Clone, Debug)]
pub struct Config {
    /// Settings handed to the component (`Debug` redacts the credentials).
    pub settings: Settings,
    /// Where events are written.
    pub database: DatabaseUrl,
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `DATABASE_URL` is not a supported `sqlite:///` URL.
    Database(String),
    /// `MMC_API_CLIENT_AUTH` is not a known method.
    ClientAuth(String),
    /// `.env` exists but cannot be read.
    DotEnv(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Database(msg) | ConfigError::DotEnv(msg) => f.write_str(msg),
            ConfigError::ClientAuth(v) => write!(
                f,
                "{} is `{v}`; use `client_secret_post` (the default) or `client_secret_basic`",
                vars::CLIENT_AUTH
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Read the process environment, then `.env` in the working directory.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_env_and_file(Path::new(".env"))
    }

    /// Read the process environment, then the given dotenv file if it exists.
    pub fn from_env_and_file(dotenv: &Path) -> Result<Config, ConfigError> {
        let file = read_dotenv(dotenv)?;
        Self::from_lookup(|key| std::env::var(key).ok().or_else(|| file.get(key).cloned()))
    }

    /// Build the configuration from any key lookup (the environment, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |key: &str| lookup(key).map(|v| v.trim().to_owned()).unwrap_or_default();
        let token_path = Some(get(vars::TOKEN_PATH))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_TOKEN_PATH.to_owned());
        let client_auth = match get(vars::CLIENT_AUTH).to_ascii_lowercase().as_str() {
            "" | "client_secret_post" | "post" => ClientAuth::SecretPost,
            "client_secret_basic" | "basic" => ClientAuth::SecretBasic,
            other => return Err(ConfigError::ClientAuth(other.chars().take(40).collect())),
        };
        let database_url = Some(get(vars::DATABASE_URL))
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        Ok(Config {
            settings: Settings {
                base_url: get(vars::BASE_URL),
                client_id: get(vars::CLIENT_ID),
                client_secret: get(vars::CLIENT_SECRET),
                token_path,
                scope: Some(get(vars::SCOPE)).filter(|s| !s.is_empty()),
                audience: Some(get(vars::AUDIENCE)).filter(|s| !s.is_empty()),
                client_auth,
                ..Settings::default()
            },
            database: DatabaseUrl::parse(&database_url)?,
        })
    }

    /// The required variables that are empty, in the order an operator fixes them.
    pub fn missing(&self) -> Vec<&'static str> {
        let s = &self.settings;
        [
            (vars::BASE_URL, &s.base_url),
            (vars::CLIENT_ID, &s.client_id),
            (vars::CLIENT_SECRET, &s.client_secret),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_empty())
        .map(|(k, _)| k)
        .collect()
    }

    /// The token endpoint, or why the base URL or path cannot be used.
    pub fn endpoint(&self) -> Result<Endpoint, UrlError> {
        Endpoint::parse(&self.settings.base_url, &self.settings.token_path)
    }
}

fn read_dotenv(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let iter = match dotenvy::from_path_iter(path) {
        Ok(iter) => iter,
        Err(dotenvy::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(HashMap::new());
        }
        Err(e) => return Err(dotenv_error(path, &e)),
    };
    let mut map = HashMap::new();
    for item in iter {
        let (k, v) = item.map_err(|e| dotenv_error(path, &e))?;
        map.insert(k, v);
    }
    Ok(map)
}

/// dotenvy's parse errors quote the offending line, which may hold the
/// secret: report only where it is.
fn dotenv_error(path: &Path, e: &dotenvy::Error) -> ConfigError {
    let what = match e {
        dotenvy::Error::LineParse(_, index) => format!("a line it cannot parse (at byte {index})"),
        dotenvy::Error::Io(io) => format!("an I/O error ({})", io.kind()),
        _ => "a value it cannot read".to_owned(),
    };
    ConfigError::DotEnv(format!(
        "{} has {what}; fix or remove that line",
        path.display()
    ))
}

/// Where `api_events` lives, from the application's SQLAlchemy-style URL.
///
/// `Debug` and `Display` never show a PostgreSQL password.
#[derive(Clone)]
pub enum DatabaseUrl {
    /// `sqlite:///relative.db` or `sqlite:////absolute.db`.
    Sqlite(PathBuf),
    /// `postgres://` or `postgresql://` (any `+driver`), for many instances.
    Postgres(Box<PostgresUrl>),
}

/// A PostgreSQL connection: libpq-style URL less the options we handle
/// ourselves (`sslmode`, `sslrootcert`).
#[derive(Clone)]
pub struct PostgresUrl {
    /// Host, port, user, password, database and timeouts.
    pub config: postgres::Config,
    /// How the connection is encrypted and the server checked.
    pub tls: TlsMode,
    /// PEM file of the certificate authorities to trust (`sslrootcert`);
    /// without it, the Mozilla roots (webpki-roots).
    pub root_cert: Option<PathBuf>,
}

/// libpq's `sslmode`, with libpq's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Never encrypt.
    Disable,
    /// Encrypt when the server offers it; certificate not checked
    /// (libpq's default, also for `allow`).
    Prefer,
    /// Always encrypt; certificate checked only when `sslrootcert` is given
    /// (then as `verify-ca`), as libpq does.
    Require,
    /// Always encrypt; certificate chain checked, host name not.
    VerifyCa,
    /// Always encrypt; chain and host name checked.
    VerifyFull,
}

/// Give up on a PostgreSQL connection attempt after this long unless the
/// URL says otherwise, so the writer thread never hangs on a dead address.
const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Drop a connection whose sent data goes unacknowledged this long (a
/// vanished server or network), rather than waiting for TCP's ~15 minutes.
const DEFAULT_TCP_USER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Session settings unless the URL gives `options`: a table locked by
/// someone else (a migration, a dashboard's long transaction) makes an
/// insert give up and retry later instead of holding the writer, and
/// `EventStore`'s final flush, indefinitely.
const DEFAULT_SESSION_OPTIONS: &str = "-c lock_timeout=5s -c statement_timeout=30s";

fn database_error(msg: impl fmt::Display) -> ConfigError {
    ConfigError::Database(format!("{} {msg}", vars::DATABASE_URL))
}

impl DatabaseUrl {
    /// Parse `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` or
    /// `postgresql://user:password@host:port/database?sslmode=…`.
    pub fn parse(url: &str) -> Result<DatabaseUrl, ConfigError> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(database_error(
                "is not a URL; use sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://user:password@host/database",
            ));
        };
        // SQLAlchemy names drivers as `sqlite+pysqlite`, `postgresql+psycopg2`.
        let base = scheme
            .split('+')
            .next()
            .unwrap_or(scheme)
            .to_ascii_lowercase();
        match base.as_str() {
            "sqlite" => parse_sqlite(rest),
            "postgres" | "postgresql" => {
                parse_postgres(rest).map(|pg| DatabaseUrl::Postgres(Box::new(pg)))
            }
            // Never echo the URL: a server URL carries a password.
            _ => Err(database_error(format_args!(
                "uses `{}`, which is not supported; use sqlite:///path/to/file.db or postgresql://user:password@host/database",
                base.chars().take(20).collect::<String>()
            ))),
        }
    }

    /// The SQLite file, if events go to SQLite.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            DatabaseUrl::Sqlite(p) => Some(p),
            DatabaseUrl::Postgres(_) => None,
        }
    }
}

impl From<&Path> for DatabaseUrl {
    fn from(path: &Path) -> DatabaseUrl {
        DatabaseUrl::Sqlite(path.to_owned())
    }
}

impl From<PathBuf> for DatabaseUrl {
    fn from(path: PathBuf) -> DatabaseUrl {
        DatabaseUrl::Sqlite(path)
    }
}

impl From<&PathBuf> for DatabaseUrl {
    fn from(path: &PathBuf) -> DatabaseUrl {
        DatabaseUrl::Sqlite(path.clone())
    }
}

fn parse_sqlite(rest: &str) -> Result<DatabaseUrl, ConfigError> {
    let Some(path) = rest.strip_prefix('/') else {
        return Err(database_error(
            "must have three slashes after `sqlite:` (sqlite:///relative.db or sqlite:////absolute.db)",
        ));
    };
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err(database_error(
            "names no file; events need a file such as sqlite:///./data/brasilintel.db",
        ));
    }
    Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
}

fn parse_postgres(rest: &str) -> Result<PostgresUrl, ConfigError> {
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut tls = TlsMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                tls = match value {
                    "disable" => TlsMode::Disable,
                    "allow" | "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    other => {
                        return Err(database_error(format_args!(
                            "has sslmode=`{}`; use disable, prefer, require, verify-ca or verify-full",
                            other.chars().take(20).collect::<String>()
                        )));
                    }
                }
            }
            "sslrootcert" if !value.is_empty() => root_cert = Some(PathBuf::from(value)),
            _ => kept.push(pair),
        }
    }
    let mut rebuilt = format!("postgresql://{authority}");
    if !kept.is_empty() {
        rebuilt.push('?');
        rebuilt.push_str(&kept.join("&"));
    }
    // tokio-postgres's parse errors name the option or the problem, never
    // the password.
    let mut config: postgres::Config = rebuilt.parse().map_err(|e: postgres::Error| {
        let why = std::error::Error::source(&e)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        database_error(format_args!("is not a PostgreSQL URL we can use: {e}{why}"))
    })?;
    if config.get_hosts().is_empty() {
        return Err(database_error(
            "names no PostgreSQL host; use postgresql://user:password@host:5432/database",
        ));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(DEFAULT_TCP_USER_TIMEOUT);
    }
    if config.get_options().is_none() {
        config.options(DEFAULT_SESSION_OPTIONS);
    }
    if config.get_application_name().is_none() {
        config.application_name("token-manager");
    }
    config.ssl_mode(match tls {
        TlsMode::Disable => postgres::config::SslMode::Disable,
        TlsMode::Prefer => postgres::config::SslMode::Prefer,
        _ => postgres::config::SslMode::Require,
    });
    if tls == TlsMode::Require && root_cert.is_some() {
        tls = TlsMode::VerifyCa;
    }
    Ok(PostgresUrl {
        config,
        tls,
        root_cert,
    })
}

impl fmt::Display for PostgresUrl {
    /// `postgresql://user@host:port/database`, without the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use postgres::config::Host;
        f.write_str("postgresql://")?;
        if let Some(user) = self.config.get_user() {
            write!(f, "{user}@")?;
        }
        for (i, host) in self.config.get_hosts().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match host {
                Host::Tcp(name) => f.write_str(name)?,
                Host::Unix(path) => write!(f, "{}", path.display())?,
            }
            if let Some(port) = self.config.get_ports().get(i) {
                write!(f, ":{port}")?;
            }
        }
        if let Some(db) = self.config.get_dbname() {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresUrl")
            .field("url", &self.to_string())
            .field("tls", &self.tls)
            .field("root_cert", &self.root_cert)
            .finish()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "{}", path.display()),
            DatabaseUrl::Postgres(pg) => pg.fmt(f),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            DatabaseUrl::Postgres(pg) => f.debug_tuple("Postgres").field(pg).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_and_missing_variables() {
        let c = config(&[]).unwrap();
        assert_eq!(c.settings.token_path, DEFAULT_TOKEN_PATH);
        assert_eq!(
            c.database.sqlite_path(),
            Some(Path::new("./data/brasilintel.db"))
        );
        assert_eq!(
            c.missing(),
            [vars::BASE_URL, vars::CLIENT_ID, vars::CLIENT_SECRET]
        );
        let c = config(&[(vars::BASE_URL, "https://gw"), (vars::CLIENT_SECRET, "s")]).unwrap();
        assert_eq!(c.missing(), [vars::CLIENT_ID]);
    }

    fn sqlite(url: &str) -> PathBuf {
        DatabaseUrl::parse(url)
            .unwrap()
            .sqlite_path()
            .unwrap()
            .to_owned()
    }

    fn postgres(url: &str) -> PostgresUrl {
        match DatabaseUrl::parse(url).unwrap() {
            DatabaseUrl::Postgres(pg) => *pg,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn database_urls() {
        assert_eq!(sqlite("sqlite:///data/x.db"), Path::new("data/x.db"));
        assert_eq!(
            sqlite("sqlite:////var/lib/x.db"),
            Path::new("/var/lib/x.db")
        );
        assert_eq!(sqlite("sqlite+pysqlite:///x.db"), Path::new("x.db"));
        assert!(DatabaseUrl::parse("sqlite://x.db").is_err());
        assert!(DatabaseUrl::parse("sqlite:///").is_err());
        assert!(DatabaseUrl::parse("data.db").is_err());
        let e = DatabaseUrl::parse("mysql://user:hunter2@db/app")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mysql") && e.contains("not supported") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn postgres_urls() {
        for url in [
            "postgres://app:hunter2@db.internal:6543/brasilintel",
            "postgresql://app:hunter2@db.internal:6543/brasilintel",
            "postgresql+psycopg2://app:hunter2@db.internal:6543/brasilintel",
        ] {
            let pg = postgres(url);
            assert_eq!(
                pg.to_string(),
                "postgresql://app@db.internal:6543/brasilintel"
            );
            assert_eq!(pg.tls, TlsMode::Prefer);
            assert_eq!(pg.config.get_password(), Some(&b"hunter2"[..]));
            assert_eq!(
                pg.config.get_connect_timeout(),
                Some(&DEFAULT_CONNECT_TIMEOUT)
            );
            assert_eq!(pg.config.get_options(), Some(DEFAULT_SESSION_OPTIONS));
            let debug = format!("{:?}", DatabaseUrl::Postgres(Box::new(pg.clone())));
            assert!(!debug.contains("hunter2"), "{debug}");
            assert!(
                !DatabaseUrl::Postgres(Box::new(pg))
                    .to_string()
                    .contains("hunter2")
            );
        }
        let modes = [
            ("disable", TlsMode::Disable),
            ("allow", TlsMode::Prefer),
            ("require", TlsMode::Require),
            ("verify-ca", TlsMode::VerifyCa),
            ("verify-full", TlsMode::VerifyFull),
        ];
        for (value, mode) in modes {
            let pg = postgres(&format!("postgres://u@h/d?sslmode={value}"));
            assert_eq!(pg.tls, mode, "{value}");
        }
        let pg =
            postgres("postgres://u@h/d?sslmode=require&sslrootcert=/etc/ca.pem&connect_timeout=2");
        assert_eq!(pg.tls, TlsMode::VerifyCa, "libpq: require + root cert");
        assert_eq!(pg.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(
            pg.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(2))
        );
        for (bad, says) in [
            ("postgres://u:hunter2@h/d?sslmode=sometimes", "sslmode"),
            ("postgres://u:hunter2@h/d?colour=blue", "colour"),
            ("postgres://u:hunter2@h:notaport/d", "PostgreSQL URL"),
            ("postgres://u:hunter2@/d", "host"),
        ] {
            let e = DatabaseUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says) && !e.contains("hunter2"), "{bad}: {e}");
        }
    }

    #[test]
    fn client_auth_values() {
        assert_eq!(
            config(&[(vars::CLIENT_AUTH, "client_secret_basic")])
                .unwrap()
                .settings
                .client_auth,
            ClientAuth::SecretBasic
        );
        let e = config(&[(vars::CLIENT_AUTH, "jwt")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("client_secret_post"), "{e}");
    }

    #[test]
    fn dotenv_is_read_and_environment_wins() {
        let dir = std::env::temp_dir().join(format!("tm-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(".env");
        std::fs::write(
            &file,
            "MMC_API_CLIENT_ID=from-file\nMMC_API_TOKEN_PATH=/from/file\n",
        )
        .unwrap();
        let map = read_dotenv(&file).unwrap();
        assert_eq!(map["MMC_API_CLIENT_ID"], "from-file");
        std::fs::write(&file, "MMC_API_CLIENT_SECRET='unterminated-s3cret\n").unwrap();
        let e = read_dotenv(&file).unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(read_dotenv(&dir.join("absent")).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
