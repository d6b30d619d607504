//! The headless-browser harness (tests/common/browser.rs) itself: it sees what a
//! page does, on `file://` and `http://`.

use crate::common::browser::Browser;

/// A failed request, console errors and a late exception on a `file://` page; a
/// JavaScript expression's value; an `http://` page from a server on loopback, and
/// its screenshot.
#[test]
fn the_browser_harness_sees_requests_errors_and_exceptions() {
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page_path = dir.path().join("page.html");
    std::fs::write(
        &page_path,
        r#"<!DOCTYPE html><html><head><title>t</title><link rel="icon" href="data:,"></head>
<body><img src="missing.png">
<script>console.error("boom", 42); setTimeout(() => { throw new Error("late") }, 50);</script>
</body></html>"#,
    )
    .unwrap();
    let url = format!("file://{}", page_path.display());
    let mut page = browser.open(&url);
    let requests = page.requests();
    let urls: Vec<&str> = requests.iter().map(|r| r.url.as_str()).collect();
    let missing = format!("file://{}", dir.path().join("missing.png").display());
    assert_eq!(urls, [url.as_str(), missing.as_str()]);
    assert_eq!(requests[0].failed, None);
    assert!(requests[1].failed.is_some(), "{requests:?}");
    let errors = page.console_errors().join("\n");
    assert!(errors.contains("console.error: boom 42"), "{errors}");
    assert!(errors.contains("late"), "{errors}");
    assert_eq!(page.eval("document.title + (1 + 1)"), "t2");
    drop(page);

    // http://: a one-page server on loopback, for a bounded number of requests.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        for stream in listener.incoming().take(4).flatten() {
            let mut reader = std::io::BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = "<!DOCTYPE html><title>served</title><p>ok";
            let _ = write!(
                reader.get_mut(),
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let url = format!("http://127.0.0.1:{port}/");
    let mut page = browser.open(&url);
    assert_eq!(page.eval("document.title"), "served");
    let requests = page.requests();
    assert_eq!(requests[0].url, url);
    assert_eq!(requests[0].failed, None);
    assert_eq!(page.console_errors(), Vec::<String>::new());
    let shot = crate::common::screenshots_dir().join("browser-harness.png");
    let (width, height) = page.screenshot(&shot);
    assert_eq!(width, u64::from(crate::common::browser::WINDOW.0));
    assert!(height > 0);
    assert_eq!(&std::fs::read(&shot).unwrap()[1..4], b"PNG");
}
