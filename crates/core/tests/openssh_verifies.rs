//! Our SSHSIG signatures are checked by OpenSSH's own `ssh-keygen -Y verify`, the
//! tool an auditor has, with no Countersign code involved.

use std::process::Command;

use countersign_core::signer::{MemoryKeyStore, Signer, NAMESPACE};

#[test]
fn ssh_keygen_verifies_a_decision_signature_and_rejects_a_changed_payload() {
    let (signer, _) = Signer::load_or_create(&MemoryKeyStore::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let payload = br#"{"approver":"ana@example.com","verdict":"approve"}"#;
    let sig = dir.path().join("payload.sig");
    let signers = dir.path().join("allowed_signers");
    std::fs::write(&sig, signer.sign(payload).unwrap()).unwrap();
    std::fs::write(
        &signers,
        signer.allowed_signers_line("ana@example.com") + "\n",
    )
    .unwrap();

    let verify = |data: &[u8]| {
        let mut child = Command::new("ssh-keygen")
            .args([
                "-Y",
                "verify",
                "-n",
                NAMESPACE,
                "-I",
                "ana@example.com",
                "-f",
            ])
            .arg(&signers)
            .arg("-s")
            .arg(&sig)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ssh-keygen (apt package openssh-client)");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(data).unwrap();
        child.wait_with_output().unwrap()
    };
    let good = verify(payload);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(String::from_utf8_lossy(&good.stdout)
        .contains("Good \"countersign-decision\" signature for ana@example.com"));
    let bad = verify(br#"{"approver":"ana@example.com","verdict":"deny"}"#);
    assert!(!bad.status.success());
}
