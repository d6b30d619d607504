//! A real SMTP server on loopback for the tests of the mail path.
//!
//! `SmtpServer::start` listens on `127.0.0.1` (a free port or a given one) and
//! accepts mail: plain SMTP, optionally STARTTLS with a certificate for
//! `localhost` and `127.0.0.1` signed by a throwaway CA (`ca_pem`), optionally
//! required AUTH PLAIN and LOGIN (also offered before STARTTLS, so a plain
//! connection can authenticate too), and a 550 for chosen recipients. Every
//! accepted message is recorded as a `Received`.
//!
//! It owns the sockets, the certificates and the record; the SMTP state machine
//! is the `mailin` crate's `Session`, TLS is rustls. It delivers nothing. Threads
//! are plain std ones: one accepting, one per connection. `stop` (or dropping
//! the server) closes the listener, shuts every open connection down and joins
//! all threads, so afterwards connections are refused and the same port can be
//! bound again.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mailin::{response, Action, AuthMechanism, Handler, Response, Session, SessionBuilder};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// What the server offers and refuses. `Default` is plain SMTP on a free port
/// that accepts everything.
#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// Offer STARTTLS (see `SmtpServer::ca_pem`).
    pub starttls: bool,
    /// Require AUTH (PLAIN or LOGIN) with this user and password before MAIL.
    pub auth: Option<(String, String)>,
    /// `RCPT TO` one of these (case-insensitive) gets 550.
    pub reject_rcpt: Vec<String>,
    /// Listen on this port; `None` picks a free one.
    pub port: Option<u16>,
}

/// One message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The `MAIL FROM` address, without angle brackets.
    pub from: String,
    /// The accepted `RCPT TO` addresses, in order.
    pub to: Vec<String>,
    /// The message as sent after `DATA` (dot-unstuffing undone, CRLF line ends).
    pub data: String,
    /// The user the session authenticated as, if it did.
    pub authenticated_as: Option<String>,
    /// Whether the message came over a STARTTLS-upgraded connection.
    pub tls: bool,
}

