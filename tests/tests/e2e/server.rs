//! The server around the API: health, reflection, status, start-up checks.

use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use vault_tests::{TestVault, assert_success, outcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_status() {
    let vault = TestVault::start();
    let mut c = vault.client().await;
    assert_eq!(c.health("").await.unwrap(), ServingStatus::Serving);
    assert_eq!(
        c.health("vault.v1.TokenService").await.unwrap(),
        ServingStatus::Serving
    );
    let s = c.status().await.unwrap();
    assert!(!s.sealed);
    assert_eq!(s.active_kek_version, 1);
    assert_eq!(s.schema_fields, 16);
    assert_eq!(s.storage, "sled");
    assert_eq!(s.root_key_source, "dev-key-file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_list_the_vault_services() {
    use tonic_reflection::pb::{v1, v1alpha};
    let vault = TestVault::start();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", vault.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        resp.message_response
    else {
        panic!("no service list")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"vault.v1.TokenService") && names.contains(&"vault.v1.SystemService"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "vault.v1.TokenService".into(),
            ),
        ),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.next().await.unwrap().unwrap();
    assert!(
        matches!(
            resp.message_response,
            Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f))
                if !f.file_descriptor_proto.is_empty()
        ),
        "v1alpha answers with the file descriptor"
    );
}

fn run_to_exit(vault: &TestVault, extra: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = vault.command();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(extra).output().unwrap();
    outcome(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_schema_stops_vaultd_naming_file_field_and_problem() {
    let mut vault = TestVault::start();
    assert!(vault.stop());
    let bad = vault.dir().join("bad-fields.toml");
    std::fs::write(
        &bad,
        "version = 1\n[classes.c]\nretention = \"10d\"\nafter = \"collection\"\n\
         [fields.email]\nclass = \"c\"\nvalidator = \"emial\"\nmask = \"email\"\npurposes = [\"x\"]\n\
         [fields.phone]\nclass = \"nope\"\nvalidator = \"phone_e164\"\nmask = \"last4\"\n",
    )
    .unwrap();
    let (ok, stderr) = run_to_exit(&vault, &["--schema", bad.to_str().unwrap(), "serve"], &[]);
    assert!(!ok, "vaultd must not start");
    assert!(
        stderr.contains("bad-fields.toml: field email: unknown validator \"emial\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad-fields.toml: field phone: class \"nope\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad-fields.toml: field phone: missing purposes"),
        "{stderr}"
    );

    std::fs::write(&bad, "version = 1\n[fields.email\n").unwrap();
    let (ok, stderr) = run_to_exit(&vault, &["--schema", bad.to_str().unwrap(), "check"], &[]);
    assert!(!ok);
    assert!(
        stderr.contains("bad-fields.toml") && stderr.contains("line 2"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_are_reported_all_at_once() {
    let vault = TestVault::start();
    let (ok, stderr) = run_to_exit(
        &vault,
        &["check"],
        &[
            ("VAULT_MAX_BATCH_ITEMS", "many"),
            ("VAULT_DURABILITY", "sometimes"),
            ("VAULT_LISTEN_ADDR", "0.0.0.0:1"),
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("VAULT_MAX_BATCH_ITEMS"), "{stderr}");
    assert!(stderr.contains("durability"), "{stderr}");
    // The harness's --listen 127.0.0.1:0 wins over the environment, so the
    // non-loopback refusal is shown with a command line of its own.
    let out = std::process::Command::new(vault_tests::bin("vaultd-under-test"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(vault.data_dir())
        .arg("--root-key-file")
        .arg(vault.key_file())
        .arg("check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_root_key_refuses_to_start() {
    let mut vault = TestVault::start();
    vault
        .client()
        .await
        .tokenize("rk", &[("email", "rk@example.com")], &[], "")
        .await
        .unwrap();
    assert!(vault.stop());
    let key = vault.key_file();
    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let (ok, stderr) = run_to_exit(&vault, &["serve"], &[]);
    assert!(!ok);
    assert!(
        stderr.contains("is initialised but its root key file"),
        "{stderr}"
    );
    assert!(!key.exists(), "never creates a new key for existing data");

    // Another key file.
    let other = vault.dir().join("other.key");
    let out = std::process::Command::new(vault_tests::bin("vaultd-under-test"))
        .arg("--root-key-file")
        .arg(&other)
        .arg("--data-dir")
        .arg(vault.dir().join("d2"))
        .arg("init")
        .output()
        .unwrap();
    assert_success(&out);
    std::fs::copy(&other, &key).unwrap();
    let (ok, stderr) = run_to_exit(&vault, &["serve"], &[]);
    assert!(!ok);
    assert!(stderr.contains("root key does not open"), "{stderr}");

    std::fs::write(&key, saved).unwrap();
    vault.restart();
    let shown = vault
        .client()
        .await
        .lookup("email", "rk@example.com", "customer_support")
        .await
        .unwrap();
    assert_eq!(shown.len(), 1);
}

/// A client that never answers the server's GOAWAY cannot hold shutdown up
/// beyond the grace period.
#[test]
fn shutdown_waits_for_silent_clients_only_the_grace_period() {
    let mut vault = TestVault::start_with(&[("VAULT_SHUTDOWN_GRACE_SECS", "1")]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt.block_on(vault.client());
    rt.block_on(client.status()).unwrap();
    // The runtime is no longer driven: the open connection goes silent.
    let started = std::time::Instant::now();
    assert!(vault.stop(), "vaultd exits cleanly");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        vault.log().contains("grace period"),
        "the forced close is logged"
    );
    drop(client);
}

/// `vault::server::run`, what vaultd runs, embedded in this process: it
/// serves on the listener it is given until its shutdown future resolves,
/// then stops cleanly (its trail ends with `vault_stop`, and a second start
/// on the same directory reads it so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_run_serves_in_process_until_its_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = vault::Config {
        data_dir: dir.path().join("data"),
        root_key_file: dir.path().join("root.key"),
        init_if_missing: true,
        ..vault::Config::default()
    };
    for run in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(vault::server::run(config.clone(), listener, async {
            let _ = stopped.await;
        }));
        let mut c = match vault_client::VaultClient::connect(&addr).await {
            Ok(c) => c,
            Err(e) => {
                let r = tokio::time::timeout(std::time::Duration::from_secs(5), served).await;
                panic!("run {run}: {e:?}; run gave {r:?}");
            }
        };
        let mut serving = false;
        for _ in 0..100 {
            if c.health("vault.v1.TokenService").await.ok() == Some(ServingStatus::Serving) {
                serving = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if !serving {
            let r = tokio::time::timeout(std::time::Duration::from_secs(5), served).await;
            panic!("run {run} does not serve: {r:?}");
        }
        // Authentication is on, as in vaultd.
        assert_eq!(
            c.status().await.unwrap_err().code,
            tonic::Code::Unauthenticated
        );
        drop(c);
        stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(30), served)
            .await
            .expect("run returns after its shutdown")
            .unwrap()
            .unwrap();
    }
    // Both runs ended with their stop event (the second start found the
    // first one's clean end), and the trail verifies offline.
    let segments: Vec<_> = std::fs::read_dir(dir.path().join("data/audit"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .collect();
    assert!(!segments.is_empty());
    let mut stops = 0;
    for s in segments {
        let bytes = std::fs::read(s.path()).unwrap();
        stops += bytes
            .windows(b"vault_stop".len())
            .filter(|w| *w == b"vault_stop")
            .count();
    }
    assert_eq!(stops, 2, "one vault_stop per run");
}
