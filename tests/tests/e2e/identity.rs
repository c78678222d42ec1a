//! Authentication (PCI DSS 8.3): bearer tokens and mTLS client
//! certificates; and access policies that are invalid at start or reload.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use std::process::Stdio;
use tonic::Code;
use vault_client::proto::Disclosure;
use vault_client::proto::QueryRequest;
use vault_client::{TlsOptions, VaultClient};
use vault_tests::{PolicyChoice, TestVault, audit_events, bin, scan_for};

/// PCI DSS 8.3: no, malformed, wrong, revoked and expired credentials are
/// refused UNAUTHENTICATED; only operators issue tokens; the store holds
/// only keyed hashes of the secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_8_3_bearer_tokens() {
    let mut vault = TestVault::start_default_policy();
    let mut op = vault.operator().await;
    assert_eq!(op.who_am_i().await.unwrap().role, "operator");
    let created = op
        .create_principal("alice@travel.example", "auditor", 60)
        .await
        .unwrap();
    let token = created.token.clone();
    let id = created.principal.unwrap().id;
    assert!(token.starts_with("vt1.") && token.contains(&id));

    let status = |c: VaultClient| async move {
        let mut c = c;
        c.status().await.map(|_| ()).map_err(|e| e.code)
    };
    assert_eq!(
        status(vault.anonymous().await).await,
        Err(Code::Unauthenticated)
    );
    for bad in [
        "garbage".to_owned(),
        format!("{}x", token),
        // Same id, another secret.
        format!(
            "{}{}",
            &token[..token.len() - 1],
            if token.ends_with('A') { 'B' } else { 'A' }
        ),
    ] {
        let c = vault.anonymous().await.with_token(&bad).unwrap();
        assert_eq!(status(c).await, Err(Code::Unauthenticated), "{bad}");
    }
    let alice = vault.anonymous().await.with_token(&token).unwrap();
    let mut alice2 = alice.clone();
    assert_eq!(
        alice2.who_am_i().await.unwrap().name,
        "alice@travel.example"
    );
    assert_eq!(status(alice.clone()).await, Ok(()));
    // An auditor cannot issue tokens; nobody can issue one for longer than the limit.
    let err = alice2
        .create_principal("mallory", "operator", 3600)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::PermissionDenied);
    let err = op
        .create_principal("bob", "billing_clerk", 400 * 86_400)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);

    // The data directory holds neither the secret nor its raw bytes.
    vault.stop();
    let secret = token.rsplit('.').next().unwrap();
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret)
        .unwrap();
    let hits = scan_for(
        &vault.data_dir(),
        &[secret.as_bytes().to_vec(), raw, token.as_bytes().to_vec()],
    );
    assert!(hits.is_empty(), "{hits:?}");
    assert!(!vault.log().contains(secret), "the secret is never logged");
    vault.restart();

    // Revoked: refused at once.
    let mut op = vault.operator().await;
    let bob = op.create_principal("bob", "auditor", 3600).await.unwrap();
    let listed = op.list_principals().await.unwrap();
    assert!(listed.iter().any(|p| p.name == "bob" && p.revoked_at == 0));
    op.revoke_principal(&bob.principal.unwrap().id)
        .await
        .unwrap();
    let c = vault.anonymous().await.with_token(&bob.token).unwrap();
    assert_eq!(status(c).await, Err(Code::Unauthenticated));

    // Expired: alice's token lived 60 seconds; move the vault's clock on.
    vault.stop();
    vault.set_env("VAULT_TEST_CLOCK_OFFSET_SECS", "120");
    vault.restart();
    let c = vault.anonymous().await.with_token(&token).unwrap();
    assert_eq!(status(c).await, Err(Code::Unauthenticated));
}

struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate and key (PEM) with `cn` and optional URI SAN.
    fn leaf(&self, cn: &str, dns: Option<&str>, uri: Option<&str>) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(dns.map(|d| vec![d.to_owned()]).unwrap_or_default()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(u) = uri {
            params
                .subject_alt_names
                .push(SanType::URI(u.try_into().unwrap()));
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// mTLS: a certificate from the configured CA authenticates as its URI SAN
/// (or CN) in the configured role; one from another CA never connects; one
/// the configuration does not map, or none at all, is UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_8_3_mtls_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new("Travel Example CA");
    let other = Pki::new("Somebody Else CA");
    let (server_cert, server_key) = ca.leaf("vault", Some("vault.travel.example"), None);
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let config = format!(
        "tls_cert_file = {:?}\ntls_key_file = {:?}\ntls_client_ca_file = {:?}\n\
         [mtls_principals]\n\"spiffe://travel.example/booking-service\" = \"booking_service\"\n\
         \"payments.travel.example\" = \"payment_processor\"\n",
        write("server.pem", &server_cert),
        write("server.key", &server_key),
        write("ca.pem", &ca.ca_pem),
    );
    let config_file = write("vault.toml", &config);
    let vault = TestVault::start_full(&[("VAULT_CONFIG", &config_file)], PolicyChoice::Default);
    let connect = |cert: Option<(String, String)>| {
        let tls = TlsOptions {
            ca_pem: ca.ca_pem.clone().into_bytes(),
            client_cert_pem: cert.as_ref().map(|c| c.0.clone().into_bytes()),
            client_key_pem: cert.map(|c| c.1.into_bytes()),
            domain: Some("vault.travel.example".into()),
        };
        let addr = vault.addr.clone();
        async move { VaultClient::connect_with(&addr, Some(&tls)).await }
    };

    let booking = ca.leaf(
        "booking",
        None,
        Some("spiffe://travel.example/booking-service"),
    );
    let mut c = connect(Some(booking)).await.unwrap();
    let me = c.who_am_i().await.unwrap();
    assert_eq!(
        (me.name.as_str(), me.role.as_str(), me.auth.as_str()),
        (
            "spiffe://travel.example/booking-service",
            "booking_service",
            "mtls"
        )
    );
    let t = c
        .tokenize("m-1", &[("card_number", "4111111111111111")], &[], "")
        .await
        .unwrap();
    let shown = c
        .detokenize(&[t[0].token.as_str()], "booking")
        .await
        .unwrap();
    assert_eq!(shown[0].disclosure, Disclosure::Masked as i32);

    // The CN, when there is no URI SAN.
    let mut p = connect(Some(ca.leaf("payments.travel.example", None, None)))
        .await
        .unwrap();
    assert_eq!(p.who_am_i().await.unwrap().role, "payment_processor");
    let shown = p
        .detokenize(&[t[0].token.as_str()], "payment_authorization")
        .await
        .unwrap();
    assert_eq!(shown[0].value, "4111111111111111");

    // Signed by the right CA but not mapped to a role.
    let mut u = connect(Some(ca.leaf(
        "stranger",
        None,
        Some("spiffe://travel.example/stranger"),
    )))
    .await
    .unwrap();
    assert_eq!(u.who_am_i().await.unwrap_err().code, Code::Unauthenticated);
    // No certificate and no token.
    let mut n = connect(None).await.unwrap();
    assert_eq!(n.who_am_i().await.unwrap_err().code, Code::Unauthenticated);
    // A certificate from another CA: the handshake fails, nothing is served.
    let foreign = other.leaf(
        "booking",
        None,
        Some("spiffe://travel.example/booking-service"),
    );
    // (The refused handshake reaches the client as UNAVAILABLE, UNKNOWN or
    // CANCELLED, depending on when the server's alert arrives.)
    let code = match connect(Some(foreign)).await {
        Err(e) => e.code,
        Ok(mut f) => f.who_am_i().await.unwrap_err().code,
    };
    assert!(
        matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled),
        "{code:?}"
    );
    // Plaintext to a TLS vault gets nowhere either.
    let plain = VaultClient::connect(&vault.addr).await;
    if let Ok(mut plain) = plain {
        assert!(plain.who_am_i().await.is_err());
    }
}

/// Without TLS the vault refuses a non-loopback address.
#[test]
fn no_tls_means_loopback_only() {
    let vault_dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("vaultd-under-test"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(vault_dir.path().join("data"))
        .arg("check")
        .env_remove("VAULT_CONFIG")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("TLS"),
        "{err}"
    );
}

