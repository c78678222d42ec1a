//! The connection vaultctl's global options describe: address, TLS and
//! bearer token, checked before anything is read or sent.

use crate::{Cli, Failure};
use vault_client::{Target, TlsOptions};
use zeroize::Zeroizing;

/// The connection the global options describe.
pub fn target(cli: &Cli) -> Result<Target, Failure> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Failure::Usage(format!("{}: {e}", p.display())))
    };
    // TLS options with an http:// address would be dropped by the
    // transport and the token and data sent in clear: refuse before
    // anything is read or sent.
    let tls_options: Vec<&str> = [
        ("--ca-cert", cli.ca_cert.is_some()),
        ("--client-cert", cli.client_cert.is_some()),
        ("--client-key", cli.client_key.is_some()),
        ("--tls-domain", cli.tls_domain.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    if !tls_options.is_empty() && vault_client::is_plaintext_addr(&cli.addr) {
        return Err(Failure::Usage(format!(
            "{} asks for TLS, but the address is a plaintext http:// one: nothing was sent; use --addr https://HOST:PORT (or HOST:PORT)",
            tls_options.join(" and ")
        )));
    }
    if tls_options.is_empty() && cli.addr.to_ascii_lowercase().starts_with("https://") {
        return Err(Failure::Usage(
            "an https:// address needs --ca-cert (the CA of the vault's certificate)".into(),
        ));
    }
    let tls = match &cli.ca_cert {
        None if cli.client_cert.is_some() => {
            return Err(Failure::Usage("--client-cert needs --ca-cert (TLS)".into()));
        }
        None => None,
        Some(ca) => {
            if cli.client_cert.is_some() != cli.client_key.is_some() {
                return Err(Failure::Usage(
                    "give both --client-cert and --client-key, or neither".into(),
                ));
            }
            Some(TlsOptions {
                ca_pem: read(ca)?,
                client_cert_pem: cli.client_cert.as_deref().map(read).transpose()?,
                client_key_pem: cli.client_key.as_deref().map(read).transpose()?,
                domain: cli.tls_domain.clone(),
            })
        }
    };
    Ok(Target {
        addr: cli.addr.clone(),
        tls,
        token: cli.token.clone().map(Zeroizing::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn target_of(args: &[&str]) -> Result<Target, Failure> {
        let mut all = vec!["vaultctl"];
        all.extend_from_slice(args);
        all.push("status");
        target(&Cli::try_parse_from(all).unwrap())
    }

    #[test]
    fn tls_options_with_an_http_address_are_a_usage_error() {
        for args in [
            &["--addr", "http://127.0.0.1:1", "--ca-cert", "/no/such.pem"][..],
            &["--addr", "HTTP://127.0.0.1:1", "--ca-cert", "/no/such.pem"][..],
            &[
                "--addr",
                "http://h:1",
                "--client-cert",
                "c.pem",
                "--client-key",
                "k.pem",
            ][..],
            &["--addr", "http://h:1", "--tls-domain", "vault.example"][..],
        ] {
            match target_of(args) {
                Err(Failure::Usage(m)) => assert!(m.contains("plaintext http://"), "{m}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
        // Without a scheme, TLS options mean https; without them, http.
        assert!(matches!(
            target_of(&["--addr", "127.0.0.1:1", "--ca-cert", "/no/such.pem"]),
            Err(Failure::Usage(m)) if m.contains("/no/such.pem")
        ));
        assert!(
            target_of(&["--addr", "http://127.0.0.1:1"])
                .unwrap()
                .tls
                .is_none()
        );
        assert!(target_of(&[]).unwrap().tls.is_none());
        assert!(matches!(
            target_of(&["--addr", "https://h:1"]),
            Err(Failure::Usage(m)) if m.contains("needs --ca-cert")
        ));
        assert!(vault_client::is_plaintext_addr("http://h:1"));
        assert!(!vault_client::is_plaintext_addr("https://h:1"));
        assert!(!vault_client::is_plaintext_addr("h:1"));
    }
}
