//! TLS to PostgreSQL (feature `postgres-tls`), against a server of the
//! test's own with certificates made for it: a store that trusts the
//! server's authority connects and works with `sslmode=require`; one that
//! trusts another authority, or has no TLS, is refused.
#![cfg(feature = "postgres-tls")]

use std::sync::Arc;

use futures_util::TryStreamExt;
use palisade_event_store::*;
use palisade_test_support::{OwnPostgres, TestCerts, test_name};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The error and its sources, as one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

fn trusting(ca: &std::path::Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).expect("the CA's certificate"))
        .unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test]
async fn a_store_over_tls_verifies_the_server_and_works() {
    let Some((server, certs)) = OwnPostgres::start_tls(test_name!()) else {
        return;
    };
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=require",
        server.port()
    );
    let store = PostgresEventStore::builder(&url)
        .schema("tls")
        .tls(trusting(&certs.ca))
        .connect()
        .await
        .expect("a TLS connection to a server the store trusts");
    let s = StreamName::new("order-1").unwrap();
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Placed", vec![1])],
        )
        .await
        .unwrap();
    let events: Vec<RecordedEvent> = store
        .read_stream(&s, ReadStream::forward())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events.len(), 1);

    // Another authority: the server's certificate is not trusted.
    let other = std::env::temp_dir().join(palisade_test_support::unique_name("palisade_ca"));
    std::fs::create_dir_all(&other).unwrap();
    let stranger = TestCerts::make(&other);
    let refused = PostgresEventStore::builder(&url)
        .schema("tls")
        .tls(trusting(&stranger.ca))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Backend(_)), "{refused}");
    assert!(
        chain(&refused).contains("invalid peer certificate"),
        "{}",
        chain(&refused)
    );
    let _ = std::fs::remove_dir_all(&other);

    // No TLS at all, with `sslmode=require`: refused before anything is sent.
    let plain = PostgresEventStore::builder(&url)
        .schema("tls")
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(plain, Error::Backend(_)), "{plain}");
    assert!(
        chain(&plain).contains("no TLS implementation configured"),
        "{}",
        chain(&plain)
    );
}