fn policy_copy(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.extension()
            .is_some_and(|x| x == "cedar" || x == "cedarschema")
        {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    for (n, t) in extra {
        std::fs::write(dir.path().join(n), t).unwrap();
    }
    dir
}

/// A broken policy at start stops vaultd naming the file and line.
#[test]
fn a_broken_policy_stops_vaultd_with_file_and_line() {
    let policies = policy_copy(&[(
        "zz_broken.cedar",
        "// oops\n\npermit (principal, action, resource)\n",
    )]);
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("vaultd-under-test"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path().join("data"))
        .arg("--root-key-file")
        .arg(data.path().join("root.key"))
        .arg("--policy-dir")
        .arg(policies.path())
        .env_remove("VAULT_CONFIG")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zz_broken.cedar:3:"), "{err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "it never served"
    );
}

/// A broken reload (RPC or SIGHUP) keeps the running policy and says why;
/// a good one takes effect at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_reload_keeps_the_running_policy() {
    // The intern is a data role from the start (masked e-mail for billing),
    // so its token is granted by two principals: a token issued by one never
    // acts on personal data, whatever a reload says.
    let policies = policy_copy(&[(
        "zz_intern.cedar",
        "@id(\"intern_masked\")\npermit (principal in Vault::Role::\"intern\", action == Vault::Action::\"reveal_masked\", resource)\nwhen { context.purpose == \"billing\" };\n",
    )]);
    let dir = policies.path().display().to_string();
    let vault = TestVault::start_full(&[("VAULT_POLICY_DIR", &dir)], PolicyChoice::Default);
    let mut booking = vault.client_as("booking_service").await;
    let t = booking
        .tokenize("r-1", &[("email", "reload@example.com")], &[], "")
        .await
        .unwrap()
        .remove(0)
        .token;
    let mut intern = vault.client_as("intern").await;
    let denied = intern.detokenize(&[t.as_str()], "booking").await.unwrap();
    assert_eq!(denied[0].disclosure, Disclosure::Denied as i32);

    std::fs::write(
        policies.path().join("zz_intern.cedar"),
        "@id(\"intern_masked\")\npermit (principal in Vault::Role::\"intern\", action == Vault::Action::\"reveal_masked\", resource)\nwhen { context.purpos == \"booking\" };\n",
    )
    .unwrap();
    let mut op = vault.operator().await;
    let err = op.reload_policy().await.unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(
        err.violations
            .iter()
            .any(|(_, d)| d.contains("zz_intern.cedar:3:")),
        "{err:?}"
    );
    // SIGHUP with the same broken file: logged, and the old policy stays.
    let pid = vault_pid(&vault);
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    wait_for_log(&vault, "access policy reload failed");
    let still = intern.detokenize(&[t.as_str()], "booking").await.unwrap();
    assert_eq!(still[0].disclosure, Disclosure::Denied as i32);
    // Only operators reload.
    assert_eq!(
        intern.reload_policy().await.unwrap_err().code,
        Code::PermissionDenied
    );

    // Fixed, and reloaded by SIGHUP: the cached decision is gone.
    std::fs::write(
        policies.path().join("zz_intern.cedar"),
        "@id(\"intern_masked\")\npermit (principal in Vault::Role::\"intern\", action == Vault::Action::\"reveal_masked\", resource)\nwhen { context.purpose == \"booking\" };\n",
    )
    .unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    wait_for_log(&vault, "access policy reloaded");
    let masked = intern.detokenize(&[t.as_str()], "booking").await.unwrap();
    assert_eq!(masked[0].disclosure, Disclosure::Masked as i32);
    assert_eq!(masked[0].value, "r***@example.com");
    let r = op.reload_policy().await.unwrap();
    assert!(r.files.iter().any(|f| f.ends_with("zz_intern.cedar")));
}

fn vault_pid(vault: &TestVault) -> String {
    vault.pid().unwrap().to_string()
}

