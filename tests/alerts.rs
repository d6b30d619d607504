//! Alert mail from the running daemon to a real SMTP server on loopback
//! (`tests/smtp.rs`): grouping, delivery after an outage and after a restart,
//! flapping, permanent refusals, STARTTLS with a private CA, silences, and
//! `notify-test`. Every test of a daemon (the outbox and silences are in its
//! database) runs on SQLite and on PostgreSQL (`for_each_backend!`); the
//! command-line tests (`notify-test`, `check-config`, a start refused over its
//! CA or password file) open no database and run once.
//!
//! Drift events come from real predictions (one-second checks over 100 rows).
//! The daemon is another process, so its timers run on real time: the tests use
//! intervals of a second or two and wait on observable state (mails received,
//! checks completed, `GET /v1/alerts`), never a fixed sleep. The rules' and the
//! back-off's timing are tested on exact times in `alert::rules` and
//! `alert::service`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{
    client, for_each_backend, metrics_text, run, write_config, Api, Backend, Daemon, InProcess,
};
use crate::monitoring::{checks_after, predict_all, rows};
use crate::smtp::{free_port, Received, SmtpOptions, SmtpServer};

/// Drift checks every second over the last 100 predictions, one check to
/// change state; alert mail by SMTP to `port` with short timings.
pub(crate) fn config(port: u16, extra_alerts: &str) -> String {
    // `extra_alerts` may name its own recipients (a key given twice is an error).
    let to = if extra_alerts.contains("to = ") {
        ""
    } else {
        "to = [\"ops@example.org\"]\n"
    };
    format!(
        "[drift]\ninterval_secs = 1\nwindow = 100\nmin_rows = 50\nconfirm_checks = 1\n\
         [alerts]\ntransport = \"smtp\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\n\
         tls = \"none\"\nfrom = \"steward@example.org\"\n{to}\
         group_wait_secs = 1\nretry_initial_secs = 0.2\nretry_max_secs = 1\n{extra_alerts}"
    )
}

/// Longer bills and heavier birds: two input features drift.
pub(crate) fn shifted(r: &mut Value) {
    if let Some(v) = r["bill_length_mm"].as_f64() {
        r["bill_length_mm"] = json!(v + 8.0);
    }
    if let Some(v) = r["body_mass_g"].as_f64() {
        r["body_mass_g"] = json!(v + 1500.0);
    }
}

/// Mails about the input-feature group.
pub(crate) fn feature_mails(mails: &[Received]) -> Vec<&Received> {
    mails
        .iter()
        .filter(|m| m.data.contains("feature drift"))
        .collect()
}

/// The `Subject:` header of a raw message.
pub(crate) fn subject(m: &Received) -> String {
    header(m, "Subject").unwrap_or_default()
}

/// A header's value, if present, unfolded (a long header continues on lines
/// that start with white space).
fn header(m: &Received, name: &str) -> Option<String> {
    let head = m.data.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.lines();
    let prefix = format!("{name}: ");
    let first = lines.find_map(|l| l.strip_prefix(&prefix))?;
    let mut value = first.to_string();
    for l in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        value.push(' ');
        value.push_str(l.trim_start());
    }
    Some(value)
}