/// A running test SMTP server; stops when dropped.
pub struct SmtpServer {
    port: u16,
    ca_pem: Option<String>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// How long a connection may sit silent before the server hangs up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

impl SmtpServer {
    /// Binds the port and starts accepting; connections made after this returns
    /// are served. Panics if the port cannot be bound.
    pub fn start(options: SmtpOptions) -> SmtpServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, options.port.unwrap_or(0)))
            .unwrap_or_else(|e| {
                panic!(
                    "test SMTP server: cannot bind 127.0.0.1:{:?}: {e}",
                    options.port
                )
            });
        let port = listener.local_addr().unwrap().port();

        let mut session = SessionBuilder::new("localhost");
        let (tls, ca_pem) = if options.starttls {
            let pki = Pki::generate();
            session.enable_start_tls();
            (Some(pki.server_config), Some(pki.ca_pem))
        } else {
            (None, None)
        };
        if options.auth.is_some() {
            session
                .enable_auth(AuthMechanism::Plain)
                .enable_auth(AuthMechanism::Login)
                .insecure_enable_plaintext_auth();
        }
        let config = Arc::new(Config {
            session,
            tls,
            auth: options.auth,
            reject_rcpt: options.reject_rcpt,
        });
        let shared = Arc::new(Shared::default());
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("smtp-accept-{port}"))
                .spawn(move || accept_loop(listener, config, shared))
                .unwrap()
        };
        SmtpServer {
            port,
            ca_pem,
            shared,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// With `starttls`: the PEM of the CA that signed the server's certificate.
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.clone()
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<Received> {
        lock(&self.shared.messages).clone()
    }

    /// Waits until at least `n` messages arrived and returns them all; panics
    /// with what did arrive if that takes longer than `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "test SMTP server on port {}: expected {n} message(s) within {timeout:?}, got {}: {messages:#?}",
                self.port,
                messages.len()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Closes the listener and every open connection, and joins the threads:
    /// afterwards connecting to the port is refused and it can be bound again.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        // The accept thread blocks in accept(): wake it with a connection of our
        // own; it sees the flag and returns, dropping (closing) the listener.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        let _ = accept.join();
        // No new sessions can start now; end the open ones.
        let open: Vec<TcpStream> = lock(&self.shared.connections)
            .drain()
            .map(|(_, s)| s)
            .collect();
        for stream in open {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let sessions = std::mem::take(&mut *lock(&self.shared.sessions));
        for session in sessions {
            let _ = session.join();
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A port that was free a moment ago (bind `127.0.0.1:0`, read it, close).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// Fixed at start, read by every session.
struct Config {
    session: SessionBuilder,
    tls: Option<Arc<ServerConfig>>,
    auth: Option<(String, String)>,
    reject_rcpt: Vec<String>,
}

/// State shared between the server handle, the accept thread and the sessions.
/// Std mutexes: every critical section is a push, a clone or a drain.
#[derive(Default)]
struct Shared {
    stopping: AtomicBool,
    messages: Mutex<Vec<Received>>,
    /// A second handle on each open connection, so `stop` can shut it down.
    connections: Mutex<HashMap<u64, TcpStream>>,
    sessions: Mutex<Vec<JoinHandle<()>>>,
}

/// Locks, ignoring poisoning: a panicking session must not hide the record
/// from the test (or panic again in `Drop`).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_loop(listener: TcpListener, config: Arc<Config>, shared: Arc<Shared>) {
    let mut next_id = 0_u64;
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        // An accept error concerns that one connection (the client gave up).
        let Ok(stream) = stream else { continue };
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        next_id += 1;
        let id = next_id;
        lock(&shared.connections).insert(id, handle);
        let (config, session_shared) = (Arc::clone(&config), Arc::clone(&shared));
        let session = thread::Builder::new()
            .name(format!("smtp-session-{id}"))
            .spawn(move || {
                if let Err(err) = serve(stream, &config, &session_shared) {
                    // The client sees the failure too; this helps reading a failed test.
                    eprintln!("test SMTP server: session {id} ended: {err}");
                }
                lock(&session_shared.connections).remove(&id);
            })
            .unwrap();
        lock(&shared.sessions).push(session);
    }
}

/// How a conversation on one stream ended.
enum Next {
    Done,
    StartTls,
}

fn serve(stream: TcpStream, config: &Config, shared: &Arc<Shared>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let tls_active = Arc::new(AtomicBool::new(false));
    let recorder = Recorder {
        auth: config.auth.clone(),
        reject_rcpt: config.reject_rcpt.clone(),
        shared: Arc::clone(shared),
        tls_active: Arc::clone(&tls_active),
        authenticated_as: None,
        envelope: None,
        data: Vec::new(),
    };
    let mut session = config.session.build(stream.peer_addr()?.ip(), recorder);
    let mut plain = BufReader::new(stream);
    reply(plain.get_mut(), &session.greeting())?;
    if let Next::Done = converse(&mut session, &mut plain)? {
        return Ok(());
    }
    // STARTTLS was answered 220: the client must wait for that before its
    // handshake, so nothing may be buffered yet.
    if !plain.buffer().is_empty() {
        return Err(io::Error::other("client sent data after STARTTLS"));
    }
    let server_config = config
        .tls
        .clone()
        .ok_or_else(|| io::Error::other("STARTTLS without a TLS configuration"))?;
    let connection = ServerConnection::new(server_config).map_err(io::Error::other)?;
    let mut tls = BufReader::new(StreamOwned::new(connection, plain.into_inner()));
    // Handshake now, so a client that rejects the certificate ends here.
    let stream = tls.get_mut();
    stream.conn.complete_io(&mut stream.sock)?;
    session.tls_active();
    tls_active.store(true, Ordering::SeqCst);
    converse(&mut session, &mut tls)?;
    Ok(())
}

/// Feeds lines to the session and writes its replies until the client leaves,
/// the session closes or STARTTLS is accepted.
fn converse<S: Read + Write>(
    session: &mut Session<Recorder>,
    stream: &mut BufReader<S>,
) -> io::Result<Next> {
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if stream.read_until(b'\n', &mut line)? == 0 {
            return Ok(Next::Done);
        }
        let response = session.process(&line);
        match response.action {
            Action::NoReply => {}
            Action::Reply => reply(stream.get_mut(), &response)?,
            Action::Close => {
                reply(stream.get_mut(), &response)?;
                return Ok(Next::Done);
            }
            Action::UpgradeTls => {
                reply(stream.get_mut(), &response)?;
                return Ok(Next::StartTls);
            }
        }
    }
}

/// One write per reply: `write_to` writes a multi-line reply piecemeal, which
/// Nagle's algorithm and delayed ACKs would turn into 40 ms stalls.
fn reply(stream: &mut impl Write, response: &Response) -> io::Result<()> {
    stream.write_all(&response.buffer()?)?;
    stream.flush()
}

