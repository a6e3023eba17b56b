//! The HTTP transport's client: hyper (already under tonic) rather than
//! reqwest, run on the exporters' own runtime. The SDK's batch span processor
//! and periodic metric reader export from threads of their own, outside any
//! tokio runtime, where hyper's client could not spawn its connections; so
//! every request is spawned onto the runtime the `Otlp` guard owns.

use async_trait::async_trait;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use std::time::Duration;
use tokio::runtime::Handle;

#[derive(Debug)]
pub(crate) struct RuntimeHttpClient {
    client: HyperClient,
    runtime: Handle,
}

impl RuntimeHttpClient {
    /// `timeout` bounds each request, its response body included.
    pub(crate) fn new(runtime: Handle, timeout: Duration) -> Self {
        // Made inside the runtime: hyper's connection pool arms its timer there.
        let _entered = runtime.enter();
        RuntimeHttpClient {
            client: HyperClient::with_default_connector(timeout, None),
            runtime,
        }
    }
}

#[async_trait]
impl HttpClient for RuntimeHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}