/// The raw message with quoted-printable undone (soft line breaks, `=XX`
/// bytes), so that the HTML part can be searched and shown.
fn unquoted(m: &Received) -> String {
    let joined = m.data.replace("=\r\n", "");
    let b = joined.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) if b[i] == b'=' => {
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every `cid:` the HTML part shows, in order.
fn inline_cids(m: &Received) -> Vec<String> {
    unquoted(m)
        .split("src=\"cid:")
        .skip(1)
        .filter_map(|rest| rest.split('"').next().map(str::to_string))
        .collect()
}

/// The decoded body of the part whose Content-ID is `cid`.
fn inline_part(m: &Received, cid: &str) -> Vec<u8> {
    use base64::Engine;
    let at = m
        .data
        .find(&format!("Content-ID: <{cid}>"))
        .unwrap_or_else(|| panic!("no part {cid} in\n{}", m.data));
    let part = &m.data[at..];
    let head_end = part.find("\r\n\r\n").expect("part headers end");
    assert!(
        part[..head_end].contains("Content-Type: image/png")
            && part[..head_end].contains("Content-Transfer-Encoding: base64"),
        "{}",
        &part[..head_end]
    );
    let body = &part[head_end + 4..];
    let body = &body[..body.find("\r\n--").expect("part ends")];
    let b64: String = body.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64 part")
}

/// Waits until a mail about feature drift has arrived; returns all mails.
pub(crate) fn wait_feature_mail(server: &SmtpServer, n: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = server.messages();
        if feature_mails(&all).len() >= n {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "no feature-drift mail within 30 s; got {:?}",
            all.iter().map(subject).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /v1/alerts` until `pred` holds for the newest feature-drift row.
async fn wait_alert_row(d: &impl Api, c: &reqwest::Client, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = d.get_json(c, "/v1/alerts").await;
        if let Some(row) = list["alerts"].as_array().unwrap().iter().find(|a| {
            a["subject"]
                .as_str()
                .is_some_and(|s| s.contains("feature drift"))
        }) {
            if pred(row) {
                return row.clone();
            }
        }
        assert!(Instant::now() < deadline, "alert row never matched: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

for_each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_drifted_burst_gives_one_mail_for_the_incident_with_the_numbers
);
async fn a_drifted_burst_gives_one_mail_for_the_incident_with_the_numbers(backend: Backend) {
    let server = SmtpServer::start(SmtpOptions::default());
    let d = InProcess::start_on(backend, &config(server.port(), "")).await;
    let c = client();
    predict_all(&d, &c, &rows(100, shifted)).await;
    let mails = wait_feature_mail(&server, 1);
    let m = feature_mails(&mails)[0].clone();
    // Two inputs and so the output drift: several rules fire, one mail (the
    // default `alerts.group_by = ["model"]`), the worst named first.
    let s = subject(&m);
    assert!(
        s.starts_with("[steward] FIRING: feature drift on 2 features, prediction drift")
            && s.ends_with("(model v1)"),
        "{s}"
    );
    assert_eq!(m.to, vec!["ops@example.org"]);
    assert_eq!(m.from, "steward@example.org");
    for needle in [
        "bill_length_mm",
        "body_mass_g",
        "KS statistic",
        "p-value",
        "PSI",
        "window: 100 predictions against 344 reference rows",
        "What steward is doing",
        "/ui/drift",
        "Content-Type: text/html",
    ] {
        assert!(m.data.contains(needle), "missing {needle:?} in\n{}", m.data);
    }
    // What moved, drawn: one inline PNG per drifting input and output, each a
    // decodable 700 × 350 image referenced from the HTML part.
    let cids = inline_cids(&m);
    assert!(cids.len() >= 2, "{cids:?}");
    for cid in &cids {
        let png = inline_part(&m, cid);
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let reader = decoder.read_info().expect("a PNG");
        assert_eq!(
            (reader.info().width, reader.info().height),
            (700, 350),
            "{cid}"
        );
    }
    let text = unquoted(&m);
    // The mail as a person sees it, for looking at: its HTML part with the
    // charts beside it (target/screenshots/incident-mail/, or
    // incident-mail-postgres/ from the daemon on PostgreSQL: both run at once).
    let name = match backend {
        Backend::Sqlite => "incident-mail",
        Backend::Postgres => "incident-mail-postgres",
    };
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/screenshots")
        .join(name);
    std::fs::create_dir_all(&out).unwrap();
    let html_start = text.find("<html>").expect("an HTML part");
    let html_end = text[html_start..].find("</html>").expect("the HTML ends") + html_start + 7;
    let mut html = text[html_start..html_end].to_string();
    for cid in &cids {
        std::fs::write(out.join(format!("{cid}.png")), inline_part(&m, cid)).unwrap();
        html = html.replace(&format!("cid:{cid}"), &format!("{cid}.png"));
    }
    std::fs::write(out.join("mail.html"), format!("<h4>{s}</h4>\n{html}")).unwrap();
    for name in [
        "bill_length_mm: reference against current",
        "body_mass_g: reference",
    ] {
        assert!(text.contains(name), "no chart of {name} in\n{text}");
    }
    // Every link in the mail opens.
    let links: Vec<&str> = text
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(links.len() >= 2, "{links:?}");
    // To the dashboard's pages, each answering with its page.
    for link in links {
        assert!(link.starts_with(&format!("{}/ui/", d.url)), "{link}");
        let r = c.get(link).send().await.expect("link reachable");
        assert!(r.status().is_success(), "{link}: {}", r.status());
        let page = r.text().await.unwrap();
        assert!(page.contains("<body data-page="), "{link}: {page}");
    }
    // More checks of the same window and a group interval later: still one
    // mail, for every rule the burst set off.
    checks_after(&d, &c, 4.0).await;
    let all = server.messages();
    assert_eq!(
        all.len(),
        1,
        "{:?}",
        all.iter().map(subject).collect::<Vec<_>>()
    );
    let row = wait_alert_row(&d, &c, |r| r["state"] == "sent").await;
    assert_eq!(row["attempts"], 1);
    let text = metrics_text(&c, &d.url).await;
    assert!(text.contains("steward_alerts_pending 0\n"), "{text}");
    assert!(!text.contains("steward_alerts_sent_total 0\n"), "{text}");
}

for_each_backend!(
    #[tokio::test]
    mail_waits_for_a_server_that_is_down_and_arrives_once_it_is_up
);
async fn mail_waits_for_a_server_that_is_down_and_arrives_once_it_is_up(backend: Backend) {
    let port = free_port();
    let d = Daemon::start_on(backend, &config(port, ""), &[]);
    let c = client();
    predict_all(&d, &c, &rows(100, shifted)).await;
    // Stored, tried, and waiting for a retry.
    let row = wait_alert_row(&d, &c, |r| {
        r["state"] == "pending" && r["attempts"].as_u64() >= Some(2)
    })
    .await;
    assert!(
        row["last_error"].as_str().unwrap().contains("SMTP"),
        "{row}"
    );
    let server = SmtpServer::start(SmtpOptions {
        port: Some(port),
        ..SmtpOptions::default()
    });
    wait_feature_mail(&server, 1);
    wait_alert_row(&d, &c, |r| r["state"] == "sent").await;
    checks_after(&d, &c, 3.0).await;
    assert_eq!(feature_mails(&server.messages()).len(), 1);
    assert!(d.log_text().contains("alert mail not sent; will retry"));
}

for_each_backend!(
    #[tokio::test]
    a_pending_mail_survives_a_restart_and_is_sent_once
);
async fn a_pending_mail_survives_a_restart_and_is_sent_once(backend: Backend) {
    let port = free_port();
    let d = Daemon::start_on(backend, &config(port, ""), &[]);
    let c = client();
    predict_all(&d, &c, &rows(100, shifted)).await;
    wait_alert_row(&d, &c, |r| {
        r["state"] == "pending" && r["attempts"].as_u64() >= Some(1)
    })
    .await;
    let (status, _, stopped) = d.halt();
    assert!(status.success());
    let server = SmtpServer::start(SmtpOptions {
        port: Some(port),
        ..SmtpOptions::default()
    });
    let d = stopped.start(&[]);
    let mails = wait_feature_mail(&server, 1);
    let s = subject(feature_mails(&mails)[0]);
    assert!(
        s.starts_with("[steward] FIRING: feature drift on 2 features,"),
        "{s}"
    );
    // The window still drifts after the restart, but the alert was already
    // notified before it: no second mail.
    checks_after(&d, &c, 4.0).await;
    assert_eq!(server.messages().len(), 1);
    let list = d.get_json(&c, "/v1/alerts").await;
    let feature_rows = list["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["group"] == "model")
        .count();
    assert_eq!(feature_rows, 1, "{list}");
}

for_each_backend!(
    #[tokio::test]
    a_flapping_alert_does_not_mail_each_flip
);
async fn a_flapping_alert_does_not_mail_each_flip(backend: Backend) {
    let server = SmtpServer::start(SmtpOptions::default());
    // A group interval beyond the four flips (about 5 s; the test checks that
    // they fit), so that the group's next look sees the same firing alert.
    const INTERVAL: Duration = Duration::from_secs(12);
    let d = Daemon::start_on(
        backend,
        &config(
            server.port(),
            &format!("group_interval_secs = {}\n", INTERVAL.as_secs()),
        ),
        &[],
    );
    let c = client();
    predict_all(&d, &c, &rows(100, shifted)).await;
    wait_feature_mail(&server, 1);
    let first_mail = Instant::now();
    // Resolve, fire, resolve, fire: each window replaced whole before a check.
    for drifting in [false, true, false, true] {
        let f: fn(&mut Value) = if drifting { shifted } else { |_| {} };
        predict_all(&d, &c, &rows(100, f)).await;
        checks_after(&d, &c, 1.0).await;
    }
    assert!(
        first_mail.elapsed() < INTERVAL - Duration::from_secs(2),
        "the flips took {:?}, too close to the group interval for this test",
        first_mail.elapsed()
    );
    let log = d.log_text();
    let detected = crate::monitoring::events(&log, "drift_detected").len();
    let resolved = crate::monitoring::events(&log, "drift_resolved").len();
    assert!(
        detected >= 4 && resolved >= 2,
        "{detected} detected, {resolved} resolved"
    );
    // Past the group's next look (the interval after the first mail, plus two
    // checks): nothing new to say.
    let left = (INTERVAL + Duration::from_secs(2)).saturating_sub(first_mail.elapsed());
    checks_after(&d, &c, left.as_secs_f64().ceil()).await;
    assert!(first_mail.elapsed() > INTERVAL);
    let mails = server.messages();
    assert_eq!(
        feature_mails(&mails).len(),
        1,
        "{:?}",
        mails.iter().map(subject).collect::<Vec<_>>()
    );
}

for_each_backend!(
    #[tokio::test]
    auth_failure_and_a_refused_recipient_are_stored_errors_and_serving_goes_on
);
async fn auth_failure_and_a_refused_recipient_are_stored_errors_and_serving_goes_on(
    backend: Backend,
) {
    let server = SmtpServer::start(SmtpOptions {
        auth: Some(("alerts".into(), "right".into())),
        reject_rcpt: vec!["nobody@example.org".into()],
        ..SmtpOptions::default()
    });
    let cases = [
        ("username = \"alerts\"\n", "wrong", "535"),
        (
            "username = \"alerts\"\nto = [\"nobody@example.org\"]\n",
            "right",
            "550",
        ),
    ];
    for (extra, password, code) in cases {
        let d = Daemon::start_on(
            backend,
            &config(server.port(), extra),
            &[("STEWARD_SMTP_PASSWORD", password)],
        );
        let c = client();
        predict_all(&d, &c, &rows(100, shifted)).await;
        let row = wait_alert_row(&d, &c, |r| r["state"] == "failed").await;
        let error = row["last_error"].as_str().unwrap();
        assert!(error.contains(code), "{code}: {row}");
        assert_eq!(row["attempts"], 1, "a permanent refusal is not retried");
        d.wait_for_log("alert mail refused for good").await;
        assert!(!d.log_text().contains(password) || password == "right");
        let (status, body) = d
            .predict(&c, &json!({"features": crate::common::penguin()}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(feature_mails(&server.messages()).is_empty());
}

for_each_backend!(
    #[tokio::test]
    starttls_with_a_private_ca_and_a_password_file
);
async fn starttls_with_a_private_ca_and_a_password_file(backend: Backend) {
    let server = SmtpServer::start(SmtpOptions {
        starttls: true,
        auth: Some(("alerts".into(), "s3cret".into())),
        ..SmtpOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, server.ca_pem().unwrap()).unwrap();
    let secret = dir.path().join("smtp-password");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let text = config(server.port(), "")
        .replace("smtp_host = \"127.0.0.1\"", "smtp_host = \"localhost\"")
        .replace("tls = \"none\"", "tls = \"starttls\"")
        + &format!(
            "ca_file = \"{}\"\nusername = \"alerts\"\npassword_file = \"{}\"\n",
            ca.display(),
            secret.display()
        );
    let d = Daemon::start_on_in(backend, dir, &text, &[]);
    let c = client();
    predict_all(&d, &c, &rows(100, shifted)).await;
    let mails = wait_feature_mail(&server, 1);
    let m = feature_mails(&mails)[0];
    assert!(m.tls, "not over TLS");
    assert_eq!(m.authenticated_as.as_deref(), Some("alerts"));
    assert!(!d.log_text().contains("s3cret"));
}

for_each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_silence_holds_back_matching_alerts_and_resolved_mail_threads
);
async fn a_silence_holds_back_matching_alerts_and_resolved_mail_threads(backend: Backend) {
    let server = SmtpServer::start(SmtpOptions::default());
    let d = InProcess::start_on(backend, &config(server.port(), "group_interval_secs = 1\n")).await;
    let c = client();
    // Silence body mass; only the bill length is mailed.
    let ends = steward::time::rfc3339(steward::time::now_millis() + 3_600_000);
    let resp = c
        .post(format!("{}/v1/silences", d.url))
        .json(
            &json!({"matchers": [{"name": "feature", "value": "body_mass_g"}],
                      "ends_at": ends, "created_by": "test", "comment": "known"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let bad = c
        .post(format!("{}/v1/silences", d.url))
        .json(&json!({"matchers": [], "ends_at": ends}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let listed = d.get_json(&c, "/v1/silences").await;
    assert_eq!(listed["silences"].as_array().unwrap().len(), 1);

    predict_all(&d, &c, &rows(100, shifted)).await;
    let mails = wait_feature_mail(&server, 1);
    let first = feature_mails(&mails)[0].clone();
    let s = subject(&first);
    assert!(
        s.starts_with("[steward] FIRING: feature drift on bill_length_mm,"),
        "{s}"
    );
    assert!(!first.data.contains("body_mass_g"));
    // Back to normal: one resolved mail, in the same thread.
    predict_all(&d, &c, &rows(100, |_| {})).await;
    let mails = wait_feature_mail(&server, 2);
    let second = feature_mails(&mails)[1].clone();
    let s = subject(&second);
    assert!(
        s.starts_with("[steward] RESOLVED: feature drift on bill_length_mm,"),
        "{s}"
    );
    let first_id = header(&first, "Message-ID").unwrap();
    assert_eq!(header(&second, "In-Reply-To"), Some(first_id.clone()));
    assert_eq!(header(&second, "References"), Some(first_id));
}

#[test]
fn notify_test_reports_success_or_the_smtp_error_in_one_line() {
    let server = SmtpServer::start(SmtpOptions::default());
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &config(server.port(), ""));
    let (code, out, err) = run(&["notify-test", "--config", "steward.toml"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("sent a test mail to ops@example.org via smtp 127.0.0.1:"),
        "{out}"
    );
    let mails = server.wait_for(1, Duration::from_secs(10));
    assert!(subject(&mails[0]).starts_with("[steward] test mail"));
    let port = server.port();
    server.stop();
    let (code, out, err) = run(&["notify-test", "--config", "steward.toml"], dir.path());
    assert_eq!(code, 1, "{out}");
    let line = err
        .lines()
        .find(|l| l.contains("notify-test"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("127.0.0.1:{port}")) && line.contains("SMTP"),
        "{err}"
    );
}

#[test]
fn check_config_refuses_smtp_without_recipients_or_with_a_bad_address() {
    let dir = tempfile::tempdir().unwrap();
    for (alerts, key) in [
        ("transport = \"smtp\"\n", "alerts.to"),
        ("to = [\"not an address\"]\n", "alerts.to[0]"),
        ("from = \"nobody\"\n", "alerts.from"),
    ] {
        std::fs::write(dir.path().join("bad.toml"), format!("[alerts]\n{alerts}")).unwrap();
        let (code, _, err) = run(&["check-config", "--config", "bad.toml"], dir.path());
        assert_eq!(code, 2, "{alerts}: {err}");
        assert!(err.contains(key), "{alerts}: {err}");
    }
}

#[test]
fn notify_test_on_the_embedded_defaults_writes_an_eml_file() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(&["notify-test"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("via file data/outbox"), "{out}");
    let files: Vec<_> = std::fs::read_dir(dir.path().join("data/outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].extension().unwrap(), "eml");
    let eml = std::fs::read_to_string(&files[0]).unwrap();
    assert!(eml.contains("Subject: [steward] test mail"), "{eml}");
    assert!(eml.contains("To: steward@localhost"), "{eml}");
}

for_each_backend!(
    #[tokio::test]
    silences_need_the_token_and_can_be_listed_and_deleted
);
async fn silences_need_the_token_and_can_be_listed_and_deleted(backend: Backend) {
    let d = Daemon::start_on(backend, "", &[("STEWARD_TOKEN", "t0ken")]);
    let c = client();
    let url = format!("{}/v1/silences", d.url);
    let ends = steward::time::rfc3339(steward::time::now_millis() + 60_000);
    let body = json!({"matchers": [{"name": "rule", "value": "anomaly_rate"}], "ends_at": ends});
    let denied = c.post(&url).json(&body).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);
    let created: Value = c
        .post(&url)
        .bearer_auth("t0ken")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let past =
        json!({"matchers": [{"name": "rule", "value": "x"}], "ends_at": "2020-01-01T00:00:00Z"});
    let r = c
        .post(&url)
        .bearer_auth("t0ken")
        .json(&past)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_silence");
    let list = silences(&c, &url).await;
    assert_eq!(list["silences"][0]["id"], id.as_str());
    assert_eq!(list["silences"][0]["matchers"][0]["value"], "anomaly_rate");
    assert_eq!(delete(&c, &format!("{url}/{id}")).await, 204);
    assert_eq!(delete(&c, &format!("{url}/{id}")).await, 404);
    assert_eq!(silences(&c, &url).await["silences"], json!([]));
}

/// `GET /v1/silences` with the token.
async fn silences(c: &reqwest::Client, url: &str) -> Value {
    let r = c.get(url).bearer_auth("t0ken").send().await.unwrap();
    r.json().await.unwrap()
}

/// `DELETE` with the token; the status.
async fn delete(c: &reqwest::Client, url: &str) -> u16 {
    let r = c.delete(url).bearer_auth("t0ken").send().await.unwrap();
    r.status().as_u16()
}

#[test]
fn an_unreadable_ca_or_password_file_stops_the_start_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, named) in [
        (
            "tls = \"starttls\"\nca_file = \"missing-ca.pem\"\n",
            "missing-ca.pem",
        ),
        (
            "username = \"alerts\"\npassword_file = \"missing-secret\"\n",
            "missing-secret",
        ),
    ] {
        let text = config(free_port(), "").replace("tls = \"none\"\n", "") + extra;
        let text = if extra.starts_with("tls") {
            text
        } else {
            text + "tls = \"none\"\n"
        };
        write_config(dir.path(), &text);
        let (code, _, err) = run(&["serve", "--config", "steward.toml"], dir.path());
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(named), "{err}");
    }
}
