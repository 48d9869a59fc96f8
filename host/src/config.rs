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

/// Where `api_events` lives: a SQLite file, from the application's
/// SQLAlchemy-style URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite:///relative.db` or `sqlite:////absolute.db`.
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// Parse `sqlite:///relative/path.db` or `sqlite:////absolute/path.db`.
    pub fn parse(url: &str) -> Result<DatabaseUrl, ConfigError> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(ConfigError::Database(format!(
                "{} is not a URL; use sqlite:///relative/path.db or sqlite:////absolute/path.db",
                vars::DATABASE_URL
            )));
        };
        // SQLAlchemy names drivers as `sqlite+pysqlite`; the file is the same.
        let base = scheme
            .split('+')
            .next()
            .unwrap_or(scheme)
            .to_ascii_lowercase();
        if base != "sqlite" {
            // Never echo the URL: a server URL carries a password.
            return Err(ConfigError::Database(format!(
                "{} uses `{base}`, which is not supported yet; use sqlite:///path/to/file.db",
                vars::DATABASE_URL
            )));
        }
        let Some(path) = rest.strip_prefix('/') else {
            return Err(ConfigError::Database(format!(
                "{} must have three slashes after `sqlite:` (sqlite:///relative.db or sqlite:////absolute.db)",
                vars::DATABASE_URL
            )));
        };
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err(ConfigError::Database(format!(
                "{} names no file; events need a file such as sqlite:///./data/brasilintel.db",
                vars::DATABASE_URL
            )));
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        match self {
            DatabaseUrl::Sqlite(p) => p,
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
        assert_eq!(c.database.path(), Path::new("./data/brasilintel.db"));
        assert_eq!(
            c.missing(),
            [vars::BASE_URL, vars::CLIENT_ID, vars::CLIENT_SECRET]
        );
        let c = config(&[(vars::BASE_URL, "https://gw"), (vars::CLIENT_SECRET, "s")]).unwrap();
        assert_eq!(c.missing(), [vars::CLIENT_ID]);
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///data/x.db").unwrap().path(),
            Path::new("data/x.db")
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:////var/lib/x.db")
                .unwrap()
                .path(),
            Path::new("/var/lib/x.db")
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite+pysqlite:///x.db")
                .unwrap()
                .path(),
            Path::new("x.db")
        );
        let e = DatabaseUrl::parse("postgres://user:hunter2@db/app")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("postgres") && e.contains("not supported") && !e.contains("hunter2"),
            "{e}"
        );
        assert!(DatabaseUrl::parse("sqlite://x.db").is_err());
        assert!(DatabaseUrl::parse("sqlite:///").is_err());
        assert!(DatabaseUrl::parse("data.db").is_err());
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
