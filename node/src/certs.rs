//! `hotlake cert`: a cluster CA and node certificates for a test or small cluster (rcgen, ring).
//! A larger deployment brings certificates from its own CA; the node only needs PEM files.
//!
//! A node certificate serves both ends of mutual TLS (server and client authentication) and
//! names every host its addresses use, since clients and other nodes check it against the
//! address they connect to. Private keys are written readable by their owner only, and no
//! command overwrites an existing file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// File names inside a CA directory.
pub const CA_CERT: &str = "ca.pem";
/// See [`CA_CERT`].
pub const CA_KEY: &str = "ca.key";

/// Makes a CA in `dir` (`ca.pem`, `ca.key`), valid for `days`.
pub fn make_ca(dir: &Path, days: u32) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    params.distinguished_name = name("Hotlake cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, days);
    let key = KeyPair::generate().context("generate the CA key")?;
    let cert = params.self_signed(&key).context("sign the CA certificate")?;
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    create_new(&key_path, key.serialize_pem().as_bytes(), true)?;
    create_new(&cert_path, cert.pem().as_bytes(), false)?;
    Ok((cert_path, key_path))
}

/// Makes a certificate for a node (`NAME.pem`, `NAME.key` in `out`) signed by the CA in
/// `ca_dir`, naming `hosts` (IP addresses or DNS names), valid for `days`.
pub fn make_node(
    ca_dir: &Path,
    out: &Path,
    name_: &str,
    hosts: &[String],
    days: u32,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    anyhow::ensure!(!hosts.is_empty(), "name at least one host (--host) the node is reached at");
    // What a client will check the certificate against: a name it could never connect by
    // would make a certificate nobody can use.
    for host in hosts {
        anyhow::ensure!(
            rustls::pki_types::ServerName::try_from(host.as_str()).is_ok(),
            "--host {host:?} is neither an IP address nor a DNS name"
        );
    }
    anyhow::ensure!(
        !name_.is_empty() && name_.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'),
        "the name is a file name: letters, digits, '-', '_' and '.', got {name_:?}"
    );
    let ca_cert_path = ca_dir.join(CA_CERT);
    let ca_key_path = ca_dir.join(CA_KEY);
    let ca_pem = std::fs::read_to_string(&ca_cert_path).with_context(|| format!("read {}", ca_cert_path.display()))?;
    let ca_key_pem =
        std::fs::read_to_string(&ca_key_path).with_context(|| format!("read {}", ca_key_path.display()))?;
    let ca_key =
        KeyPair::from_pem(&ca_key_pem).with_context(|| format!("{}: not a PEM private key", ca_key_path.display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .with_context(|| format!("{}: not a CA certificate", ca_cert_path.display()))?;
    let mut params =
        CertificateParams::new(hosts.to_vec()).context("a --host is neither an IP address nor a DNS name")?;
    params.distinguished_name = name(name_);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, days);
    let key = KeyPair::generate().context("generate the node key")?;
    let cert = params.signed_by(&key, &issuer).context("sign the node certificate")?;
    let (cert_path, key_path) = (out.join(format!("{name_}.pem")), out.join(format!("{name_}.key")));
    create_new(&key_path, key.serialize_pem().as_bytes(), true)?;
    create_new(&cert_path, cert.pem().as_bytes(), false)?;
    Ok((cert_path, key_path))
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Hotlake");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // A little in the past, so that a clock slightly behind on another node accepts it.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days.max(1)));
}

/// Writes a file that must not exist yet (owner-only when `secret`).
fn create_new(path: &Path, bytes: &[u8], secret: bool) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| {
        if path.exists() {
            format!("{} exists already; not overwriting it", path.display())
        } else {
            format!("create {}", path.display())
        }
    })?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_chains_to_its_ca_and_names_its_hosts() {
        let dir = tempfile::tempdir().unwrap();
        make_ca(dir.path(), 30).unwrap();
        let hosts = vec!["127.0.0.1".to_string(), "node1.example".to_string()];
        let (cert, key) = make_node(dir.path(), dir.path(), "node1", &hosts, 30).unwrap();
        let files = crate::config::TlsConfig { ca_file: dir.path().join(CA_CERT), cert_file: cert, key_file: key };
        // Loads as a node's TLS (the key matches the certificate, the CA verifies clients).
        crate::tls::NodeTls::load(&files).unwrap();
        // Nothing is overwritten.
        assert!(make_ca(dir.path(), 30).unwrap_err().to_string().contains("not overwriting"));
        assert!(make_node(dir.path(), dir.path(), "node1", &hosts, 30).is_err());
        assert!(make_node(dir.path(), dir.path(), "../x", &hosts, 30).is_err());
        assert!(make_node(dir.path(), dir.path(), "n2", &[], 30).is_err());
        assert!(make_node(dir.path(), dir.path(), "n3", &["bad host!".to_string()], 30).is_err());
        assert!(!dir.path().join("n3.pem").exists(), "nothing is written for a refused host");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(CA_KEY)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the CA key is readable by its owner only");
        }
    }
}
