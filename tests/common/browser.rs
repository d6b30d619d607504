//! Headless Chromium for tests of the pages steward makes (the drift report, the
//! dashboard): open a URL (`file://` or `http://`), wait for it to load, and then
//! read what a person's browser would have done: console errors and uncaught
//! exceptions, every network request (and whether it failed), the value of a
//! JavaScript expression, and a full-page screenshot.
//!
//! It speaks the DevTools protocol over `--remote-debugging-pipe`: JSON messages,
//! each ended by a NUL byte, on the child's file descriptors 3 (to Chromium) and
//! 4 (from it). No port, no WebSocket, no client crate: serde_json is enough.
//! Each `Browser` has a profile in a temporary directory and its own process
//! group; dropping it closes Chromium and kills whatever of that group is left.
//!
//! Chromium is Debian's `chromium` (.ci/run installs it). Where it is missing,
//! [`Browser::launch`] says so on stderr and returns `None`, and the test skips;
//! under CI (`CI` set) a missing Chromium fails the test instead.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long one protocol call, or a page load, may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// The window: wide enough for two charts side by side.
pub const WINDOW: (u32, u32) = (1400, 1000);

/// A headless Chromium, closed on drop.
pub struct Browser {
    child: Child,
    to_browser: std::io::PipeWriter,
    messages: Receiver<Value>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// One network request a page made.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub url: String,
    /// The resource type Chromium gives (`Document`, `Image`, `Script`, ...).
    pub kind: String,
    /// Why it failed (`net::ERR_...`, a blocked reason); `None` if it loaded.
    pub failed: Option<String>,
    /// The HTTP status of its answer (`None` for `file://` or no answer).
    pub status: Option<u64>,
}

/// An open tab: the page's session and every event it has sent so far.
pub struct Page<'a> {
    browser: &'a mut Browser,
    session: String,
    events: Vec<Value>,
}

/// The Chromium binary: `STEWARD_CHROMIUM`, else Debian's, else one on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STEWARD_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    // Debian's /usr/bin/chromium is a shell wrapper around this binary.
    let debian = Path::new("/usr/lib/chromium/chromium");
    if debian.exists() {
        return Some(debian.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.exists())
}

