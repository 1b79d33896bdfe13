//! Where the local mode and the operator commands find their settings: the routing config, the webhook
//! signing secret and the ServiceNow instance (file or environment), shared by every command.

use std::io::Write;
use std::path::{Path, PathBuf};

use relay_core::{Config, PseudonymKey};
use relay_pipeline::secrets::ServiceNowSecretError;
use relay_pipeline::signature::{SecretFormatError, generate_secret};
use relay_pipeline::{ServiceNowSettings, WebhookSecrets};
use secrecy::SecretString;

/// The default database file of the local mode.
pub const DEFAULT_DB: &str = "relay-data/relay.db";
/// The signing secret file kept next to the database when none is configured.
pub const SECRET_FILE_NAME: &str = "webhook-secret.json";
/// The read token file kept next to the database when none is configured.
pub const READ_TOKEN_FILE_NAME: &str = "read-token";

/// Why a command could not start: the setting or file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] relay_core::ConfigLoadError),
    #[error("{}: cannot read: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot create: {source}", path.display())]
    CreateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    InvalidSecretFile {
        path: PathBuf,
        #[source]
        source: SecretFormatError,
    },
    #[error("signing secret: RELAY_WEBHOOK_SECRET: {0}")]
    InvalidSecretVariable(#[source] SecretFormatError),
    #[error("{}: {source}", path.display())]
    InvalidServiceNowFile {
        path: PathBuf,
        #[source]
        source: ServiceNowSecretError,
    },
    #[error("{}: the read token file is empty (put one token on one line)", path.display())]
    EmptyToken { path: PathBuf },
    #[error("ServiceNow settings: from the SERVICENOW_* environment variables: {0}")]
    InvalidServiceNowVariables(#[source] ServiceNowSecretError),
}

/// `--config` (`RELAY_CONFIG_PATH`): the routing config, for every command that routes or reads tables.
#[derive(clap::Args, Debug)]
pub struct ConfigOption {
    /// Routing config (YAML). Default: the shipped config/relay.yaml compiled into this binary.
    #[arg(long, env = "RELAY_CONFIG_PATH")]
    pub config: Option<PathBuf>,
}

impl ConfigOption {
    /// The routing config and a human name for where it came from.
    pub fn load(&self) -> Result<(Config, String), SettingsError> {
        load_config(self.config.as_ref())
    }
}

/// `--servicenow-file` (`RELAY_SERVICENOW_FILE`): the ServiceNow instance, for every command that calls one.
#[derive(clap::Args, Debug)]
pub struct ServiceNowOption {
    /// A real ServiceNow instance: a JSON file in the ServiceNow secret format. Default: the SERVICENOW_*
    /// environment variables (`serve`: else the built-in simulator).
    #[arg(long, env = "RELAY_SERVICENOW_FILE")]
    pub servicenow_file: Option<PathBuf>,
}

impl ServiceNowOption {
    /// The instance, or `None` when neither the file nor `SERVICENOW_INSTANCE_URL` is given.
    pub fn load(&self) -> Result<Option<ServiceNowSettings>, SettingsError> {
        servicenow_settings(self.servicenow_file.as_deref())
    }
}

/// The pseudonymisation key from RELAY_PSEUDONYM_KEY, when set (normalised as the Lambda functions
/// normalise theirs: surrounding whitespace trimmed).
pub fn pseudonym_key() -> Result<Option<PseudonymKey>, relay_core::RouterError> {
    match std::env::var("RELAY_PSEUDONYM_KEY") {
        Ok(k) if !k.trim().is_empty() => PseudonymKey::from_secret_text(&k).map(Some),
        _ => Ok(None),
    }
}

/// The routing config and a human name for where it came from (the one loader the Lambda functions use too).
pub fn load_config(path: Option<&PathBuf>) -> Result<(Config, String), SettingsError> {
    let loaded = Config::load(path.map(PathBuf::as_path))?;
    Ok((loaded.config, loaded.source))
}

/// The signing secret file next to `db`.
pub fn secret_file_next_to(db: &Path) -> PathBuf {
    db.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(SECRET_FILE_NAME)
}

/// The signing secrets in `path` (`{"secrets": [...]}` or a bare `whsec_…`).
pub fn read_secret_file(path: &Path) -> Result<WebhookSecrets, SettingsError> {
    WebhookSecrets::from_document(&read_file(path)?).map_err(|source| SettingsError::InvalidSecretFile {
        path: path.to_path_buf(),
        source,
    })
}

fn read_file(path: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(path).map_err(|source| SettingsError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

/// Where the signing secrets came from.
pub enum SecretSource {
    File(PathBuf),
    /// `RELAY_WEBHOOK_SECRET`.
    Variable,
    /// Generated on this start and stored in `path` (the banner says where, never the value).
    Generated {
        path: PathBuf,
    },
}

/// The signing secrets: `--secret-file`, else `RELAY_WEBHOOK_SECRET`, else the file next to the database,
/// created with a fresh secret (mode 0600) when it does not exist.
pub fn signing_secrets(
    secret_file: Option<&Path>,
    db: &Path,
    create: bool,
) -> Result<(WebhookSecrets, SecretSource), SettingsError> {
    if let Some(path) = secret_file {
        return Ok((read_secret_file(path)?, SecretSource::File(path.to_path_buf())));
    }
    if let Ok(value) = std::env::var("RELAY_WEBHOOK_SECRET")
        && !value.trim().is_empty()
    {
        let keys = WebhookSecrets::from_document(&value).map_err(SettingsError::InvalidSecretVariable)?;
        return Ok((keys, SecretSource::Variable));
    }
    let path = secret_file_next_to(db);
    if path.exists() || !create {
        return Ok((read_secret_file(&path)?, SecretSource::File(path)));
    }
    let secret = generate_secret();
    let doc = serde_json::json!({ "secrets": [secret] }).to_string();
    write_private(&path, doc.as_bytes())?;
    let keys = WebhookSecrets::from_document(&doc).map_err(|source| SettingsError::InvalidSecretFile {
        path: path.clone(),
        source,
    })?;
    Ok((keys, SecretSource::Generated { path }))
}

/// Where the read token came from.
pub enum TokenSource {
    File(PathBuf),
    /// `RELAY_READ_TOKEN`.
    Variable,
    /// Generated on this start and stored in the file.
    Generated(PathBuf),
}

/// The read token of the status and operator routes: `--read-token-file`, else `RELAY_READ_TOKEN`, else
/// the `read-token` file next to the database, created with a fresh token (mode 0600) when `create` and it
/// does not exist.
pub fn read_token(file: Option<&Path>, db: &Path, create: bool) -> Result<(SecretString, TokenSource), SettingsError> {
    let from_file = |path: &Path| -> Result<SecretString, SettingsError> {
        let text = read_file(path)?;
        match text.trim() {
            "" => Err(SettingsError::EmptyToken {
                path: path.to_path_buf(),
            }),
            t => Ok(SecretString::from(t.to_string())),
        }
    };
    if let Some(path) = file {
        return Ok((from_file(path)?, TokenSource::File(path.to_path_buf())));
    }
    if let Ok(value) = std::env::var("RELAY_READ_TOKEN")
        && !value.trim().is_empty()
    {
        return Ok((SecretString::from(value.trim().to_string()), TokenSource::Variable));
    }
    let path = read_token_next_to(db);
    if path.exists() || !create {
        return Ok((from_file(&path)?, TokenSource::File(path)));
    }
    let token = format!("rrt_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    write_private(&path, format!("{token}\n").as_bytes())?;
    Ok((SecretString::from(token), TokenSource::Generated(path)))
}

/// The read token file next to `db`.
pub fn read_token_next_to(db: &Path) -> PathBuf {
    secret_file_next_to(db).with_file_name(READ_TOKEN_FILE_NAME)
}

/// Create `path` readable by its owner only (0600) and write `bytes`; never overwrites.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SettingsError> {
    let err = |source| SettingsError::CreateFile {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// The ServiceNow instance: `--servicenow-file` (the ServiceNow secret JSON), else the `SERVICENOW_*`
/// environment variables, else `None` (the built-in simulator).
pub fn servicenow_settings(file: Option<&Path>) -> Result<Option<ServiceNowSettings>, SettingsError> {
    if let Some(path) = file {
        return ServiceNowSettings::from_document(&read_file(path)?)
            .map(Some)
            .map_err(|source| SettingsError::InvalidServiceNowFile {
                path: path.to_path_buf(),
                source,
            });
    }
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let Some(url) = var("SERVICENOW_INSTANCE_URL") else {
        return Ok(None);
    };
    let mut doc = serde_json::Map::new();
    doc.insert("instance_url".into(), url.into());
    doc.insert(
        "auth".into(),
        var("SERVICENOW_AUTH").unwrap_or_else(|| "basic".into()).into(),
    );
    for (env, key) in [
        ("SERVICENOW_USERNAME", "username"),
        ("SERVICENOW_PASSWORD", "password"),
        ("SERVICENOW_CLIENT_ID", "client_id"),
        ("SERVICENOW_CLIENT_SECRET", "client_secret"),
    ] {
        if let Some(v) = var(env) {
            doc.insert(key.into(), v.into());
        }
    }
    ServiceNowSettings::from_document(&serde_json::Value::Object(doc).to_string())
        .map(Some)
        .map_err(SettingsError::InvalidServiceNowVariables)
}

/// The Table API tables a route of `config` can take (Event Management's `em_event` is not one), each with
/// the first record type routed to it (whose profile says how the relay marks its records there).
pub fn mapped_tables(config: &Config) -> Vec<(relay_core::RecordType, String)> {
    let mut tables: std::collections::BTreeMap<String, relay_core::RecordType> = std::collections::BTreeMap::new();
    for (record_type, table) in config.routed_targets() {
        if table != "em_event" {
            tables.entry(table).or_insert(record_type);
        }
    }
    tables
        .into_iter()
        .map(|(table, record_type)| (record_type, table))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_generated_secret_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("relay.db");
        let (_, src) = signing_secrets(None, &db, true).unwrap();
        let SecretSource::Generated { path, .. } = src else {
            panic!("expected a generated secret")
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (_, again) = signing_secrets(None, &db, true).unwrap();
        assert!(matches!(again, SecretSource::File(p) if p == path));
    }

    #[test]
    fn a_generated_read_token_is_private_reused_and_an_empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("relay.db");
        let (token, src) = read_token(None, &db, true).unwrap();
        let TokenSource::Generated(path) = src else {
            panic!("expected a generated token")
        };
        assert!(token.expose_secret().starts_with("rrt_") && token.expose_secret().len() == 68);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (again, src) = read_token(None, &db, false).unwrap();
        assert_eq!(again.expose_secret(), token.expose_secret());
        assert!(matches!(src, TokenSource::File(p) if p == path));
        std::fs::write(&path, "\n").unwrap();
        let e = read_token(Some(&path), &db, false).err().unwrap();
        assert!(e.to_string().contains("the read token file is empty"), "{e}");
    }

    #[test]
    fn unusable_files_are_named_and_keep_their_cause() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let e = load_config(Some(&missing)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("cannot read config {}", missing.display())),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());

        let garbage = dir.path().join("secret.json");
        std::fs::write(&garbage, "{\"secrets\": [\"not-a-secret\"]}").unwrap();
        let e = read_secret_file(&garbage).err().unwrap();
        assert!(
            matches!(e, SettingsError::InvalidSecretFile { ref path, .. } if *path == garbage),
            "{e}"
        );
        assert!(e.to_string().contains("secret #"), "{e}");

        std::fs::write(&garbage, "{\"instance_url\": \"\"}").unwrap();
        let e = servicenow_settings(Some(&garbage)).unwrap_err();
        assert!(matches!(e, SettingsError::InvalidServiceNowFile { .. }), "{e}");
        assert!(e.to_string().starts_with(&garbage.display().to_string()), "{e}");
    }

    #[test]
    fn the_default_config_maps_the_security_and_hr_tables() {
        let tables: Vec<String> = mapped_tables(&Config::default_config())
            .into_iter()
            .map(|(_, table)| table)
            .collect();
        for t in ["sn_si_incident", "sn_si_task", "sn_hr_core_case"] {
            assert!(tables.iter().any(|x| x == t), "{t} in {tables:?}");
        }
        // routed tables only: no bare task (a real instance wants a child table), no unrouted table, no events
        for t in ["task", "sn_ti_observable", "sn_hr_ef_employee_document", "em_event"] {
            assert!(!tables.iter().any(|x| x == t), "{t} not in {tables:?}");
        }
    }
}
