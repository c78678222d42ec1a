//! vaultctl against a live vaultd.

use std::process::{Command, Output, Stdio};
use vault_tests::{CORE_ROLE, TestVault, assert_success, bin, outcome, vaultctl};

#[track_caller]
fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&assert_success(out)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vaultctl_tour() {
    let vault = TestVault::start();
    let token = vault.token_for(CORE_ROLE).await;
    // tokenize from arguments and from standard input
    let out = vaultctl(
        &vault,
        &token,
        &[
            "--json",
            "tokenize",
            "--subject",
            "cli-1",
            "--purpose",
            "booking",
            "email=Cli@Example.com",
            "gender=M",
        ],
        None,
    );
    let v = json(&out);
    let email_token = v[0]["token"].as_str().unwrap().to_owned();
    assert_eq!(v[0]["field"], "email");
    let out = vaultctl(
        &vault,
        &token,
        &["--json", "tokenize", "--subject", "cli-1", "-"],
        Some("phone=+1 415 555 0111\nfull_name=Cli User\n"),
    );
    let v = json(&out);
    let phone_token = v[0]["token"].as_str().unwrap().to_owned();
    assert_eq!(v[1]["field"], "full_name");

    // detokenize as a table
    let out = vaultctl(
        &vault,
        &token,
        &[
            "detokenize",
            "--purpose",
            "customer_support",
            &email_token,
            &phone_token,
        ],
        None,
    );
    let table = assert_success(&out);
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["TOKEN", "FIELD", "DISCLOSURE", "VALUE"], "{table}");
    assert!(
        lines[1].contains("email")
            && lines[1].contains("PLAIN")
            && lines[1].contains("Cli@Example.com"),
        "{table}"
    );
    assert!(lines[2].contains("+14155550111"), "{table}");

    // lookup, update, detokenize again
    let v = json(&vaultctl(
        &vault,
        &token,
        &[
            "--json",
            "lookup",
            "--purpose",
            "customer_support",
            "email",
            "cli@example.com",
        ],
        None,
    ));
    assert_eq!(v, serde_json::json!([email_token]));
    let v = json(&vaultctl(
        &vault,
        &token,
        &[
            "--json",
            "update",
            "--purpose",
            "booking",
            &email_token,
            "-",
        ],
        Some("cli.new@example.com\n"),
    ));
    assert_eq!(v["value_version"], 2);
    let v = json(&vaultctl(
        &vault,
        &token,
        &["--json", "detokenize", "--purpose", "booking", &email_token],
        None,
    ));
    assert_eq!(v[0]["value"], "cli.new@example.com");
    assert_eq!(v[0]["disclosure"], "PLAIN");

    // status
    let v = json(&vaultctl(&vault, &token, &["--json", "status"], None));
    assert_eq!(v["sealed"], false);
    assert_eq!(v["storage"], "sled");
    let out = vaultctl(&vault, &token, &["status"], None);
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("active_kek_version")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vaultctl_failures_print_the_code_and_exit_non_zero() {
    let vault = TestVault::start();
    let token = vault.token_for(CORE_ROLE).await;
    let out = vaultctl(
        &vault,
        &token,
        &[
            "tokenize",
            "--subject",
            "cli-2",
            "email=not-an-email",
            "passport=1",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("INVALID_ARGUMENT"), "{err}");
    assert!(
        err.contains("fields[0].value: not a valid e-mail address"),
        "{err}"
    );
    assert!(err.contains("fields[1].field: unknown field"), "{err}");
    assert!(
        !err.contains("not-an-email"),
        "the value is never echoed: {err}"
    );
    assert!(out.stdout.is_empty());

    let out = vaultctl(
        &vault,
        &token,
        &["detokenize", "--purpose", "booking", "garbage"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("tokens[0]: malformed token")
    );

    let out = vaultctl(
        &vault,
        &token,
        &["tokenize", "--subject", "cli-3", "no-equals-sign"],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "a usage error");

    let out = Command::new(bin("vaultctl-under-test"))
        .args(["--addr", "127.0.0.1:1", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("UNAVAILABLE")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_query_follow_prints_new_events_as_they_come() {
    use std::io::{BufRead, BufReader};
    let vault = TestVault::start();
    let auditor = vault.token_for("auditor").await;
    let mut child = Command::new(bin("vaultctl-under-test"))
        .env("VAULTCTL_ADDR", &vault.addr)
        .env("VAULTCTL_TOKEN", &auditor)
        .args([
            "--json",
            "audit",
            "query",
            "--follow",
            "--interval-ms",
            "100",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // Written after the follower started: it must show up.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    vault
        .client()
        .await
        .tokenize("follow-1", &[("email", "f@example.com")], &[], "")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                seen.push(v.clone());
                if v["subject_id"] == "follow-1" {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    child.kill().unwrap();
    let _ = child.wait();
    assert!(found, "the tokenize event never showed: {seen:?}");
    // The follower's own polling is not in its output.
    assert!(
        !seen
            .iter()
            .any(|v| v["event_type"] == "audit_query" && v["principal"] == "auditor-test"),
        "{seen:?}"
    );
}

/// `vaultctl card tokenize` reads the number and CVV from standard input;
/// `vaultctl card reveal` shows what each role may see, with the brand; the
/// CVV comes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vaultctl_card_tokenize_and_reveal() {
    let vault = TestVault::start_default_policy();
    let booking = vault.token_for("booking_service").await;
    let processor = vault.token_for("payment_processor").await;
    let support = vault.token_for("customer_service").await;
    let v = json(&vaultctl(
        &vault,
        &booking,
        &[
            "--json",
            "card",
            "tokenize",
            "--subject",
            "cli-card",
            "--expiry",
            "12/99",
            "--name",
            "Ann Lee",
            "--cvv",
        ],
        Some("4111 1111 1111 1111\n737\n"),
    ));
    assert_eq!(v[0]["field"], "card_number");
    assert_eq!(v[0]["brand"], "visa");
    let card = v[0]["token"].as_str().unwrap().to_owned();
    let cvv = v[1]["token"].as_str().unwrap().to_owned();
    assert_eq!(card.len(), 16);
    assert!(card.ends_with("1111") && card != "4111111111111111");
    let reveal = |token: &str, purpose: &str| {
        json(&vaultctl(
            &vault,
            token,
            &[
                "--json",
                "card",
                "reveal",
                "--purpose",
                purpose,
                &card,
                &cvv,
            ],
            None,
        ))
    };
    let shown = reveal(&support, "customer_support");
    assert_eq!(shown[0]["disclosure"], "MASKED");
    assert_eq!(shown[0]["value"], "************1111");
    assert_eq!(shown[1]["disclosure"], "DENIED");
    let shown = reveal(&processor, "fraud_prevention");
    assert_eq!(shown[0]["disclosure"], "PARTIAL");
    assert_eq!(shown[0]["value"], "411111******1111");
    let shown = reveal(&processor, "payment_authorization");
    assert_eq!(shown[0]["value"], "4111111111111111");
    assert_eq!(shown[1]["value"], "737");
    let shown = reveal(&processor, "payment_authorization");
    assert_eq!(shown[1]["disclosure"], "EXPIRED");
    // The number never on the command line: without standard input, a usage error.
    let out = vaultctl(
        &vault,
        &booking,
        &["card", "tokenize", "--subject", "cli-card"],
        None,
    );
    assert!(!out.status.success());
    // The table form names the brand.
    let out = vaultctl(
        &vault,
        &support,
        &["card", "reveal", "--purpose", "customer_support", &card],
        None,
    );
    let text = assert_success(&out);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["TOKEN", "FIELD", "DISCLOSURE", "BRAND", "VALUE"],
            vec![
                card.as_str(),
                "card_number",
                "MASKED",
                "visa",
                "************1111"
            ],
        ],
        "{text}"
    );
}

/// `vaultctl subject erase` prints a receipt that `vaultctl subject
/// verify-receipt` checks offline with `vaultctl audit pubkey`; a receipt
/// whose readable fields were changed, or another key, fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vaultctl_erase_prints_a_receipt_that_verifies_offline() {
    let vault = TestVault::start();
    let core = vault.token_for(CORE_ROLE).await;
    let officer = vault.token_for("privacy_officer").await;
    let auditor = vault.token_for("auditor").await;
    json(&vaultctl(
        &vault,
        &core,
        &[
            "--json",
            "tokenize",
            "--subject",
            "cli-erase",
            "email=e@example.com",
        ],
        None,
    ));
    let out = vaultctl(
        &vault,
        &officer,
        &[
            "subject",
            "hold",
            "cli-erase",
            "--case",
            "C-1",
            "--reason",
            "audit",
        ],
        None,
    );
    assert_success(&out);
    let out = vaultctl(
        &vault,
        &officer,
        &["subject", "erase", "cli-erase", "--reason", "request 9"],
        None,
    );
    assert!(!out.status.success(), "held");
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED_PRECONDITION"));
    let out = vaultctl(
        &vault,
        &officer,
        &[
            "subject",
            "hold",
            "cli-erase",
            "--release",
            "--reason",
            "done",
        ],
        None,
    );
    assert_success(&out);
    let receipt = json(&vaultctl(
        &vault,
        &officer,
        &["subject", "erase", "cli-erase", "--reason", "request 9"],
        None,
    ));
    assert_eq!(receipt["subject_id"], "cli-erase");
    assert_eq!(receipt["fields"], 1);
    let pubkey = String::from_utf8(vaultctl(&vault, &auditor, &["audit", "pubkey"], None).stdout)
        .unwrap()
        .trim()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, receipt.to_string()).unwrap();
    let file = file.to_str().unwrap();
    let out = vaultctl(
        &vault,
        "",
        &["subject", "verify-receipt", file, "--pubkey", &pubkey],
        None,
    );
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("receipt verified"));
    // Changed readable fields, or another key: not valid.
    let mut changed = receipt.clone();
    changed["subject_id"] = "someone-else".into();
    std::fs::write(file, changed.to_string()).unwrap();
    let out = vaultctl(
        &vault,
        "",
        &["subject", "verify-receipt", file, "--pubkey", &pubkey],
        None,
    );
    assert!(!out.status.success());
    std::fs::write(file, receipt.to_string()).unwrap();
    let other = "00".repeat(32);
    let out = vaultctl(
        &vault,
        "",
        &["subject", "verify-receipt", file, "--pubkey", &other],
        None,
    );
    assert!(!out.status.success());
}

/// GDPR 30: `vaultctl policy check` (run by CI) passes the shipped policy
/// and fails, naming the field or class, a `fields.toml` where a field lacks
/// its class or purposes or a class its retention.
#[test]
fn gdpr_30_policy_check_fails_a_field_without_class_purposes_or_retention() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let fields = std::fs::read_to_string(shipped.join("fields.toml")).unwrap();
    let check = |fields_toml: &str| {
        let dir = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(&shipped).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
        std::fs::write(dir.path().join("fields.toml"), fields_toml).unwrap();
        let out = Command::new(bin("vaultctl-under-test"))
            .args(["policy", "check", "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        outcome(&out)
    };
    let (ok, err) = check(&fields);
    assert!(ok, "the shipped policy is valid: {err}");
    // Remove one line of one section.
    let without = |section: &str, key: &str| {
        let mut inside = false;
        fields
            .lines()
            .filter(|l| {
                if l.starts_with('[') {
                    inside = *l == section;
                }
                !(inside && l.starts_with(key))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (section, key, expect) in [
        ("[fields.email]", "class =", "field email"),
        ("[fields.email]", "purposes =", "field email"),
        (
            "[classes.contact]",
            "retention =",
            "class contact: missing retention",
        ),
    ] {
        let changed = without(section, key);
        assert_ne!(changed.len(), fields.len(), "{section} {key} was removed");
        let (ok, err) = check(&changed);
        assert!(!ok, "{section} without {key} passed");
        assert!(err.contains(expect), "{section} {key}: {err}");
    }
}

/// `vaultctl subject link` links a companion to its holder and `vaultctl
/// subject export` prints the export document: the holder's lists the
/// companion, the companion's holds its value and names its holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vaultctl_links_a_companion_and_exports_a_subject() {
    let vault = TestVault::start();
    let core = vault.token_for(CORE_ROLE).await;
    let officer = vault.token_for("privacy_officer").await;
    for (subject, email) in [
        ("cli-holder", "h@example.com"),
        ("cli-comp", "c@example.com"),
    ] {
        json(&vaultctl(
            &vault,
            &core,
            &[
                "--json",
                "tokenize",
                "--subject",
                subject,
                &format!("email={email}"),
            ],
            None,
        ));
    }
    let linked = json(&vaultctl(
        &vault,
        &officer,
        &[
            "--json",
            "subject",
            "link",
            "cli-comp",
            "--holder",
            "cli-holder",
            "--attestation",
            "terms v3 s4",
        ],
        None,
    ));
    assert_eq!(linked["holder_id"], "cli-holder");
    let export = |subject: &str| {
        json(&vaultctl(
            &vault,
            &officer,
            &[
                "subject",
                "export",
                subject,
                "--reason",
                "GDPR 15 request 1",
            ],
            None,
        ))
    };
    let holder = export("cli-holder");
    assert_eq!(holder["format"], "vault.subject-export.v1");
    assert_eq!(holder["companions"][0]["subject_id"], "cli-comp");
    assert_eq!(holder["fields"][0]["value"], "h@example.com");
    assert!(!holder.to_string().contains("c@example.com"));
    let comp = export("cli-comp");
    assert_eq!(comp["account_holder"]["subject_id"], "cli-holder");
    assert_eq!(comp["account_holder"]["attestation"], "terms v3 s4");
    // --unlink and --holder together are a usage error; --unlink alone works.
    let out = vaultctl(
        &vault,
        &officer,
        &["subject", "link", "cli-comp", "--unlink", "--holder", "x"],
        None,
    );
    assert!(!out.status.success());
    let out = vaultctl(
        &vault,
        &officer,
        &["subject", "link", "cli-comp", "--unlink"],
        None,
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no account holder"));
    assert!(
        export("cli-holder")["companions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// `vaultctl keys rotate` waits for the rewrap and says how many subjects
/// it rewrapped; `keys retire v1` then destroys v1; `vaultctl backup FILE`
/// writes a backup that `vaultd restore` accepts and refuses to overwrite
/// a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vaultctl_rotates_retires_and_backs_up() {
    let vault = TestVault::start();
    let core = vault.token_for(CORE_ROLE).await;
    let op = vault.operator_token().to_owned();
    for s in ["cli-k1", "cli-k2"] {
        json(&vaultctl(
            &vault,
            &core,
            &["--json", "tokenize", "--subject", s, "email=k@example.com"],
            None,
        ));
    }
    let r = json(&vaultctl(&vault, &op, &["--json", "keys", "rotate"], None));
    assert_eq!(r["active_kek_version"], 2);
    assert_eq!(r["rewrapped_subjects"], 2);
    let out = vaultctl(&vault, &op, &["keys", "retire", "v2"], None);
    assert!(
        !out.status.success(),
        "the active version cannot be retired"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED_PRECONDITION"));
    let out = vaultctl(&vault, &op, &["keys", "retire", "abc"], None);
    assert!(!out.status.success(), "not a version");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a KEK version"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = vaultctl(&vault, &op, &["keys", "retire", "v1"], None);
    assert_success(&out);
    let status = json(&vaultctl(&vault, &op, &["--json", "status"], None));
    assert_eq!(status["kek_versions"], serde_json::json!([2]));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.vbk");
    let f = file.to_str().unwrap();
    let r = json(&vaultctl(&vault, &op, &["--json", "backup", f], None));
    assert!(r["bytes"].as_u64().unwrap() > 0);
    let out = vaultctl(&vault, &op, &["backup", f], None);
    assert!(!out.status.success(), "an existing file is not overwritten");
    // `vaultd restore` of the backup into `into`, with an erasure journal.
    let restore = |into: &str, journal: Option<&str>| {
        let mut c = Command::new(bin("vaultd-under-test"));
        c.arg("--data-dir")
            .arg(dir.path().join(into))
            .arg("--root-key-file")
            .arg(vault.key_file())
            .args(["restore", "--from", f]);
        if let Some(j) = journal {
            c.args(["--erasure-journal", j]);
        }
        c.env_remove("VAULT_CONFIG").output().unwrap()
    };
    let out = restore("restored", None);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("restored 2 subjects"));

    // A damaged erasure journal is refused before anything is written: the
    // same directory then takes the backup alone.
    let journal = dir.path().join("j.vbk");
    let j = journal.to_str().unwrap();
    let out = vaultctl(&vault, &op, &["backup", "--journal-only", j], None);
    assert_success(&out);
    let mut bytes = std::fs::read(&journal).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&journal, bytes).unwrap();
    let out = restore("restored-again", Some(j));
    assert!(!out.status.success(), "a damaged journal is refused");
    let out = restore("restored-again", None);
    assert_success(&out);
}

/// `vaultctl unseal -` reads a share from standard input and shows the
/// progress; the threshold unseals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vaultctl_unseals_from_standard_input() {
    let (vault, shares) = TestVault::start_sealed(3, 2, &[]);
    let out = vaultctl(&vault, "", &["unseal", "-"], Some(&shares[0]));
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 of 2 given; still sealed"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("share.txt");
    std::fs::write(&file, &shares[2]).unwrap();
    let out = vaultctl(&vault, "", &["unseal", file.to_str().unwrap()], None);
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "unsealed");
    let status = json(&vaultctl(
        &vault,
        vault.operator_token(),
        &["--json", "status"],
        None,
    ));
    assert_eq!(status["sealed"], false);
}

/// `vaultctl bench` against a live vault: each workload named is reported
/// once over all its rounds (the baseline and the workloads compared with it
/// measured in turn), with no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vaultctl_bench_reports_each_workload_over_its_rounds() {
    let vault = TestVault::start();
    let token = vault.token_for(CORE_ROLE).await;
    let bench = |rounds: &str| {
        vaultctl(
            &vault,
            &token,
            &[
                "--json",
                "bench",
                "-c",
                "4",
                "--connections",
                "2",
                "-d",
                "0.25",
                "--warmup",
                "0",
                "--rounds",
                rounds,
                "--workloads",
                "health,detokenize",
            ],
            None,
        )
    };
    let out = bench("2");
    let v = json(&out);
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2, "one row per workload: {v}");
    for (row, name) in rows.iter().zip(["health", "detokenize"]) {
        assert_eq!(row["workload"], name);
        assert_eq!(row["rounds"], 2);
        let seconds = row["seconds"].as_f64().unwrap();
        assert!((seconds - 0.5).abs() < 1e-9, "{name}: two rounds of 0.25 s");
        let ok = row["ok"].as_u64().unwrap();
        assert!(ok > 0, "{name}: no request succeeded");
        assert_eq!(row["errors"], 0, "{name}");
        let rps = row["rpc_per_s"].as_f64().unwrap();
        assert!((rps - ok as f64 / seconds).abs() < 1e-6, "{name}: {rps}");
    }
    let ratio = |i: usize| rows[i]["ratio_to_baseline"].as_f64().unwrap();
    assert!((ratio(0) - 1.0).abs() < 1e-9);
    let expected = rows[1]["rpc_per_s"].as_f64().unwrap() / rows[0]["rpc_per_s"].as_f64().unwrap();
    assert!((ratio(1) - expected).abs() < 1e-9);
    let log = String::from_utf8_lossy(&out.stderr);
    for name in ["health", "detokenize"] {
        assert!(
            log.contains(&format!(
                "bench: {name} for 0.25s (+0s warm-up), C=4, round 2 of 2"
            )),
            "{log}"
        );
    }

    let out = bench("0");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rounds"));
}

/// Item 9 of issue 17: TLS options (`--ca-cert`, `--client-cert` and
/// `--client-key`, `--tls-domain`, or their environment variables) with an
/// `http://` address are a usage error (exit 2, a message that says why),
/// and nothing is sent: a listener standing in for the vault sees no
/// connection at all, while the same command without TLS options does
/// connect (so the listener would have seen one).
#[test]
fn vaultctl_refuses_tls_options_with_http() {
    use std::io::Read;
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("some.pem");
    std::fs::write(
        &pem,
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let pem = pem.to_str().unwrap();
    let token = "vt1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(bin("vaultctl-under-test"));
        cmd.env("VAULTCTL_ADDR", &addr)
            .env("VAULTCTL_TOKEN", token)
            .env_remove("VAULTCTL_CACERT")
            .env_remove("VAULTCTL_CLIENT_CERT")
            .env_remove("VAULTCTL_CLIENT_KEY")
            .env_remove("VAULTCTL_TLS_DOMAIN")
            .args(args)
            .arg("status")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 5] = [
        (&["--ca-cert", pem], &[]),
        (&["--client-cert", pem, "--client-key", pem], &[]),
        (&["--client-cert", pem], &[]),
        (
            &["--ca-cert", pem, "--client-cert", pem, "--client-key", pem],
            &[],
        ),
        (&[], &[("VAULTCTL_CACERT", pem)]),
    ];
    for (args, env) in cases {
        let out = run(args, env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains("plaintext http://"), "{args:?}: {err}");
        assert!(err.contains("nothing was sent"), "{args:?}: {err}");
        assert!(!err.contains(token), "{err}");
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("{args:?} {env:?}: vaultctl connected: {other:?}"),
        }
    }

    // The control: without TLS options the same address is dialled in
    // plaintext (HTTP/2's preface arrives), so the checks above would see it.
    let mut child = Command::new(bin("vaultctl-under-test"))
        .env("VAULTCTL_ADDR", &addr)
        .env_remove("VAULTCTL_TOKEN")
        .env_remove("VAULTCTL_CACERT")
        .arg("status")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(std::time::Instant::now() < deadline, "no connection");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut preface = [0u8; 14];
    conn.read_exact(&mut preface).unwrap();
    assert_eq!(&preface, b"PRI * HTTP/2.0");
    drop(conn);
    drop(listener);
    let _ = child.kill();
    let _ = child.wait();
}
