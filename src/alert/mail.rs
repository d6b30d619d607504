//! Delivery with lettre: the configured transport (SMTP with `tls = "none" |
//! "starttls" | "tls"`, optional authentication, timeouts; or `.eml` files in
//! `alerts.dir`), building a stored notification into a MIME message (plain text
//! and HTML alternatives, Message-ID, In-Reply-To and References for threading),
//! and sorting send errors into permanent (5xx: give up) and transient (retry).
//!
//! The SMTP password never appears in a message, a log line or an error.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::Config;
use crate::store::alerts::Mail;

/// Why the mail transport cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("alerts.ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("alerts: {0}")]
    Setup(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A failed send.
#[derive(Debug, Clone, PartialEq)]
pub struct SendError {
    /// The server refused for good (5xx); retrying cannot help.
    pub permanent: bool,
    pub message: String,
}

#[derive(Debug, Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// Writes `.eml` files into the directory (created on the first write).
    File(AsyncFileTransport<Tokio1Executor>, PathBuf),
}

/// Sends stored notifications.
#[derive(Debug, Clone)]
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    send_timeout: Duration,
    /// `smtp host:port` or `file DIR`, for log lines.
    pub describe: String,
}

impl Mailer {
    /// The transport `config` describes (the password read as `Config` says).
    pub fn from_config(config: &Config) -> Result<Mailer, MailError> {
        let a = &config.alerts;
        let from: Mailbox = a
            .from
            .parse()
            .map_err(|e| MailError::Setup(format!("alerts.from `{}`: {e}", a.from)))?;
        let send_timeout = a.send_timeout_secs.get();
        if a.transport == crate::config::Transport::File {
            // Created when a mail is written (building a mailer changes nothing,
            // so that `check-config` can build one).
            let dir = PathBuf::from(&a.dir);
            return Ok(Mailer {
                transport: Transport::File(AsyncFileTransport::new(&dir), dir.clone()),
                from,
                send_timeout,
                describe: format!("file {}", dir.display()),
            });
        }
        let params = || -> Result<TlsParameters, MailError> {
            let mut b = TlsParameters::builder(a.smtp_host.clone());
            if !a.ca_file.is_empty() {
                let ca_err = |message: String| MailError::CaFile {
                    path: a.ca_file.clone(),
                    message,
                };
                let pem = std::fs::read(&a.ca_file).map_err(|e| ca_err(e.to_string()))?;
                let cert = Certificate::from_pem(&pem).map_err(|e| ca_err(e.to_string()))?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls()
                .map_err(|e| MailError::Setup(format!("TLS for {}: {e}", a.smtp_host)))
        };
        let tls = match a.tls {
            crate::config::Tls::None => Tls::None,
            crate::config::Tls::Tls => Tls::Wrapper(params()?),
            crate::config::Tls::Starttls => Tls::Required(params()?),
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(a.smtp_host.as_str())
            .port(a.smtp_port)
            .tls(tls)
            .timeout(Some(a.connect_timeout_secs.get()));
        if !a.username.is_empty() {
            let password = config.smtp_password()?.unwrap_or_default();
            b = b.credentials(Credentials::new(a.username.clone(), password));
        }
        Ok(Mailer {
            transport: Transport::Smtp(b.build()),
            from,
            send_timeout,
            describe: format!("smtp {}:{} (tls {})", a.smtp_host, a.smtp_port, a.tls),
        })
    }

    /// The domain of the sender, for Message-IDs.
    pub fn domain(&self) -> String {
        self.from.email.domain().to_string()
    }

    /// Sends one stored notification.
    pub async fn send(&self, mail: &Mail) -> Result<(), SendError> {
        let message = self.message(mail).map_err(|message| SendError {
            permanent: true,
            message,
        })?;
        let sent = tokio::time::timeout(self.send_timeout, async {
            match &self.transport {
                Transport::Smtp(t) => t.send(message).await.map(|_| ()).map_err(smtp_error),
                Transport::File(t, dir) => {
                    let failed = |e: &dyn std::fmt::Display| SendError {
                        permanent: false,
                        message: format!("file transport: {e}"),
                    };
                    tokio::fs::create_dir_all(dir)
                        .await
                        .map_err(|e| failed(&e))?;
                    t.send(message).await.map(|_| ()).map_err(|e| failed(&e))
                }
            }
        })
        .await;
        sent.unwrap_or_else(|_| {
            Err(SendError {
                permanent: false,
                message: format!(
                    "no answer within alerts.send_timeout_secs ({} s)",
                    self.send_timeout.as_secs_f64()
                ),
            })
        })
    }

    /// The MIME message of a stored notification.
    fn message(&self, mail: &Mail) -> Result<Message, String> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject.clone())
            .message_id(Some(format!("<{}>", mail.message_id)));
        let recipients = mail.recipients();
        for r in &recipients {
            let to: Mailbox = r
                .parse()
                .map_err(|e| format!("recipient `{r}` is not an address: {e}"))?;
            b = b.to(to);
        }
        // Only the file transport may have no recipients (check-config refuses
        // smtp without them): the file is addressed to the sender.
        if recipients.is_empty() {
            b = b.to(self.from.clone());
        }
        let thread = mail.thread();
        if let Some(last) = thread.last() {
            b = b.in_reply_to(format!("<{last}>")).references(
                thread
                    .iter()
                    .map(|t| format!("<{t}>"))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        let body = if mail.images.is_empty() {
            MultiPart::alternative_plain_html(mail.body_text.clone(), mail.body_html.clone())
        } else {
            // The HTML part and the images it shows by `cid:`, as one
            // multipart/related alternative to the plain text.
            let png = ContentType::parse("image/png")
                .map_err(|e| format!("cannot build the message: {e}"))?;
            let mut related =
                MultiPart::related().singlepart(SinglePart::html(mail.body_html.clone()));
            for image in &mail.images {
                related = related.singlepart(
                    Attachment::new_inline(image.cid.clone()).body(image.png.clone(), png.clone()),
                );
            }
            MultiPart::alternative()
                .singlepart(SinglePart::plain(mail.body_text.clone()))
                .multipart(related)
        };
        b.multipart(body)
            .map_err(|e| format!("cannot build the message: {e}"))
    }
}

/// Sorts an SMTP error: a 5xx answer is permanent, anything else (refused
/// connection, timeout, 4xx, TLS trouble on the way) is worth retrying.
fn smtp_error(e: lettre::transport::smtp::Error) -> SendError {
    SendError {
        permanent: e.is_permanent(),
        message: format!("SMTP: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(thread: &[&str]) -> Mail {
        Mail {
            id: 1,
            created: 0,
            group_key: "feature_drift".into(),
            kind: "firing".into(),
            subject: "[steward] FIRING: feature drift on a (model v1)".into(),
            body_text: "text part".into(),
            body_html: "<p>html part</p>".into(),
            message_id: "m3@example.org".into(),
            thread: serde_json::to_string(thread).unwrap(),
            recipients: r#"["ops@example.org"]"#.into(),
            state: crate::store::alerts::MailState::Pending,
            attempts: 0,
            next_attempt: 0,
            last_error: None,
            sent_at: None,
            images: Vec::new(),
        }
    }

    #[tokio::test]
    async fn the_file_transport_writes_a_threaded_two_part_message() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[alerts]\ndir = \"{}\"\nfrom = \"steward@example.org\"\n",
            dir.path().display()
        );
        let config = Config::from_parts("t.toml", &text, &[]).unwrap();
        let m = Mailer::from_config(&config).unwrap();
        assert_eq!(m.domain(), "example.org");
        m.send(&mail(&["m1@example.org", "m2@example.org"]))
            .await
            .unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
        let eml = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
        assert!(eml.contains("Message-ID: <m3@example.org>"), "{eml}");
        assert!(eml.contains("In-Reply-To: <m2@example.org>"), "{eml}");
        assert!(
            eml.contains("References: <m1@example.org> <m2@example.org>"),
            "{eml}"
        );
        assert!(eml.contains("multipart/alternative"), "{eml}");
        assert!(
            eml.contains("text part") && eml.contains("<p>html part</p>"),
            "{eml}"
        );
        assert!(eml.contains("To: ops@example.org"), "{eml}");
        assert!(!eml.contains("multipart/related"), "{eml}");
    }

    #[tokio::test]
    async fn images_go_inline_beside_the_html_part() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("[alerts]\ndir = \"{}\"\n", dir.path().display());
        let m = Mailer::from_config(&Config::from_parts("t.toml", &text, &[]).unwrap()).unwrap();
        let mut with = mail(&[]);
        with.body_html = "<p><img src=\"cid:chart-1@steward\"></p>".into();
        with.images = vec![crate::store::alerts::MailImage {
            cid: "chart-1@steward".into(),
            png: b"\x89PNG not really".to_vec(),
        }];
        m.send(&with).await.unwrap();
        let file = std::fs::read_dir(dir.path()).unwrap().next().unwrap();
        let eml = std::fs::read_to_string(file.unwrap().path()).unwrap();
        let (alt, related, image) = (
            eml.find("multipart/alternative").unwrap(),
            eml.find("multipart/related").unwrap(),
            eml.find("Content-ID: <chart-1@steward>").unwrap(),
        );
        assert!(alt < related && related < image, "{eml}");
        assert!(eml.contains("Content-Disposition: inline"), "{eml}");
        assert!(eml.contains("Content-Type: image/png"), "{eml}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = format!(
            "[alerts]\ntransport = \"smtp\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\n\
             tls = \"none\"\nto = [\"ops@example.org\"]\n"
        );
        let config = Config::from_parts("t.toml", &text, &[]).unwrap();
        let err = Mailer::from_config(&config)
            .unwrap()
            .send(&mail(&[]))
            .await
            .unwrap_err();
        assert!(!err.permanent, "{err:?}");
        assert!(err.message.starts_with("SMTP:"), "{err:?}");
    }
}
