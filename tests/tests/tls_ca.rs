//! `tls-inspect ca`: trial, import (with openssl-made keys the seed refuses and accepts), show,
//! export; the key file is 0600.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use tls_inspect_tests::{appliance_bin, check, run};

/// A scratch directory removed when the test ends, also when it fails.
struct Dir(PathBuf);

impl std::ops::Deref for Dir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("tls-inspect-catest-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

fn openssl(d: &Path, args: &[&str]) -> Result<String> {
    check(Command::new("openssl").current_dir(d).args(args))
}

fn ca(store: &Path, args: &[&str]) -> std::process::Output {
    run(Command::new(appliance_bin()).arg("ca").arg("--dir").arg(store).args(args)).unwrap()
}

#[test]
fn import_show_export_with_real_openssl_material() -> Result<()> {
    let d = dir("openssl");
    let store = d.join("store");

    // Refused, each with its reason, and nothing written.
    let rsa1024 = tls_inspect_tests::pki::ca_with_key(&d, "rsa1024", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"])?;
    let sm2 = tls_inspect_tests::pki::ca_with_key(&d, "sm2", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:SM2"]);
    let p384 = tls_inspect_tests::pki::ca_with_key(&d, "p384", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"])?;
    let mut refused = vec![(rsa1024, "RSA-1024"), (p384, "not supported")];
    if let Ok(sm2) = sm2 {
        refused.push((sm2, "not supported"));
    }
    for ((crt, key), needle) in refused {
        let out = ca(&store, &["import", "--cert", crt.to_str().unwrap(), "--key", key.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle), "{}: {err}", crt.display());
        assert!(!store.join("ca.key").exists());
    }

    // An RSA-2048 root is accepted; its key is stored 0600.
    let (crt, key) = tls_inspect_tests::pki::ca_with_key(&d, "rsa2048", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])?;
    let out = ca(&store, &["import", "--cert", crt.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("RSA-2048") && text.contains("(root)"), "{text}");
    assert_eq!(std::fs::metadata(store.join("ca.key"))?.permissions().mode() & 0o777, 0o600);
    let show = String::from_utf8_lossy(&ca(&store, &["show"]).stdout).into_owned();
    assert!(show.contains("CN=rsa2048") && show.contains("sha256:"), "{show}");

    // An intermediate signed by that root: refused without its chain, accepted with it, and
    // exported with root and intermediate both.
    openssl(&d, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "int.key"])?;
    openssl(&d, &["req", "-new", "-key", "int.key", "-subj", "/CN=intermediate", "-out", "int.csr"])?;
    std::fs::write(d.join("ext.cnf"), "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n")?;
    openssl(&d, &[
        "x509", "-req", "-in", "int.csr", "-CA", "rsa2048.crt", "-CAkey", "rsa2048.key", "-CAcreateserial",
        "-days", "700", "-extfile", "ext.cnf", "-out", "int.crt",
    ])?;
    let store2 = d.join("store2");
    let int = d.join("int.crt");
    let int_key = d.join("int.key");
    let out = ca(&store2, &["import", "--cert", int.to_str().unwrap(), "--key", int_key.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--chain"));
    let out = ca(&store2, &["import", "--cert", int.to_str().unwrap(), "--key", int_key.to_str().unwrap(), "--chain", crt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exported = d.join("hosts.crt");
    let out = ca(&store2, &["export", "--out", exported.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 certificate(s)"));
    // The exported chain verifies the intermediate up to the root.
    let verify = openssl(&d, &["verify", "-CAfile", exported.to_str().unwrap(), int.to_str().unwrap()])?;
    assert!(verify.contains("OK"), "{verify}");

    // A trial CA, and a key left readable by others is refused at load.
    let store3 = d.join("store3");
    let out = ca(&store3, &["trial"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ECDSA P-256"));
    assert_eq!(std::fs::metadata(store3.join("ca.key"))?.permissions().mode() & 0o777, 0o600);
    Ok(())
}
