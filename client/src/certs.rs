//! A small certificate authority for clusters whose operators have none: `ballastctl certs
//! init` makes a CA, `ballastctl certs issue` signs node and client certificates with it.
//!
//! Keys are ECDSA P-256. Files are PEM: `<name>.pem` (certificate) and `<name>-key.pem` (key,
//! mode 0600 whatever the umask), written to a temporary file of their own (never one found
//! at its name) and renamed, never over an existing file. A node
//! certificate may serve and call (server and client auth) and names the addresses and host
//! names it is reached by; a client certificate can only call. A certificate may also name
//! who holds it (`crate::identity`): `ballast://member/ID` for a Raft member, `ballast://node/ID`
//! for an agent-only server; the members then check it on every call. This is not a PKI: no
//! revocation lists; rotate by issuing new certificates and sending the members SIGHUP.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::identity::CertIdentity;

/// File names of the CA inside its directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A member or agent: serves and calls.
    Node,
    /// An operator, a script or a service using the API: calls only.
    Client,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{0} exists already; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn file_err(path: &Path, e: impl ToString) -> CertError {
    CertError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn rc(e: rcgen::Error) -> CertError {
    CertError::Invalid(e.to_string())
}

/// Writes `data` to `path` (a fresh file) with `mode`, through a temporary file of its own
/// (`files::write_atomic`: exclusive create, exact mode, fsync, rename, directory fsync).
fn write_new(path: &Path, data: &str, mode: u32) -> Result<(), CertError> {
    use crate::files::{write_atomic, Existing, FileError};
    write_atomic(path, data.as_bytes(), mode, Existing::Refuse).map_err(|e| match e {
        FileError::Exists(p) => CertError::Exists(p),
        FileError::Io { path, source } => file_err(&path, source),
    })
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that differ between the issuing machine and the servers.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
}

/// Makes a CA in `dir` (created if missing): `ca.pem` and `ca-key.pem`. Refuses to replace an
/// existing CA, since every certificate it signed would stop being trusted.
pub fn init_ca(dir: &Path, name: &str, days: u32) -> Result<PathBuf, CertError> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(CertError::Exists(p.clone()));
        }
    }
    let key = KeyPair::generate().map_err(rc)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "Ballast");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days);
    let cert = params.self_signed(&key).map_err(rc)?;
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    Ok(cert_path)
}

