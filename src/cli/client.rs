//! A small HTTP/1 client for the operator's commands (`steward models`,
//! `activate`, `retrain`, `import --url`, `upload`): one request per connection
//! to a running daemon, JSON answers, a multipart body built by hand, and a
//! deadline on each request. It owns a current-thread tokio runtime, so the
//! commands stay synchronous.
//!
//! It speaks plain `http://` only: the daemon serves HTTP (on loopback by
//! default), and a TLS client would need a trust store and options for private
//! CAs that a loopback tool does not. An `https://` URL is refused with a
//! message saying so. What an answer *means* (an error code, an exit code) is
//! for `remote` to decide; this module only says whether one came back.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Why no answer came back from the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--url {url}: {reason} (expected e.g. http://127.0.0.1:8080)")]
    Url { url: String, reason: String },
    #[error(
        "--url {url}: steward's client speaks plain http only (the daemon serves http, on \
         loopback by default); reach a remote daemon through an SSH tunnel \
         (ssh -L 8080:127.0.0.1:8080 HOST) and use http://127.0.0.1:8080"
    )]
    Https { url: String },
    #[error(
        "cannot reach the daemon at {url}: connection refused; is it running? (steward serve)"
    )]
    Refused { url: String },
    #[error("cannot reach the daemon at {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("the daemon at {url} did not answer {what} within {secs} s")]
    Timeout {
        url: String,
        what: String,
        secs: u64,
    },
    #[error("{what} to the daemon at {url} failed: {source}")]
    Http {
        url: String,
        what: String,
        source: hyper::Error,
    },
    #[error("cannot start the HTTP client: {0}")]
    Runtime(std::io::Error),
}

impl ClientError {
    /// True when the fault is in what the user gave (the URL), not in reaching
    /// the daemon.
    pub fn is_input(&self) -> bool {
        matches!(self, ClientError::Url { .. } | ClientError::Https { .. })
    }
}

/// A daemon's answer: the status and the body parsed as JSON (`Null` when the
/// body is empty or not JSON; `text` keeps it as it came).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

/// The daemon at one base URL, with the token to send and a deadline per request.
#[derive(Debug)]
pub struct Client {
    /// The URL as given (for messages), without a trailing slash.
    url: String,
    host: String,
    port: u16,
    /// A path prefix (a daemon behind a reverse proxy at `/steward`), or "".
    prefix: String,
    token: Option<String>,
    timeout: Duration,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    /// A client for the daemon at `url` (`http://host[:port][/prefix]`) that
    /// sends `token` as a bearer token when given and gives up on a request
    /// (connecting included) after `timeout`.
    pub fn new(url: &str, token: Option<String>, timeout: Duration) -> Result<Client, ClientError> {
        let url = url.trim_end_matches('/').to_string();
        let bad = |reason: &str| ClientError::Url {
            url: url.clone(),
            reason: reason.into(),
        };
        let uri: Uri = url.parse().map_err(|e| bad(&format!("not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(ClientError::Https { url }),
            Some(other) => return Err(bad(&format!("scheme `{other}` is not http"))),
            None => return Err(bad("no scheme")),
        }
        if uri.query().is_some() {
            return Err(bad("a query string has no place in the base URL"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        // `[::1]` → `::1` for the socket; the Host header keeps the brackets.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(80);
        let prefix = uri.path().trim_end_matches('/').to_string();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        Ok(Client {
            url,
            host,
            port,
            prefix,
            token,
            timeout,
            runtime,
        })
    }

    /// The base URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.send(Method::GET, path, None, Bytes::new())
    }

    /// `POST path` with a JSON body, or an empty one.
    pub fn post_json(&self, path: &str, body: Option<&Value>) -> Result<Answer, ClientError> {
        match body {
            Some(v) => self.send(
                Method::POST,
                path,
                Some("application/json".into()),
                Bytes::from(v.to_string()),
            ),
            None => self.send(Method::POST, path, None, Bytes::new()),
        }
    }

    /// `POST path` with a `multipart/form-data` body.
    pub fn post_multipart(&self, path: &str, form: &Form) -> Result<Answer, ClientError> {
        let (content_type, body) = form.encode();
        self.send(Method::POST, path, Some(content_type), Bytes::from(body))
    }

    fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<String>,
        body: Bytes,
    ) -> Result<Answer, ClientError> {
        let what = format!("{method} {path}");
        let exchange = self.exchange(method, path, content_type, body);
        self.runtime.block_on(async {
            tokio::time::timeout(self.timeout, exchange)
                .await
                .unwrap_or_else(|_| {
                    Err(ClientError::Timeout {
                        url: self.url.clone(),
                        what,
                        secs: self.timeout.as_secs(),
                    })
                })
        })
    }

    /// Connects, sends one request, reads the whole answer.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        content_type: Option<String>,
        body: Bytes,
    ) -> Result<Answer, ClientError> {
        let what = format!("{method} {path}");
        let http = |source| ClientError::Http {
            url: self.url.clone(),
            what: what.clone(),
            source,
        };
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::ConnectionRefused => ClientError::Refused {
                    url: self.url.clone(),
                },
                _ => ClientError::Connect {
                    url: self.url.clone(),
                    source,
                },
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        // Drives the connection while the request is sent and answered; it ends
        // when `sender` is dropped.
        tokio::spawn(connection);
        let request = self.request(method, path, content_type, body)?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(http)?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { status, body, text })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<String>,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let authority = match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(HOST, authority)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("steward/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = &self.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            builder = builder.header(CONTENT_TYPE, ct);
        }
        builder.body(Full::new(body)).map_err(|e| ClientError::Url {
            url: self.url.clone(),
            reason: format!("cannot form a request to `{path}`: {e}"),
        })
    }
}

/// A `multipart/form-data` body: text fields and files, in order.
#[derive(Debug, Default)]
pub struct Form {
    parts: Vec<Part>,
}

#[derive(Debug)]
struct Part {
    name: String,
    /// File name and content type, for a file part.
    file: Option<(String, String)>,
    bytes: Vec<u8>,
}

impl Form {
    pub fn new() -> Form {
        Form::default()
    }

