//! Hostile and broken clients: each is refused, and the controller keeps serving
//! everyone else.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use metrom_controller::pki::Pki;
use metrom_protocol::codec;
use metrom_protocol::facts::HostFacts;
use metrom_protocol::identity::IdentityBundle;
use metrom_protocol::ids::{HostId, Principal};
use metrom_protocol::messages::agent::{Hello, HelloReply};
use metrom_protocol::messages::api::{ApiRequest, ApiResponse, Call, ErrorKind};
use metrom_protocol::tls::Timing;
use metrom_protocol::{ALPN_MAIN, CONTROLLER_SERVER_NAME, PROTOCOL_VERSION, close};
use metrom_tests::{Cluster, stdout};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const MAX: usize = codec::DEFAULT_MAX_FRAME;

async fn connect(
    c: &Cluster,
    cfg: quinn::ClientConfig,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    metrom_protocol::tls::install_default_provider();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg);
    ep.connect(c.address().parse().unwrap(), CONTROLLER_SERVER_NAME)
        .unwrap()
        .await
}

async fn connect_as(
    c: &Cluster,
    identity: &IdentityBundle,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    connect(
        c,
        metrom_protocol::tls::client_config(identity, Timing::default()).unwrap(),
    )
    .await
}

/// The connection is refused: either the handshake fails, or the controller
/// closes it before it can be used. (In TLS 1.3 the client finishes first; a
/// refused client certificate arrives as the connection's close.)
async fn assert_refused(result: Result<quinn::Connection, quinn::ConnectionError>, what: &str) {
    let conn = match result {
        Err(e) => {
            eprintln!("{what}: handshake refused: {e}");
            return;
        }
        Ok(conn) => conn,
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        let req = ApiRequest {
            version: PROTOCOL_VERSION,
            call: Call::Status,
        };
        codec::write_message(&mut send, &req, MAX).await.ok()?;
        let _ = send.finish();
        codec::read_message::<ApiResponse, _>(&mut recv, MAX)
            .await
            .ok()
            .flatten()
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: neither answered nor refused within 10s"));
    assert!(
        !matches!(answer, Some(Ok(_))),
        "{what}: the controller answered a refused client"
    );
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .unwrap_or_else(|_| panic!("{what}: connection not closed"));
    eprintln!("{what}: closed: {reason}");
}

fn other_ca_bundle(c: &Cluster, other: &Cluster) -> IdentityBundle {
    // Trusts this cluster's CA, but presents a certificate from another one.
    let mine = IdentityBundle::load(&c.identity).unwrap();
    let theirs = IdentityBundle::load(&other.identity).unwrap();
    IdentityBundle {
        cert: theirs.cert,
        key: theirs.key,
        ..mine
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_without_valid_certificates_are_refused() {
    let c = Cluster::start();
    let other = Cluster::start();
    let admin = IdentityBundle::load(&c.identity).unwrap();

    // No certificate at all, on the authenticated ALPN.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(admin.ca_der()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(metrom_protocol::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_MAIN.to_vec()];
    let cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    match connect(&c, cfg).await {
        Ok(conn) => {
            let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
                .await
                .unwrap();
            match reason {
                quinn::ConnectionError::ApplicationClosed(a) => {
                    assert_eq!(a.error_code, close::UNAUTHENTICATED);
                    assert!(
                        String::from_utf8_lossy(&a.reason)
                            .contains("client certificate is required")
                    );
                }
                other => panic!("unexpected close: {other:?}"),
            }
        }
        Err(e) => panic!("expected the controller to close after the handshake, got {e}"),
    }

    // A certificate from another CA.
    assert_refused(
        connect_as(&c, &other_ca_bundle(&c, &other)).await,
        "other CA",
    )
    .await;

    // An expired certificate, signed by the right CA.
    let pki = Pki::load(&c.data_dir()).unwrap();
    let start = Timestamp::now() - SignedDuration::from_hours(3);
    let (issued, key) = pki
        .issue_with_key_at(
            &Principal::User("admin".into()),
            start,
            Duration::from_secs(3600),
        )
        .unwrap();
    let expired = IdentityBundle {
        cert: issued.cert_pem,
        key,
        ..admin.clone()
    };
    assert_refused(connect_as(&c, &expired).await, "expired").await;

    // A valid certificate for an identity the controller never issued.
    let (issued, key) = pki
        .issue_with_key(
            &Principal::Host(HostId::generate()),
            Duration::from_secs(3600),
        )
        .unwrap();
    let unknown = IdentityBundle {
        cert: issued.cert_pem,
        key,
        ..admin.clone()
    };
    assert_refused(connect_as(&c, &unknown).await, "unknown identity").await;

    // A revoked one: an enrolled host, then revoked.
    let mut c = c;
    let token = c.token(&[]);
    let i = c.join_agent("victim", &token);
    let id = c.agent(i).host_id.clone();
    c.wait_host_state(&id, "Ready", Duration::from_secs(20));
    let host_identity = IdentityBundle::load(&c.agent(i).data_dir.join("identity.toml")).unwrap();
    assert!(c.metrom(&["host", "revoke", &id]).status.success());
    assert_refused(connect_as(&c, &host_identity).await, "revoked").await;

    // Everyone else is still served.
    assert!(stdout(&c.metrom(&["status"])).contains("1 revoked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_frames_close_only_their_stream() {
    let mut c = Cluster::start();
    let token = c.token(&[]);
    let i = c.join_agent("bystander", &token);
    let bystander = c.agent(i).host_id.clone();
    c.wait_host_state(&bystander, "Ready", Duration::from_secs(20));
    let admin = IdentityBundle::load(&c.identity).unwrap();
    let conn = connect_as(&c, &admin).await.unwrap();

    let mut oversized = 0x7fff_ffffu32.to_be_bytes().to_vec();
    oversized.extend_from_slice(b"whatever");
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[1, 2, 3, 4, 5]);
    let hello = Hello {
        version: PROTOCOL_VERSION,
        host_id: HostId::generate(),
        facts: HostFacts::default(),
        environments: vec![],
    };
    let wrong_type = codec::encode(&hello, MAX).unwrap();
    let mut bad_variant = 5u32.to_be_bytes().to_vec();
    bad_variant.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0x0f]);
    let garbage = b"\x00\x00\x00\x03\xde\xad\xbe".to_vec();

    for (name, bytes) in [
        ("oversized", oversized),
        ("truncated", truncated),
        ("wrong type", wrong_type),
        ("bad variant", bad_variant),
        ("garbage", garbage),
    ] {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&bytes).await.unwrap();
        let _ = send.finish();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            codec::read_message::<ApiResponse, _>(&mut recv, MAX),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: no answer or reset within 10s"));
        match answer {
            Ok(Some(Err(e))) => {
                assert_eq!(e.kind, ErrorKind::InvalidArgument, "{name}: {e:?}");
                assert!(e.message.contains("malformed"), "{name}: {e:?}");
            }
            Ok(Some(Ok(r))) => panic!("{name}: accepted as {r:?}"),
            Ok(None) | Err(_) => {} // stream reset or closed
        }
    }

    // A newer client: refused, naming both versions.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    codec::write_message(
        &mut send,
        &ApiRequest {
            version: 99,
            call: Call::Status,
        },
        MAX,
    )
    .await
    .unwrap();
    let _ = send.finish();
    let e = codec::read_message::<ApiResponse, _>(&mut recv, MAX)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::VersionMismatch);
    assert!(
        e.message.contains("99") && e.message.contains(&PROTOCOL_VERSION.to_string()),
        "{}",
        e.message
    );

    // The same connection still works, and so does everybody else.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    codec::write_message(
        &mut send,
        &ApiRequest {
            version: PROTOCOL_VERSION,
            call: Call::Status,
        },
        MAX,
    )
    .await
    .unwrap();
    let _ = send.finish();
    assert!(
        codec::read_message::<ApiResponse, _>(&mut recv, MAX)
            .await
            .unwrap()
            .unwrap()
            .is_ok()
    );
    assert_eq!(c.host_state(&bystander).as_deref(), Some("Ready"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_agent_session_is_closed_without_harm() {
    let mut c = Cluster::start();
    let token = c.token(&["--uses", "2"]);
    let i = c.join_agent("bystander", &token);
    let bystander = c.agent(i).host_id.clone();
    c.wait_host_state(&bystander, "Ready", Duration::from_secs(20));
    // Enroll a host whose agent we play by hand.
    let dir = c.dir.path().join("puppet");
    assert!(
        metrom_tests::agent_join(&dir, &c.address(), &token, "puppet")
            .status
            .success()
    );
    let identity = IdentityBundle::load(&dir.join("identity.toml")).unwrap();
    let Some(Principal::Host(host_id)) = identity.principal() else {
        panic!("host identity")
    };

    // Hello from the future: refused with both versions named.
    let conn = connect_as(&c, &identity).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Hello {
        version: 7,
        host_id: host_id.clone(),
        facts: HostFacts::default(),
        environments: vec![],
    };
    codec::write_message(&mut send, &hello, MAX).await.unwrap();
    match codec::read_message::<HelloReply, _>(&mut recv, MAX)
        .await
        .unwrap()
        .unwrap()
    {
        HelloReply::Refused { reason } => assert!(
            reason.contains('7') && reason.contains("version"),
            "{reason}"
        ),
        HelloReply::Welcome(_) => panic!("a version-7 Hello was welcomed"),
    }

    // A Hello that is not a Hello: the connection is closed as a protocol error.
    let conn = connect_as(&c, &identity).await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    codec::write_message(
        &mut send,
        &ApiRequest {
            version: PROTOCOL_VERSION,
            call: Call::HostList,
        },
        MAX,
    )
    .await
    .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .unwrap();
    match reason {
        quinn::ConnectionError::ApplicationClosed(a) => {
            assert_eq!(a.error_code, close::PROTOCOL, "{a:?}")
        }
        other => panic!("unexpected: {other:?}"),
    }

    // A valid Hello, then garbage on the control stream.
    let conn = connect_as(&c, &identity).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        host_id,
        facts: HostFacts::default(),
        environments: vec![],
    };
    codec::write_message(&mut send, &hello, MAX).await.unwrap();
    assert!(matches!(
        codec::read_message::<HelloReply, _>(&mut recv, MAX)
            .await
            .unwrap()
            .unwrap(),
        HelloReply::Welcome(_)
    ));
    send.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .unwrap();
    match reason {
        quinn::ConnectionError::ApplicationClosed(a) => {
            assert_eq!(a.error_code, close::PROTOCOL, "{a:?}")
        }
        other => panic!("unexpected: {other:?}"),
    }

    // The bystander never noticed.
    assert_eq!(c.host_state(&bystander).as_deref(), Some("Ready"));
    assert!(c.metrom(&["status"]).status.success());
}

#[test]
fn the_controller_certificate_chain_carries_the_ca() {
    // Joining agents rely on it: the chain is [server, CA].
    let c = Cluster::start();
    let pki = Pki::load(&c.data_dir()).unwrap();
    let chain = pki.server_chain();
    assert_eq!(chain.len(), 2);
    let ca = CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).unwrap();
    assert_eq!(chain[1], ca);
}
