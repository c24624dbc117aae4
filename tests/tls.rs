//! TLS end to end with certificates made in the test (rcgen): ALPN on the listener,
//! HTTPS upstreams with a private CA, mutual TLS, rotation, bad input.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

type Ca = CertifiedIssuer<'static, KeyPair>;

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf for `localhost` signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &Ca, serial: u64, purpose: ExtendedKeyUsagePurpose) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.serial_number = Some(SerialNumber::from(serial));
    params.extended_key_usages = vec![purpose];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn client_tls(ca_pem: &str, alpn: &[&[u8]], client: Option<(&str, &str)>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(canary_proxy::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// One HTTPS request: returns (negotiated ALPN, status, x-served-by, leaf cert DER).
async fn https_get(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> Result<(Option<Vec<u8>>, StatusCode, String, Vec<u8>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let io = TokioIo::new(tls);
    let req = Request::get("/")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = if alpn.as_deref() == Some(b"h2") {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = response.status();
    let served = response
        .headers()
        .get("x-served-by")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let _ = response.into_body().collect().await;
    Ok((alpn, status, served, leaf))
}

fn tls_proxy_config(dir: &Path, upstream: SocketAddr, client_ca: Option<&Path>) -> String {
    let client_ca = client_ca.map_or(String::new(), |p| {
        format!(", client_ca = \"{}\"", p.display())
    });
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\"{client_ca} }}\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        dir.join("tls.crt").display(),
        dir.join("tls.key").display(),
        route_toml("r", upstream, upstream, 0.0, "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_h1_and_h2_clients_negotiate_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("test CA");
    let (cert, key) = leaf(&ca, 1, ExtendedKeyUsagePurpose::ServerAuth);
    write(dir.path(), "tls.crt", &cert);
    write(dir.path(), "tls.key", &key);
    let up = MockUpstream::start("plain-upstream").await;
    let proxy = TestProxy::start(&tls_proxy_config(dir.path(), up.addr, None)).await;

    let both = client_tls(&ca.pem(), &[b"h2", b"http/1.1"], None);
    let (alpn, status, served, _) = https_get(proxy.addr, &both).await.unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(
        (status, served.as_str()),
        (StatusCode::OK, "plain-upstream")
    );
    assert_eq!(up.last_headers()["x-forwarded-proto"], "https");

    let h1 = client_tls(&ca.pem(), &[b"http/1.1"], None);
    let (alpn, status, _, _) = https_get(proxy.addr, &h1).await.unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(status, StatusCode::OK);

    // No ALPN at all: HTTP/1.1.
    let none = client_tls(&ca.pem(), &[], None);
    let (alpn, status, _, _) = https_get(proxy.addr, &none).await.unwrap();
    assert_eq!((alpn, status), (None, StatusCode::OK));
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_a_clear_400() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("test CA");
    let (cert, key) = leaf(&ca, 1, ExtendedKeyUsagePurpose::ServerAuth);
    write(dir.path(), "tls.crt", &cert);
    write(dir.path(), "tls.key", &key);
    let up = MockUpstream::start("up").await;
    let proxy = TestProxy::start(&tls_proxy_config(dir.path(), up.addr, None)).await;
    let response = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains("plain HTTP sent to a TLS port"),
        "{response}"
    );
    // The listener still serves TLS.
    let (_, status, _, _) = https_get(proxy.addr, &client_tls(&ca.pem(), &[], None))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

/// An HTTPS upstream in the test process.
async fn https_upstream(cert: &str, key: &str, name: &'static str) -> SocketAddr {
    let config = rustls::ServerConfig::builder_with_provider(canary_proxy::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |_req| async move {
                    let mut response =
                        http::Response::new(Full::new(Bytes::from_static(b"secure")));
                    response
                        .headers_mut()
                        .insert("x-served-by", name.parse().unwrap());
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_against_their_ca() {
    let dir = tempfile::tempdir().unwrap();
    let private_ca = ca("private CA");
    let other_ca = ca("some other CA");
    let (cert, key) = leaf(&private_ca, 7, ExtendedKeyUsagePurpose::ServerAuth);
    let upstream = https_upstream(&cert, &key, "https-upstream").await;
    let good = write(dir.path(), "good-ca.pem", &private_ca.pem());
    let wrong = write(dir.path(), "wrong-ca.pem", &other_ca.pem());
    let route = |name: &str, prefix: &str, ca: &Path| {
        format!(
            "[[route]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nstable = {{ endpoints = [\"https://{upstream}\"], ca_file = \"{}\", server_name = \"localhost\" }}\ncanary = {{ endpoints = [\"https://{upstream}\"], ca_file = \"{}\", server_name = \"localhost\" }}\n",
            ca.display(),
            ca.display()
        )
    };
    let proxy = TestProxy::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{}{}",
        route("good", "/good", &good),
        route("wrong", "/wrong", &wrong)
    ))
    .await;
    let client = client();
    let (status, headers, body) = get(&client, &proxy.url("/good"), &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "secure"));
    assert_eq!(headers["x-served-by"], "https-upstream");
    let (status, _, body) = get(&client, &proxy.url("/wrong"), &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(
        proxy
            .metric("canary_proxy_upstream_errors_total{route=\"wrong\",upstream=\"stable\",kind=\"connect\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_valid_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca("server CA");
    let client_ca = ca("client CA");
    let stranger_ca = ca("stranger CA");
    let (cert, key) = leaf(&server_ca, 1, ExtendedKeyUsagePurpose::ServerAuth);
    write(dir.path(), "tls.crt", &cert);
    write(dir.path(), "tls.key", &key);
    let ca_file = write(dir.path(), "clients.pem", &client_ca.pem());
    let up = MockUpstream::start("up").await;
    let proxy = TestProxy::start(&tls_proxy_config(dir.path(), up.addr, Some(&ca_file))).await;

    let anonymous = client_tls(&server_ca.pem(), &[], None);
    assert!(
        https_get(proxy.addr, &anonymous).await.is_err(),
        "no client cert must be refused"
    );
    let (stranger_cert, stranger_key) = leaf(&stranger_ca, 3, ExtendedKeyUsagePurpose::ClientAuth);
    let stranger = client_tls(&server_ca.pem(), &[], Some((&stranger_cert, &stranger_key)));
    assert!(
        https_get(proxy.addr, &stranger).await.is_err(),
        "a cert from another CA must be refused"
    );
    assert_eq!(up.requests(), 0);

    let (client_cert, client_key) = leaf(&client_ca, 2, ExtendedKeyUsagePurpose::ClientAuth);
    let trusted = client_tls(&server_ca.pem(), &[], Some((&client_cert, &client_key)));
    let (_, status, _, _) = https_get(proxy.addr, &trusted).await.unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_takes_effect_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("test CA");
    let (cert_a, key_a) = leaf(&ca, 100, ExtendedKeyUsagePurpose::ServerAuth);
    let (cert_b, key_b) = leaf(&ca, 200, ExtendedKeyUsagePurpose::ServerAuth);
    write(dir.path(), "tls.crt", &cert_a);
    write(dir.path(), "tls.key", &key_a);
    let up = MockUpstream::start("up").await;
    let config = write(
        dir.path(),
        "proxy.toml",
        &tls_proxy_config(dir.path(), up.addr, None),
    );
    let proxy = TestProxy::start_watching(&config).await;
    let connector = client_tls(&ca.pem(), &[], None);
    let der = |pem: &str| {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    };

    let (_, _, _, served) = https_get(proxy.addr, &connector).await.unwrap();
    assert_eq!(served, der(&cert_a));

    // Rotate: new key first, then the certificate (each renamed into place).
    for (name, text) in [("tls.key", &key_b), ("tls.crt", &cert_b)] {
        write(dir.path(), &format!("{name}.new"), text);
        std::fs::rename(
            dir.path().join(format!("{name}.new")),
            dir.path().join(name),
        )
        .unwrap();
    }
    let mut rotated = false;
    for _ in 0..100 {
        let (_, status, _, served) = https_get(proxy.addr, &connector).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        if served == der(&cert_b) {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(rotated, "new handshakes must present the new certificate");

    // A broken certificate keeps the previous one serving and is a reload failure.
    let failures = "canary_proxy_config_reloads_total{result=\"failure\"}";
    write(
        dir.path(),
        "tls.crt.new",
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    );
    std::fs::rename(dir.path().join("tls.crt.new"), dir.path().join("tls.crt")).unwrap();
    for _ in 0..100 {
        if proxy.metric(failures).await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(proxy.metric(failures).await >= 1.0);
    let (_, status, _, served) = https_get(proxy.addr, &connector).await.unwrap();
    assert_eq!((status, served), (StatusCode::OK, der(&cert_b)));
}

#[test]
fn check_rejects_a_key_that_does_not_match_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("test CA");
    let (cert, _) = leaf(&ca, 1, ExtendedKeyUsagePurpose::ServerAuth);
    let (_, other_key) = leaf(&ca, 2, ExtendedKeyUsagePurpose::ServerAuth);
    write(dir.path(), "tls.crt", &cert);
    write(dir.path(), "tls.key", &other_key);
    let config = write(
        dir.path(),
        "proxy.toml",
        &tls_proxy_config(dir.path(), "127.0.0.1:9".parse().unwrap(), None),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_canary-proxy"))
        .args(["check", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("proxy.toml:3:"), "{stderr}");
    assert!(stderr.contains("server.tls.key"), "{stderr}");
    assert!(
        stderr.contains("does the key match the certificate?"),
        "{stderr}"
    );
}
