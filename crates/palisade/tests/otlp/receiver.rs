//! A real OTLP receiver on a local port: the collector protocol's generated
//! tonic servers for gRPC, and the HTTP/protobuf endpoints `/v1/traces` and
//! `/v1/metrics`, on one listener (HTTP/1.1 and HTTP/2). It keeps every
//! request it decoded, with the transport it came by.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use http_body_util::combinators::UnsyncBoxBody as BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::TcpListener;
use tower::ServiceExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How an export arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Grpc,
    Http,
}

#[derive(Debug, Default)]
pub(crate) struct Received {
    pub(crate) traces: Vec<(Transport, ExportTraceServiceRequest)>,
    pub(crate) metrics: Vec<(Transport, ExportMetricsServiceRequest)>,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Received>,
    changed: Condvar,
}

impl Shared {
    fn record(&self, add: impl FnOnce(&mut Received)) {
        add(&mut self.received.lock().unwrap());
        self.changed.notify_all();
    }
}

pub(crate) struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    // Owns the server's tasks: dropping the receiver stops them.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    /// Listens on 127.0.0.1 on a free port, on a runtime of its own.
    pub(crate) fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-receiver")
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared::default());
        // Bound here, not by `block_on`, so that a test may start it inside
        // an async context.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let traces = TraceServiceServer::new(Collector(shared.clone()));
        let metrics = MetricsServiceServer::new(Collector(shared.clone()));
        let http_shared = shared.clone();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (traces, metrics, shared) =
                    (traces.clone(), metrics.clone(), http_shared.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        route(request, traces.clone(), metrics.clone(), shared.clone())
                    });
                    // A client that goes away ends its connection; nothing to report.
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT`, for gRPC and HTTP alike.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What has arrived so far.
    pub(crate) fn received(&self) -> std::sync::MutexGuard<'_, Received> {
        self.shared.received.lock().unwrap()
    }

    /// Waits until `done` holds of what arrived, at most `timeout`; panics
    /// with what arrived if it never does.
    pub(crate) fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&Received) -> bool,
    ) -> std::sync::MutexGuard<'_, Received> {
        let deadline = Instant::now() + timeout;
        let mut received = self.shared.received.lock().unwrap();
        while !done(&received) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting; received: {received:#?}"
            );
            received = self.shared.changed.wait_timeout(received, left).unwrap().0;
        }
        received
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // In the background: a test may drop it inside an async context.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[derive(Clone)]
struct Collector(Arc<Shared>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        self.0
            .record(|received| received.traces.push((Transport::Grpc, request)));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        self.0
            .record(|received| received.metrics.push((Transport::Grpc, request)));
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

async fn route(
    request: Request<Incoming>,
    traces: TraceServiceServer<Collector>,
    metrics: MetricsServiceServer<Collector>,
    shared: Arc<Shared>,
) -> Result<Response<BoxBody<Bytes, BoxError>>, BoxError> {
    let path = request.uri().path().to_owned();
    let grpc = |response: Response<tonic::body::Body>| {
        response.map(|body| body.map_err(BoxError::from).boxed_unsync())
    };
    match path.as_str() {
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export" => {
            Ok(grpc(traces.oneshot(request).await?))
        }
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export" => {
            Ok(grpc(metrics.oneshot(request).await?))
        }
        "/v1/traces" => {
            let body = protobuf_body(request).await?;
            let decoded = ExportTraceServiceRequest::decode(body)?;
            shared.record(|received| received.traces.push((Transport::Http, decoded)));
            Ok(protobuf_response(
                &ExportTraceServiceResponse::default().encode_to_vec(),
            ))
        }
        "/v1/metrics" => {
            let body = protobuf_body(request).await?;
            let decoded = ExportMetricsServiceRequest::decode(body)?;
            shared.record(|received| received.metrics.push((Transport::Http, decoded)));
            Ok(protobuf_response(
                &ExportMetricsServiceResponse::default().encode_to_vec(),
            ))
        }
        _ => Ok(Response::builder().status(StatusCode::NOT_FOUND).body(
            Full::new(Bytes::new())
                .map_err(BoxError::from)
                .boxed_unsync(),
        )?),
    }
}

/// The body of an OTLP/HTTP export, which must say it is protobuf.
async fn protobuf_body(request: Request<Incoming>) -> Result<Bytes, BoxError> {
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    if content_type.as_deref() != Some("application/x-protobuf") {
        return Err(format!("content-type {content_type:?} is not application/x-protobuf").into());
    }
    Ok(request.into_body().collect().await?.to_bytes())
}

fn protobuf_response(body: &[u8]) -> Response<BoxBody<Bytes, BoxError>> {
    Response::builder()
        .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
        .body(
            Full::new(Bytes::copy_from_slice(body))
                .map_err(BoxError::from)
                .boxed_unsync(),
        )
        .unwrap()
}
