use std::path::Path;
use std::process::Command;

use super::*;

/// Runs the openssl CLI; the reference implementation our output must satisfy.
fn openssl(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is needed by this test (apt-get install openssl)")
}

#[test]
fn signature_verifies_with_openssl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SigningKey::generate();
    let payload = br#"{"critical":{"identity":{"docker-reference":"x"}}}"#;
    std::fs::write(dir.path().join("pub.pem"), key.public_key_pem()).expect("write pub");
    std::fs::write(dir.path().join("sig.der"), key.sign_sha256(payload)).expect("write sig");
    std::fs::write(dir.path().join("payload"), payload).expect("write payload");

    let out = openssl(
        dir.path(),
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig.der",
            "payload",
        ],
    );
    assert!(
        out.status.success(),
        "openssl: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Verified OK");

    // And a tampered payload must not verify, or the check above proves nothing.
    std::fs::write(dir.path().join("payload"), b"other").expect("write payload");
    let out = openssl(
        dir.path(),
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig.der",
            "payload",
        ],
    );
    assert!(!out.status.success());
}

#[test]
fn reads_openssl_sec1_and_pkcs8_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = openssl(
        dir.path(),
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sec1.pem",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = openssl(
        dir.path(),
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "sec1.pem",
            "-out",
            "pkcs8.pem",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = openssl(
        dir.path(),
        &["ec", "-in", "sec1.pem", "-pubout", "-out", "pub.pem"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).expect("read");
    let sec1 = SigningKey::from_pem(&read("sec1.pem")).expect("sec1");
    let pkcs8 = SigningKey::from_pem(&read("pkcs8.pem")).expect("pkcs8");
    assert!(read("sec1.pem").contains("EC PRIVATE KEY"));
    assert_eq!(sec1.public_key_pem(), read("pub.pem"));
    assert_eq!(pkcs8.public_key_pem(), read("pub.pem"));
    assert_eq!(
        public_key_pem_from_pem(&read("pub.pem")).expect("pub"),
        read("pub.pem")
    );
    assert_eq!(
        public_key_pem_from_pem(&read("sec1.pem")).expect("priv"),
        read("pub.pem")
    );
}

#[test]
fn private_key_pem_round_trips() {
    let key = SigningKey::generate();
    let pem = key.private_key_pem().expect("pem");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let again = SigningKey::from_pem(&pem).expect("parse");
    assert_eq!(again.public_key_pem(), key.public_key_pem());
    assert!(key.public_key_pem().starts_with("-----BEGIN PUBLIC KEY-----\n"));
}

#[test]
fn refuses_other_pem_blocks_and_garbage() {
    assert!(matches!(SigningKey::from_pem("hello"), Err(SigningError::NoPem)));
    let rsa = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
    assert!(
        matches!(SigningKey::from_pem(rsa), Err(SigningError::UnsupportedPem(l)) if l == "RSA PRIVATE KEY")
    );
    let bad = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    let err = SigningKey::from_pem(bad).expect_err("garbage key");
    assert!(err.to_string().contains("invalid P-256 key"), "{err}");
}

#[test]
fn debug_does_not_show_the_private_key() {
    let key = SigningKey::generate();
    let pem = key.private_key_pem().expect("pem");
    let body = pem.lines().nth(1).expect("a base64 line");
    let debug = format!("{key:?}");
    assert!(!debug.contains(body));
    assert!(debug.contains("PUBLIC KEY"));
}

#[test]
fn load_or_generate_persists_privately_and_reloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested").join("signing-key.pem");
    let first = SigningKey::load_or_generate(&path).expect("generate");
    let second = SigningKey::load_or_generate(&path).expect("reload");
    assert_eq!(first.public_key_pem(), second.public_key_pem());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Only the key file is left behind: no temp files.
    let names: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("signing-key.pem")]);
}

#[test]
fn load_or_generate_reports_a_corrupt_file_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("signing-key.pem");
    std::fs::write(&path, "not a key").expect("write");
    let err = SigningKey::load_or_generate(&path).expect_err("corrupt");
    assert!(err.to_string().contains("signing-key.pem"), "{err}");
    // The corrupt file is left alone for an operator to look at, not silently replaced.
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "not a key");
}

#[test]
fn concurrent_first_starts_agree_on_one_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("signing-key.pem");
    let keys: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    SigningKey::load_or_generate(&path)
                        .expect("load")
                        .public_key_pem()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("join")).collect()
    });
    assert!(keys.windows(2).all(|w| w[0] == w[1]));
}