/// Signs a certificate for `name` with the CA in `ca_dir` and writes `<out>/<name>.pem` and
/// `<out>/<name>-key.pem`. `sans` are IP addresses or DNS names (a node needs every address
/// peers and clients dial it by); `name` is the common name; `identity`, if any, is written as
/// a URI SAN (a member's certificate serves, so it is never a client certificate).
pub fn issue(
    ca_dir: &Path,
    out: &Path,
    name: &str,
    sans: &[String],
    kind: Kind,
    identity: Option<CertIdentity>,
    days: u32,
) -> Result<(PathBuf, PathBuf), CertError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(CertError::Invalid(format!(
            "name {name:?}: letters, digits, '-', '_' and '.' only (it names the files)"
        )));
    }
    if kind == Kind::Node && sans.is_empty() {
        return Err(CertError::Invalid(
            "a node certificate needs --san with the addresses or names it is reached by".into(),
        ));
    }
    if matches!(identity, Some(CertIdentity::Member(_))) && kind == Kind::Client {
        return Err(CertError::Invalid(
            "a member's certificate serves the cluster's port: it cannot be a client certificate"
                .into(),
        ));
    }
    if identity.is_some_and(|i| i.node_id() == 0) {
        return Err(CertError::Invalid("node ids start at 1".into()));
    }
    let ca_cert_path = ca_dir.join(CA_CERT);
    let ca_key_path = ca_dir.join(CA_KEY);
    let ca_pem = std::fs::read_to_string(&ca_cert_path).map_err(|e| file_err(&ca_cert_path, e))?;
    let ca_key_pem =
        std::fs::read_to_string(&ca_key_path).map_err(|e| file_err(&ca_key_path, e))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| file_err(&ca_key_path, e))?;
    let ca_params = CertificateParams::from_ca_cert_pem(&ca_pem)
        .map_err(|e| file_err(&ca_cert_path, format!("not a CA certificate: {e}")))?;
    // Re-signing the CA's own parameters gives rcgen the issuer name and key identifier; the
    // leaf's signature is checked against the original CA certificate's key.
    let ca = ca_params.self_signed(&ca_key).map_err(|_| {
        CertError::Invalid(format!(
            "{} does not belong to {}",
            ca_key_path.display(),
            ca_cert_path.display()
        ))
    })?;

    std::fs::create_dir_all(out).map_err(|e| file_err(out, e))?;
    let cert_path = out.join(format!("{name}.pem"));
    let key_path = out.join(format!("{name}-key.pem"));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(CertError::Exists(p.clone()));
        }
    }
    let mut params = CertificateParams::new(sans.to_vec())
        .map_err(|e| CertError::Invalid(format!("--san: {e}")))?;
    if let Some(id) = identity {
        let uri = rcgen::Ia5String::try_from(id.uri()).map_err(rc)?;
        params.subject_alt_names.push(rcgen::SanType::URI(uri));
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "Ballast");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match kind {
        Kind::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Kind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate().map_err(rc)?;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(rc)?;
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_chain_to_the_ca_and_files_are_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path(), "test CA", 30).unwrap();
        assert!(matches!(
            init_ca(dir.path(), "again", 30),
            Err(CertError::Exists(_))
        ));
        let (cert, key) = issue(
            dir.path(),
            dir.path(),
            "n1",
            &["127.0.0.1".into(), "node1.example".into()],
            Kind::Node,
            None,
            30,
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "keys are private");
        assert!(matches!(
            issue(
                dir.path(),
                dir.path(),
                "n1",
                &["127.0.0.1".into()],
                Kind::Node,
                None,
                30
            ),
            Err(CertError::Exists(_))
        ));
        assert!(issue(dir.path(), dir.path(), "n2", &[], Kind::Node, None, 30).is_err());
        assert!(issue(
            dir.path(),
            dir.path(),
            "../x",
            &["a".into()],
            Kind::Client,
            None,
            30
        )
        .is_err());

        // rustls accepts the chain for both names, and not for another.
        use rustls::client::danger::ServerCertVerifier;
        let roots = std::sync::Arc::new(crate::tls::load_roots(&ca).unwrap());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots,
            crate::tls::provider(),
        )
        .build()
        .unwrap();
        let chain = crate::tls::load_certs(&cert).unwrap();
        let now = rustls::pki_types::UnixTime::now();
        for (name, ok) in [
            ("127.0.0.1", true),
            ("node1.example", true),
            ("10.0.0.9", false),
        ] {
            let server = rustls::pki_types::ServerName::try_from(name).unwrap();
            let r = verifier.verify_server_cert(&chain[0], &[], &server, &[], now);
            assert_eq!(r.is_ok(), ok, "{name}: {r:?}");
        }
        crate::tls::load_identity(&cert, &key).unwrap();
    }

    /// A file or symlink left at a temporary name (by a crashed run, or planted by another
    /// user of a shared directory) is never followed nor reused: the key is a fresh regular
    /// file of mode 0600 whatever the umask, and the symlink's target is untouched.
    #[test]
    fn keys_never_go_through_a_file_left_at_a_temporary_name() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "not a key").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        for tmp in [
            "ca-key.tmp",
            "n1-key.tmp",
            ".ca-key.pem.tmp",
            ".n1-key.pem.tmp",
        ] {
            std::os::unix::fs::symlink(&victim, dir.path().join(tmp)).unwrap();
        }
        // A stale regular file with a wide mode at a temporary name.
        for tmp in ["ca.tmp", "n1.tmp"] {
            let p = dir.path().join(tmp);
            std::fs::write(&p, "stale").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        }
        init_ca(dir.path(), "test CA", 30).unwrap();
        let (cert, key) = issue(
            dir.path(),
            dir.path(),
            "n1",
            &["127.0.0.1".into()],
            Kind::Node,
            None,
            30,
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not a key");
        for (path, mode) in [
            (dir.path().join(CA_KEY), 0o600),
            (key, 0o600),
            (dir.path().join(CA_CERT), 0o644),
            (cert, 0o644),
        ] {
            let m = std::fs::symlink_metadata(&path).unwrap();
            assert!(
                m.file_type().is_file(),
                "{}: not a regular file",
                path.display()
            );
            assert_eq!(m.mode() & 0o7777, mode, "{}", path.display());
            assert_eq!(m.nlink(), 1, "{}", path.display());
        }
    }

    /// `--member` and `--node` write an identity URI the server side reads back; a member's
    /// certificate cannot be a client certificate.
    #[test]
    fn identities_are_written_as_uris_and_read_back() {
        use crate::identity::identity_of;
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test CA", 30).unwrap();
        let d = dir.path();
        let der = |p: &Path| crate::tls::load_certs(p).unwrap()[0].to_vec();
        let lo = ["127.0.0.1".to_string()];
        let member = Some(CertIdentity::Member(3));
        let (m3, _) = issue(d, d, "m3", &lo, Kind::Node, member, 30).unwrap();
        assert_eq!(identity_of(&der(&m3)), Ok(member));
        let node = Some(CertIdentity::Node(7));
        let (n7, _) = issue(d, d, "n7", &[], Kind::Client, node, 30).unwrap();
        assert_eq!(identity_of(&der(&n7)), Ok(node));
        let (plain, _) = issue(d, d, "ops", &[], Kind::Client, None, 30).unwrap();
        assert_eq!(identity_of(&der(&plain)), Ok(None));
        assert!(issue(d, d, "bad", &[], Kind::Client, member, 30).is_err());
    }
}