/// The per-connection `mailin::Handler`: checks credentials and recipients and
/// records what is accepted.
struct Recorder {
    auth: Option<(String, String)>,
    reject_rcpt: Vec<String>,
    shared: Arc<Shared>,
    tls_active: Arc<AtomicBool>,
    authenticated_as: Option<String>,
    /// `MAIL FROM` and the accepted `RCPT TO`s of the message in `DATA`.
    envelope: Option<(String, Vec<String>)>,
    data: Vec<u8>,
}

impl Recorder {
    fn check_credentials(&mut self, user: &str, password: &str) -> Response {
        match &self.auth {
            Some((u, p)) if u == user && p == password => {
                self.authenticated_as = Some(user.to_owned());
                response::AUTH_OK
            }
            _ => response::INVALID_CREDENTIALS,
        }
    }
}

impl Handler for Recorder {
    fn rcpt(&mut self, to: &str) -> Response {
        if self.reject_rcpt.iter().any(|r| r.eq_ignore_ascii_case(to)) {
            response::NO_MAILBOX
        } else {
            response::OK
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.envelope = Some((from.to_owned(), to.to_vec()));
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let Some((from, to)) = self.envelope.take() else {
            return response::TRANSACTION_FAILED;
        };
        let received = Received {
            from,
            to,
            data: String::from_utf8_lossy(&std::mem::take(&mut self.data)).into_owned(),
            authenticated_as: self.authenticated_as.clone(),
            tls: self.tls_active.load(Ordering::SeqCst),
        };
        lock(&self.shared.messages).push(received);
        response::OK
    }

    fn auth_plain(&mut self, _authorization_id: &str, user: &str, password: &str) -> Response {
        self.check_credentials(user, password)
    }

    fn auth_login(&mut self, user: &str, password: &str) -> Response {
        self.check_credentials(user, password)
    }
}

/// A throwaway CA and the server configuration holding a certificate it signed
/// for `localhost` and `127.0.0.1`.
struct Pki {
    ca_pem: String,
    server_config: Arc<ServerConfig>,
}

impl Pki {
    fn generate() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "steward test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca.self_signed(&ca_key).unwrap();

        let key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();

        // An explicit provider: the process-wide default is ambiguous when more
        // than one rustls backend is compiled in.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        Pki {
            ca_pem: ca.pem(),
            server_config: Arc::new(server_config),
        }
    }
}

/// The server checked against the client the daemon uses (lettre).
mod self_test {
    use std::error::Error as _;
    use std::time::Duration;

    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::transport::smtp::Error;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    use super::{free_port, SmtpOptions, SmtpServer};

    const WAIT: Duration = Duration::from_secs(5);

    fn alert(to: &str) -> Message {
        Message::builder()
            .from("steward <steward@example.org>".parse().unwrap())
            .to(to.parse().unwrap())
            .subject("drift alert")
            .body(String::from("psi 0.31 is over 0.2\r\n.leading dot\r\n"))
            .unwrap()
    }

    fn plain(port: u16) -> lettre::transport::smtp::AsyncSmtpTransportBuilder {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(port)
            .timeout(Some(WAIT))
    }

    /// STARTTLS required, to "localhost"; trusting `ca` or only the public roots.
    fn starttls(port: u16, ca: Option<&str>) -> lettre::transport::smtp::AsyncSmtpTransportBuilder {
        let mut params = TlsParameters::builder("localhost".into());
        if let Some(ca) = ca {
            params = params.add_root_certificate(Certificate::from_pem(ca.as_bytes()).unwrap());
        }
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("localhost")
            .port(port)
            .timeout(Some(WAIT))
            .tls(Tls::Required(params.build().unwrap()))
    }

    async fn send(
        builder: lettre::transport::smtp::AsyncSmtpTransportBuilder,
        to: &str,
    ) -> Result<(), Error> {
        builder.build().send(alert(to)).await.map(|_| ())
    }