impl Browser {
    /// Starts Chromium; `None` (after a note) where it is not installed, outside CI.
    pub fn launch() -> Option<Browser> {
        let Some(binary) = chromium() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "Chromium is not installed (apt-get install chromium); CI must run the browser tests"
            );
            eprintln!("chromium not installed: browser test skipped");
            return None;
        };
        let profile = tempfile::tempdir().unwrap();
        let (from_browser, browser_writes) = std::io::pipe().unwrap();
        let (browser_reads, to_browser) = std::io::pipe().unwrap();
        let (reads, writes) = (browser_reads.as_raw_fd(), browser_writes.as_raw_fd());
        let mut command = Command::new(&binary);
        command
            .args([
                "--headless",
                // Root in a container has no user namespace for the sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-sync",
                "--mute-audio",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // SAFETY: the closure runs in the child between fork and exec and calls
        // only fcntl and dup2, which are async-signal-safe; it touches no memory
        // of the parent's other threads. The descriptors are first copied above
        // 10 so that placing one on 3 or 4 cannot close the other.
        unsafe {
            command.pre_exec(move || {
                let r = libc::fcntl(reads, libc::F_DUPFD, 10);
                let w = libc::fcntl(writes, libc::F_DUPFD, 10);
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start: {e}", binary.display()));
        drop((browser_reads, browser_writes));
        let (tx, messages) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(from_browser);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let text = buf.strip_suffix(&[0]).unwrap_or(&buf);
                        let Ok(message) = serde_json::from_slice::<Value>(text) else {
                            continue;
                        };
                        if tx.send(message).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Some(Browser {
            child,
            to_browser,
            messages,
            next_id: 0,
            _profile: profile,
        })
    }

    /// Sends one command and waits for its answer; events that arrive meanwhile
    /// go to `events`. A protocol error fails the test.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        events: &mut Vec<Value>,
    ) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = s.into();
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to_browser.write_all(&bytes).unwrap();
        self.to_browser.flush().unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let message = self.next_message(deadline, method);
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("{method}: {error}");
                }
                return message["result"].clone();
            }
            if message.get("method").is_some() {
                events.push(message);
            }
        }
    }

    fn next_message(&mut self, deadline: Instant, waiting_for: &str) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.messages.recv_timeout(left) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => panic!("Chromium: no answer to {waiting_for}"),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                panic!(
                    "Chromium closed the pipe (exit: {status:?}) while waiting for {waiting_for}"
                )
            }
        }
    }

    /// Opens `url` in a new tab and waits until it has loaded and its network
    /// has been quiet for a moment.
    pub fn open(&mut self, url: &str) -> Page<'_> {
        let mut events = Vec::new();
        let target = self.call(
            None,
            "Target.createTarget",
            json!({"url": "about:blank"}),
            &mut events,
        );
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
            &mut events,
        );
        let session = attached["sessionId"].as_str().unwrap().to_string();
        let mut page = Page {
            browser: self,
            session,
            events: Vec::new(),
        };
        for domain in ["Page", "Runtime", "Network", "Log"] {
            page.call(&format!("{domain}.enable"), json!({}));
        }
        // Whatever about:blank sent is not the page's.
        page.events.clear();
        let navigated = page.call("Page.navigate", json!({"url": url}));
        if let Some(error) = navigated.get("errorText") {
            panic!("{url}: {error}");
        }
        page.wait_for_load();
        page.settle();
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask politely, then end the whole process group (renderers, zygote).
        let mut ignored = Vec::new();
        let close = json!({"id": u64::MAX, "method": "Browser.close", "params": {}});
        let mut bytes = serde_json::to_vec(&close).unwrap_or_default();
        bytes.push(0);
        let _ = self.to_browser.write_all(&bytes);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            while let Ok(m) = self.messages.try_recv() {
                ignored.push(m);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let group = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals the process group that
        // launch() created for this Chromium (process_group(0)): only its
        // processes.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Page<'_> {
    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.browser
            .call(Some(&session), method, params, &mut self.events)
    }

    /// Pumps messages until the main frame has navigated and then loaded.
    fn wait_for_load(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let navigated = self.events.iter().position(|e| {
                e["sessionId"] == self.session.as_str()
                    && e["method"] == "Page.frameNavigated"
                    && e["params"]["frame"].get("parentId").is_none()
            });
            let loaded = navigated.is_some_and(|at| {
                self.events[at..].iter().any(|e| {
                    e["sessionId"] == self.session.as_str() && e["method"] == "Page.loadEventFired"
                })
            });
            if loaded {
                return;
            }
            let m = self.browser.next_message(deadline, "the page's load event");
            if m.get("method").is_some() {
                self.events.push(m);
            }
        }
    }

    /// Waits until no request is in flight and nothing has happened for 300 ms
    /// (at most 5 s): late requests and errors get their chance to show.
    fn settle(&mut self) {
        let quiet = Duration::from_millis(300);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = Instant::now();
        while Instant::now() < deadline {
            match self.browser.messages.recv_timeout(quiet) {
                Ok(m) => {
                    if m.get("method").is_some() {
                        self.events.push(m);
                    }
                    last = Instant::now();
                }
                Err(RecvTimeoutError::Timeout) => {
                    if last.elapsed() >= quiet && self.in_flight() == 0 {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => panic!("Chromium closed the pipe"),
            }
        }
    }

    fn mine(&self, method: &str) -> impl Iterator<Item = &Value> {
        let method = method.to_string();
        self.events
            .iter()
            .filter(move |e| {
                e["method"] == method.as_str() && e["sessionId"] == self.session.as_str()
            })
            .map(|e| &e["params"])
    }

    fn in_flight(&self) -> usize {
        let done = |m| self.mine(m).count();
        self.mine("Network.requestWillBeSent")
            .count()
            .saturating_sub(done("Network.loadingFinished") + done("Network.loadingFailed"))
    }

    /// Every request the page made, in order (a redirect is a new request).
    pub fn requests(&self) -> Vec<Request> {
        self.mine("Network.requestWillBeSent")
            .map(|r| {
                let id = &r["requestId"];
                let failed = self
                    .mine("Network.loadingFailed")
                    .find(|f| f["requestId"] == *id)
                    .map(|f| {
                        let reason = f["blockedReason"].as_str().unwrap_or_default();
                        format!("{} {reason}", f["errorText"].as_str().unwrap_or("failed"))
                            .trim()
                            .to_string()
                    });
                let status = self
                    .mine("Network.responseReceived")
                    .find(|f| f["requestId"] == *id)
                    .and_then(|f| f["response"]["status"].as_f64())
                    .map(|s| s as u64)
                    .filter(|s| *s > 0);
                Request {
                    url: r["request"]["url"].as_str().unwrap_or_default().to_string(),
                    kind: r["type"].as_str().unwrap_or_default().to_string(),
                    failed,
                    status,
                }
            })
            .collect()
    }

    /// Console errors (`console.error`, failed asserts), uncaught exceptions and
    /// the browser's own error log entries (a blocked or failed load, a CSP
    /// violation), as text.
    pub fn console_errors(&self) -> Vec<String> {
        let console = self
            .mine("Runtime.consoleAPICalled")
            .filter(|c| c["type"] == "error" || c["type"] == "assert")
            .map(|c| {
                let args: Vec<String> = c["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| match &a["value"] {
                        Value::String(s) => s.clone(),
                        Value::Null => a["description"].as_str().unwrap_or("").to_string(),
                        v => v.to_string(),
                    })
                    .collect();
                format!(
                    "console.{}: {}",
                    c["type"].as_str().unwrap_or(""),
                    args.join(" ")
                )
            });
        let exceptions = self.mine("Runtime.exceptionThrown").map(|e| {
            let d = &e["exceptionDetails"];
            format!(
                "exception: {} {}",
                d["text"].as_str().unwrap_or(""),
                d["exception"]["description"].as_str().unwrap_or("")
            )
        });
        let log = self
            .mine("Log.entryAdded")
            .filter(|l| l["entry"]["level"] == "error")
            .map(|l| {
                format!(
                    "log: {} {}",
                    l["entry"]["text"].as_str().unwrap_or(""),
                    l["entry"]["url"].as_str().unwrap_or("")
                )
            });
        console.chain(exceptions).chain(log).collect()
    }

    /// Waits (at most 30 s) until the JavaScript expression is `true`, then
    /// for the network to settle; `what` names it when it never is.
    pub fn wait_for(&mut self, expression: &str, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        while self.eval(expression) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "{what}: not within 30 s");
            // A real browser's own time: nothing to pause.
            std::thread::sleep(Duration::from_millis(50));
        }
        self.settle();
    }

    /// The value of a JavaScript expression (awaited if it is a promise); an
    /// exception in it fails the test.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// A PNG of the whole page (not only the window) at `path`; its directory is
    /// created. Returns the page's size in CSS pixels.
    pub fn screenshot(&mut self, path: &Path) -> (u64, u64) {
        use base64::Engine as _;
        let metrics = self.call("Page.getLayoutMetrics", json!({}));
        let size = &metrics["cssContentSize"];
        let (w, h) = (
            size["width"].as_f64().unwrap().ceil(),
            size["height"].as_f64().unwrap().ceil(),
        );
        let shot = self.call(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1},
            }),
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
        (w as u64, h as u64)
    }
}
