//! Named clusters ("contexts", as in kubeconfig) in hotlakectl's config file: each names a
//! cluster's addresses, CA file, token file and timeout. `--context NAME` picks one,
//! `current_context` is the default, and `--all-contexts cluster status` asks every one.
//!
//! ```toml
//! current_context = "eu"
//! [contexts.eu]
//! cluster = ["10.1.0.1:7101", "10.1.0.2:7101"]
//! ca_file = "/etc/hotlake/eu/ca.pem"
//! token_file = "/etc/hotlake/eu/admin.token"
//! ```
//!
//! Settings at the top level of the file apply when no context is chosen. Commands that
//! change the file (`context add|use|remove`) edit it in place and keep its comments.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use hotlake_client::AdminClient;
use serde::Deserialize;

use crate::output::{print_rows, Output};
use crate::Failure;

/// How to reach one cluster. Every field is optional; flags override them.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// gRPC addresses of members.
    pub cluster: Option<Vec<String>>,
    /// Seconds one request may take.
    pub timeout_s: Option<u64>,
    /// File holding the token.
    pub token_file: Option<PathBuf>,
    /// CA certificate of a cluster with TLS on.
    pub ca_file: Option<PathBuf>,
}

/// The whole config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    cluster: Option<Vec<String>>,
    timeout_s: Option<u64>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    /// The context used when `--context` is not given.
    current_context: Option<String>,
    /// Named clusters.
    #[serde(default)]
    contexts: BTreeMap<String, Settings>,
}

impl FileConfig {
    /// Parses the file's text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, Failure> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| Failure::Usage(format!("config file {}: {e}", path.display())))?;
        if let Some(current) = &file.current_context {
            file.context(current, path)?;
        }
        Ok(file)
    }

    /// The settings to use: the context named `chosen` (else `current_context`), or the
    /// top-level settings when neither names one.
    pub fn settings(&self, chosen: Option<&str>, path: &Path) -> Result<Settings, Failure> {
        match chosen.or(self.current_context.as_deref()) {
            Some(name) => self.context(name, path).cloned(),
            None => Ok(Settings {
                cluster: self.cluster.clone(),
                timeout_s: self.timeout_s,
                token_file: self.token_file.clone(),
                ca_file: self.ca_file.clone(),
            }),
        }
    }

    /// Every context, by name.
    pub fn contexts(&self) -> &BTreeMap<String, Settings> {
        &self.contexts
    }

    fn context(&self, name: &str, path: &Path) -> Result<&Settings, Failure> {
        self.contexts.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.contexts.keys().map(String::as_str).collect();
            Failure::Usage(format!(
                "no context {name:?} in {}; {}",
                path.display(),
                if known.is_empty() {
                    "it defines none (hotlakectl context add NAME --cluster ADDR ...)".to_string()
                } else {
                    format!("it defines {}", known.join(", "))
                }
            ))
        })
    }
}

/// A context name: what a TOML bare key and a table name in a listing can hold.
fn check_name(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(Failure::Usage(format!("a context name is 1-64 letters, digits, '-', '_' or '.', got {name:?}")))
    }
}

fn read_document(path: &Path) -> Result<toml_edit::DocumentMut, Failure> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Failure::Usage(format!("cannot read config file {}: {e}", path.display()))),
    };
    FileConfig::parse(&text, path)?;
    text.parse().map_err(|e| Failure::Usage(format!("config file {}: {e}", path.display())))
}

/// Writes `doc` to `path` through a file beside it, so a failure never leaves half a file.
fn write_document(path: &Path, doc: &toml_edit::DocumentMut) -> Result<(), Failure> {
    let text = doc.to_string();
    FileConfig::parse(&text, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Failure::Usage(format!("cannot create {}: {e}", dir.display())))?;
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Failure::Usage(format!("cannot write config file {}: {e}", path.display())))
}