    /// The `std::io::Error` somewhere in an error's chain, if any.
    fn io_kind(err: &Error) -> Option<std::io::ErrorKind> {
        let mut source = err.source();
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return Some(io.kind());
            }
            source = e.source();
        }
        None
    }

    #[tokio::test]
    async fn plain_delivery_is_recorded() {
        let server = SmtpServer::start(SmtpOptions::default());
        send(plain(server.port()), "ops@example.org").await.unwrap();
        let got = server.wait_for(1, WAIT);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].from, "steward@example.org");
        assert_eq!(got[0].to, vec!["ops@example.org".to_owned()]);
        assert!(
            got[0].data.contains("Subject: drift alert\r\n"),
            "{}",
            got[0].data
        );
        assert!(
            got[0]
                .data
                .contains("psi 0.31 is over 0.2\r\n.leading dot\r\n"),
            "{}",
            got[0].data
        );
        assert_eq!(got[0].authenticated_as, None);
        assert!(!got[0].tls);
        assert!(server.ca_pem().is_none());
    }

    #[tokio::test]
    async fn starttls_needs_the_ca() {
        let server = SmtpServer::start(SmtpOptions {
            starttls: true,
            ..SmtpOptions::default()
        });
        let ca = server.ca_pem().unwrap();
        send(starttls(server.port(), Some(&ca)), "ops@example.org")
            .await
            .unwrap();
        assert!(server.wait_for(1, WAIT)[0].tls);

        let err = send(starttls(server.port(), None), "ops@example.org")
            .await
            .unwrap_err();
        assert!(format!("{err}").contains("UnknownIssuer"), "{err}");
        assert_eq!(server.messages().len(), 1);
    }

    #[tokio::test]
    async fn auth_is_required_and_checked() {
        let options = SmtpOptions {
            starttls: true,
            auth: Some(("alerts".into(), "s3cret".into())),
            ..SmtpOptions::default()
        };
        let server = SmtpServer::start(options);
        let ca = server.ca_pem().unwrap();
        let good = Credentials::new("alerts".into(), "s3cret".into());

        let tls_plain = starttls(server.port(), Some(&ca))
            .credentials(good.clone())
            .authentication(vec![Mechanism::Plain]);
        send(tls_plain, "ops@example.org").await.unwrap();
        // LOGIN, and on a connection that stays plain.
        let login = plain(server.port())
            .credentials(good)
            .authentication(vec![Mechanism::Login]);
        send(login, "ops@example.org").await.unwrap();
        let got = server.wait_for(2, WAIT);
        assert_eq!(got[0].authenticated_as.as_deref(), Some("alerts"));
        assert!(got[0].tls);
        assert_eq!(got[1].authenticated_as.as_deref(), Some("alerts"));
        assert!(!got[1].tls);

        let wrong = starttls(server.port(), Some(&ca))
            .credentials(Credentials::new("alerts".into(), "guess".into()));
        let err = send(wrong, "ops@example.org").await.unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert_eq!(err.status().map(|c| c.to_string()).as_deref(), Some("535"));

        let err = send(plain(server.port()), "ops@example.org")
            .await
            .unwrap_err();
        assert!(err.is_permanent(), "no credentials: {err}");
        assert_eq!(server.messages().len(), 2);
    }

    #[tokio::test]
    async fn rejected_recipient_is_a_permanent_error() {
        let server = SmtpServer::start(SmtpOptions {
            reject_rcpt: vec!["Nobody@example.org".into()],
            ..SmtpOptions::default()
        });
        let err = send(plain(server.port()), "nobody@example.org")
            .await
            .unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert_eq!(err.status().map(|c| c.to_string()).as_deref(), Some("550"));
        send(plain(server.port()), "ops@example.org").await.unwrap();
        let got = server.wait_for(1, WAIT);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].to, vec!["ops@example.org".to_owned()]);
    }

    #[tokio::test]
    async fn stopped_server_refuses_and_the_port_can_be_reused() {
        let port = free_port();
        let first = SmtpServer::start(SmtpOptions {
            port: Some(port),
            ..SmtpOptions::default()
        });
        assert_eq!(first.port(), port);
        send(plain(port), "ops@example.org").await.unwrap();
        first.wait_for(1, WAIT);
        first.stop();

        // Refused, or (once in a CI run next to a hundred other tests) reset:
        // the released port can be taken at once by another test's server (a
        // daemon listening on port 0), which drops a client that speaks no HTTP.
        // What matters is that nothing accepts the mail.
        let err = send(plain(port), "ops@example.org").await.unwrap_err();
        assert!(
            matches!(
                io_kind(&err),
                Some(std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset)
            ),
            "{err}"
        );

        let second = SmtpServer::start(SmtpOptions {
            port: Some(port),
            ..SmtpOptions::default()
        });
        send(plain(port), "ops@example.org").await.unwrap();
        assert_eq!(second.wait_for(1, WAIT).len(), 1);
    }
}