fn wait_for_log(vault: &TestVault, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !vault.log().contains(what) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {what:?} in the log"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The number after `key=` in a summary event's detail.
fn count_in(detail: &str, key: &str) -> u64 {
    detail
        .split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {detail:?}"))
}

/// Bounded under hostile load: one peer floods the vault with bad bearer
/// tokens (malformed ones, unknown credential ids, a real id with wrong
/// secrets). Beyond the per-peer limit the answers are RESOURCE_EXHAUSTED;
/// a good caller on another credential, from the same address (only
/// failures count), is served throughout; the trail holds the bound of
/// individual auth_failure events and summary events that count every other
/// failure exactly; neither the trail nor the log holds a bad secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_are_rate_limited() {
    const PER_PEER: usize = 5;
    const AUDITED: usize = 3;
    const ROUNDS: usize = 60;
    // A window far longer than the test: its summary is written at the
    // stop (no timing involved).
    let mut vault = TestVault::start_with(&[
        ("VAULT_AUTH_FAILURE_WINDOW_SECS", "3600"),
        ("VAULT_AUTH_FAILURES_PER_PEER", "5"),
        ("VAULT_AUTH_FAILURES_PER_CREDENTIAL", "1000"),
        ("VAULT_AUTH_FAILURES_AUDITED_PER_PEER", "3"),
    ]);
    // Issued before the flood: a victim whose id the flood knows, the good
    // caller and the auditor who reads the trail afterwards.
    let victim = vault.issue("victim", "auditor", 3600).await;
    let victim_id = victim.split('.').nth(1).unwrap().to_owned();
    let mut good = vault.client().await;
    good.status().await.unwrap();

    let mut bad = Vec::new();
    for i in 0..ROUNDS {
        bad.push(format!("garbage-{i:04}-Qx7"));
        // Unknown ids, and the victim's id with wrong secrets (43
        // base64url characters: 32 bytes).
        bad.push(format!("vt1.{i:016}.Zq{i:040}A"));
        bad.push(format!("vt1.{victim_id}.Wr{i:040}A"));
    }
    let base = vault.anonymous().await;
    let flood = async {
        let mut codes = Vec::new();
        for t in &bad {
            let mut c = base.clone().with_token(t).unwrap();
            codes.push(c.status().await.unwrap_err().code);
        }
        codes
    };
    let good_caller = async {
        let mut served = 0;
        for i in 0..30 {
            good.tokenize(
                &format!("flood-{i}"),
                &[("email", "good@example.com")],
                &[],
                "",
            )
            .await
            .expect("a good caller is served during the flood");
            served += 1;
            tokio::task::yield_now().await;
        }
        served
    };
    let (codes, served) = tokio::join!(flood, good_caller);
    assert_eq!(served, 30);
    let exhausted = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    let unauthenticated = codes
        .iter()
        .filter(|c| **c == Code::Unauthenticated)
        .count();
    assert_eq!(exhausted + unauthenticated, bad.len(), "{codes:?}");
    assert_eq!(&codes[..PER_PEER], [Code::Unauthenticated; PER_PEER]);
    assert_eq!(exhausted, bad.len() - PER_PEER, "{codes:?}");
    // The good caller is still served after it.
    good.status().await.unwrap();

    // A stop writes the window's summary: individual events up to the
    // bound, the rest counted. A restart starts with no counts.
    assert!(vault.stop());
    vault.restart();
    let mut auditor = vault.client_as("auditor").await;
    let failures = audit_events(
        &mut auditor,
        QueryRequest {
            event_type: "auth_failure".into(),
            ..Default::default()
        },
    )
    .await;
    let (summaries, single): (Vec<_>, Vec<_>) =
        failures.iter().partition(|e| e.outcome == "summary");
    assert_eq!(single.len(), AUDITED, "{single:?}");
    assert!(single.iter().all(|e| e.outcome == "unauthenticated"));
    assert_eq!(summaries.len(), 1, "one peer, one window: {summaries:?}");
    let s = summaries[0];
    assert_eq!(s.peer, "127.0.0.1");
    assert_eq!(s.status_code, Code::ResourceExhausted as i32);
    assert_eq!(
        count_in(&s.detail, "not_audited") as usize,
        bad.len() - AUDITED
    );
    assert_eq!(
        count_in(&s.detail, "resource_exhausted") as usize,
        exhausted
    );
    assert!(
        s.detail.contains(&format!("{victim_id}:{}", ROUNDS - 1)),
        "{}",
        s.detail
    );
    // No bad secret in the trail or the log (the victim's id is public).
    let trail = format!("{failures:?}");
    let log = vault.log();
    for t in &bad {
        let secret = t.rsplit('.').next().unwrap();
        assert!(!trail.contains(secret), "{secret} in the trail");
        assert!(!log.contains(secret), "{secret} in the log");
    }
    let victim_secret = victim.rsplit('.').next().unwrap();
    assert!(!trail.contains(victim_secret) && !log.contains(victim_secret));
    // A new window: the address is answered UNAUTHENTICATED again.
    let mut c = vault.anonymous().await.with_token("garbage").unwrap();
    assert_eq!(c.status().await.unwrap_err().code, Code::Unauthenticated);
}

/// Failures per credential id: beyond the limit, an attempt with that id
/// from an address that has failed is refused RESOURCE_EXHAUSTED before
/// its secret is checked, even the right secret; other credentials are
/// served. An id that was never issued is answered exactly like a real one,
/// so the limit tells nobody which ids exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_limits_per_credential_do_not_tell_whether_it_exists() {
    let vault = TestVault::start_with(&[
        ("VAULT_AUTH_FAILURES_PER_PEER", "1000"),
        ("VAULT_AUTH_FAILURES_PER_CREDENTIAL", "3"),
    ]);
    let real = vault.issue("real", "auditor", 3600).await;
    let id = real.split('.').nth(1).unwrap();
    let mut good = vault.client().await;
    let base = vault.anonymous().await;
    let codes = |prefix: String| {
        let base = base.clone();
        async move {
            let mut out = Vec::new();
            for i in 0..5 {
                let mut c = base
                    .clone()
                    .with_token(&format!("{prefix}.Ab{i:040}A"))
                    .unwrap();
                out.push(c.status().await.unwrap_err().code);
            }
            out
        }
    };
    let known = codes(format!("vt1.{id}")).await;
    let unknown = codes("vt1.AAAAAAAAAAAAAAAA".into()).await;
    let expected = [
        Code::Unauthenticated,
        Code::Unauthenticated,
        Code::Unauthenticated,
        Code::ResourceExhausted,
        Code::ResourceExhausted,
    ];
    assert_eq!(known, expected);
    assert_eq!(unknown, expected);
    // The right secret from this (failing) address is not even checked.
    let mut r = base.clone().with_token(&real).unwrap();
    assert_eq!(r.status().await.unwrap_err().code, Code::ResourceExhausted);
    // Another credential is served.
    good.status().await.unwrap();
}