/// `context add`: adds or replaces context `name` with `settings`; the first context added
/// becomes the current one.
pub fn add(path: &Path, name: &str, settings: &Settings, out: &mut impl Write) -> Result<(), Failure> {
    check_name(name)?;
    if settings.cluster.as_ref().is_none_or(|c| c.is_empty()) {
        return Err(Failure::Usage("name the context's cluster: context add NAME --cluster ADDR[,ADDR]".into()));
    }
    let mut doc = read_document(path)?;
    let contexts = doc
        .entry("contexts")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| Failure::Usage(format!("config file {}: `contexts` is not a table", path.display())))?;
    let mut table = toml_edit::Table::new();
    if let Some(cluster) = &settings.cluster {
        table["cluster"] = toml_edit::value(cluster.iter().map(String::as_str).collect::<toml_edit::Array>());
    }
    if let Some(t) = settings.timeout_s {
        table["timeout_s"] = toml_edit::value(t as i64);
    }
    for (key, file) in [("ca_file", &settings.ca_file), ("token_file", &settings.token_file)] {
        if let Some(f) = file {
            let absolute =
                std::path::absolute(f).map_err(|e| Failure::Usage(format!("cannot resolve {}: {e}", f.display())))?;
            table[key] = toml_edit::value(absolute.to_string_lossy().as_ref());
        }
    }
    let replaced = contexts.insert(name, toml_edit::Item::Table(table)).is_some();
    let first = doc.get("current_context").is_none();
    if first {
        doc["current_context"] = toml_edit::value(name);
    }
    write_document(path, &doc)?;
    let _ = writeln!(
        out,
        "{} context {name} in {}{}",
        if replaced { "replaced" } else { "added" },
        path.display(),
        if first { "; it is the current context" } else { "" }
    );
    Ok(())
}

/// `context use`: makes `name` the current context.
pub fn use_context(path: &Path, name: &str, out: &mut impl Write) -> Result<(), Failure> {
    let mut doc = read_document(path)?;
    let file = FileConfig::parse(&doc.to_string(), path)?;
    file.context(name, path)?;
    doc["current_context"] = toml_edit::value(name);
    write_document(path, &doc)?;
    let _ = writeln!(out, "current context: {name}");
    Ok(())
}

/// `context remove`: removes context `name` (and makes no context current if it was).
pub fn remove(path: &Path, name: &str, out: &mut impl Write) -> Result<(), Failure> {
    let mut doc = read_document(path)?;
    let file = FileConfig::parse(&doc.to_string(), path)?;
    file.context(name, path)?;
    if let Some(contexts) = doc.get_mut("contexts").and_then(|c| c.as_table_mut()) {
        contexts.remove(name);
    }
    if doc.get("current_context").and_then(|c| c.as_str()) == Some(name) {
        doc.remove("current_context");
    }
    write_document(path, &doc)?;
    let _ = writeln!(out, "removed context {name}");
    Ok(())
}

/// `context list`.
pub fn list(file: &FileConfig, output: Output, out: &mut impl Write) -> Result<(), Failure> {
    let path_cell = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let rows: Vec<Vec<String>> = file
        .contexts
        .iter()
        .map(|(name, s)| {
            let current = file.current_context.as_deref() == Some(name.as_str());
            vec![
                if current { "*".into() } else { String::new() },
                name.clone(),
                s.cluster.as_deref().unwrap_or_default().join(","),
                path_cell(&s.ca_file),
                path_cell(&s.token_file),
            ]
        })
        .collect();
    print_rows(output, &["current", "name", "cluster", "ca_file", "token_file"], &rows, out);
    Ok(())
}

