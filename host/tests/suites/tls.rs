//! The same binary serving https and wss (`--tls-cert`, `--tls-key`).

use std::sync::Arc;

use crate::common::*;
use serde_json::{Value, json};
use tokio_tungstenite::{Connector, connect_async_tls_with_config};

#[tokio::test]
async fn tokens_over_https_and_sockets_over_wss() {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();

    let server = TestServer::start_with(
        TWO_APPS,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);

    // A client that trusts only this certificate.
    let _ = http(); // installs the TLS provider
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let response = client
        .post(server.url("/v1/tokens"))
        .basic_auth(ALPHA.0, Some(ALPHA.1))
        .json(&json!({"user_id": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let token = Token::from_response(&response.json::<Value>().await.unwrap());
    assert!(
        token.ws_url.starts_with("wss://127.0.0.1:"),
        "{}",
        token.ws_url
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    away_from_step_edge(30, 3).await;
    let (mut socket, _) = connect_async_tls_with_config(
        token.url_with(&token.code(0)),
        None,
        false,
        Some(Connector::Rustls(Arc::new(tls))),
    )
    .await
    .unwrap();
    let welcome = next_json(&mut socket).await.unwrap();
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["access_id"], token.access_id.as_str());

    // Plain HTTP on the TLS port gets nowhere.
    let plain = http()
        .get(server.url("/healthz").replacen("https", "http", 1))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}
