//! One small HTTP/1 client (hyper's pooled client) for the calls to the
//! payment provider and for the load driver.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A request that got no answer: it could not be sent, or its body not read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(String);

/// An answer: its status, some headers, its body.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: StatusCode,
    /// `Retry-After`, in seconds, when sent.
    pub retry_after: Option<u64>,
    /// Every header.
    pub headers: hyper::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// A pooled HTTP/1 client; clones share the pool.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A client with its own connection pool.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Sends `body` as JSON to `url` with `POST`, and the extra headers.
    ///
    /// # Errors
    /// A [`TransportError`] when no answer came.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, TransportError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Full::new(Bytes::from(body)))).await
    }

    /// Sends `GET url` with the extra headers.
    ///
    /// # Errors
    /// A [`TransportError`] when no answer came.
    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Answer, TransportError> {
        let mut request = Request::builder().method(Method::GET).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Full::new(Bytes::new()))).await
    }

    async fn send(
        &self,
        request: Result<Request<Full<Bytes>>, hyper::http::Error>,
    ) -> Result<Answer, TransportError> {
        let request = request.map_err(|e| TransportError(format!("bad request: {e}")))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| TransportError(format!("request failed: {e}")))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| TransportError(format!("reading the body failed: {e}")))?
            .to_bytes();
        Ok(Answer {
            status,
            retry_after,
            headers,
            body,
        })
    }
}