    /// Adds a text field.
    pub fn text(mut self, name: &str, value: &str) -> Form {
        self.parts.push(Part {
            name: name.into(),
            file: None,
            bytes: value.as_bytes().to_vec(),
        });
        self
    }

    /// Adds a file, its bytes as they are.
    pub fn file(mut self, name: &str, filename: &str, content_type: &str, bytes: Vec<u8>) -> Form {
        self.parts.push(Part {
            name: name.into(),
            file: Some((filename.into(), content_type.into())),
            bytes,
        });
        self
    }

    /// The `Content-Type` header (with the boundary) and the body. The boundary
    /// is random and checked against the content, so no part can end early.
    pub fn encode(&self) -> (String, Vec<u8>) {
        let boundary = loop {
            let b = format!("steward-{:032x}", rand::random::<u128>());
            if !self.parts.iter().any(|p| contains(&p.bytes, b.as_bytes())) {
                break b;
            }
        };
        let mut body = Vec::with_capacity(self.parts.iter().map(|p| p.bytes.len() + 200).sum());
        for p in &self.parts {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            let disposition = format!(
                "Content-Disposition: form-data; name=\"{}\"",
                quoted(&p.name)
            );
            body.extend_from_slice(disposition.as_bytes());
            if let Some((filename, content_type)) = &p.file {
                let file = format!(
                    "; filename=\"{}\"\r\nContent-Type: {content_type}",
                    quoted(filename)
                );
                body.extend_from_slice(file.as_bytes());
            }
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(&p.bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        (format!("multipart/form-data; boundary={boundary}"), body)
    }
}

/// A name or file name inside a quoted header parameter: `"`, CR and LF
/// percent-encoded, as browsers send them (the HTML standard's form encoding).
fn quoted(s: &str) -> String {
    s.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_form_encodes_text_and_file_parts_between_one_boundary() {
        let form = Form::new()
            .file(
                "onnx",
                "m\"1\".onnx",
                "application/octet-stream",
                vec![0, 159, 146, 150],
            )
            .text("label", "species");
        let (content_type, body) = form.encode();
        let boundary = content_type
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap();
        let mut expected = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"onnx\"; filename=\"m%221%22.onnx\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        expected.extend_from_slice(&[0, 159, 146, 150]);
        expected.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"label\"\r\n\r\nspecies\r\n--{boundary}--\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(body, expected);
    }

    #[test]
    fn urls_other_than_plain_http_are_refused_as_input() {
        let https = Client::new("https://example.com", None, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(https, ClientError::Https { .. }) && https.is_input());
        assert!(https.to_string().contains("plain http only"), "{https}");
        for bad in ["127.0.0.1:8080", "ftp://x", "http://", "http://h/?a=1"] {
            let e = Client::new(bad, None, Duration::from_secs(1)).unwrap_err();
            assert!(e.is_input(), "{bad}: {e}");
        }
        let c = Client::new("http://[::1]:9/steward/", None, Duration::from_secs(1)).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.prefix.as_str()),
            ("::1", 9, "/steward")
        );
        assert_eq!(c.url(), "http://[::1]:9/steward");
    }
}