/// One row of `--all-contexts cluster status`: what a context's cluster says of itself.
pub async fn status_row(name: &str, admin: Result<AdminClient, Failure>) -> (Vec<String>, bool) {
    let status = match admin {
        Ok(admin) => admin.cluster_status().await.map_err(|e| e.to_string()),
        Err(f) => Err(f.message().to_string()),
    };
    match status {
        Ok(s) => {
            let up = s.members.iter().filter(|m| m.report.is_some()).count();
            let led = s.shards.iter().filter(|p| s.leader_of(p.shard).is_some()).count();
            let ready = match s.readiness() {
                Ok(()) => "ready".to_string(),
                Err(why) => format!("not ready: {why}"),
            };
            let row = vec![
                name.to_string(),
                format!("{:016x}", s.cluster_id),
                format!("{up}/{}", s.members.len()),
                format!("{led}/{}", s.shards.len()),
                if s.auth { "on".into() } else { "OFF".into() },
                ready,
            ];
            (row, up == s.members.len())
        }
        Err(e) => (
            vec![
                name.to_string(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                format!("unreachable: {e}"),
            ],
            false,
        ),
    }
}

/// Headers of [`status_row`].
pub const STATUS_HEADERS: &[&str] = &["context", "cluster", "nodes_up", "shards_led", "auth", "status"];

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
# top-level settings: used when no context is chosen
cluster = ["127.0.0.1:7101"]
current_context = "eu"

[contexts.eu]
cluster = ["10.1.0.1:7101"]
ca_file = "/etc/hotlake/eu/ca.pem"

[contexts.us]
cluster = ["10.2.0.1:7101"]
timeout_s = 5
"#;

    #[test]
    fn a_context_is_chosen_by_flag_then_by_current_then_the_top_level() {
        let path = Path::new("hotlakectl.toml");
        let file = FileConfig::parse(FILE, path).unwrap();
        assert_eq!(file.settings(None, path).unwrap().cluster.unwrap(), ["10.1.0.1:7101"]);
        let us = file.settings(Some("us"), path).unwrap();
        assert_eq!((us.cluster.unwrap(), us.timeout_s), (vec!["10.2.0.1:7101".to_string()], Some(5)));
        let err = file.settings(Some("asia"), path).unwrap_err();
        assert!(err.message().contains("no context \"asia\"") && err.message().contains("eu, us"), "{}", err.message());
        let plain = FileConfig::parse("cluster = [\"127.0.0.1:7101\"]", path).unwrap();
        assert_eq!(plain.settings(None, path).unwrap().cluster.unwrap(), ["127.0.0.1:7101"]);
        assert!(FileConfig::parse("current_context = \"nope\"", path).is_err());
        assert!(FileConfig::parse("[contexts.eu]\nclustr = []", path).is_err());
    }

    #[test]
    fn add_use_and_remove_edit_the_file_and_keep_its_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hotlakectl.toml");
        std::fs::write(&path, FILE).unwrap();
        let mut out = Vec::new();
        let asia = Settings { cluster: Some(vec!["10.3.0.1:7101".into()]), ..Default::default() };
        add(&path, "asia", &asia, &mut out).unwrap();
        use_context(&path, "asia", &mut out).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# top-level settings"), "{text}");
        let file = FileConfig::parse(&text, &path).unwrap();
        assert_eq!(file.settings(None, &path).unwrap(), asia);
        assert!(use_context(&path, "nowhere", &mut out).is_err());
        assert!(add(&path, "bad name", &asia, &mut out).is_err());
        assert!(add(&path, "empty", &Settings::default(), &mut out).is_err());
        remove(&path, "asia", &mut out).unwrap();
        let file = FileConfig::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
        assert_eq!(file.contexts().keys().collect::<Vec<_>>(), ["eu", "us"]);
        assert_eq!(file.settings(None, &path).unwrap().cluster.unwrap(), ["127.0.0.1:7101"]);
    }

    #[test]
    fn the_first_context_added_to_a_new_file_becomes_current() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/hotlakectl.toml");
        let eu = Settings { cluster: Some(vec!["10.1.0.1:7101".into()]), ..Default::default() };
        add(&path, "eu", &eu, &mut Vec::new()).unwrap();
        let file = FileConfig::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
        assert_eq!(file.settings(None, &path).unwrap(), eu);
    }
}
