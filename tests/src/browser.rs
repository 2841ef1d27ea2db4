//! A real headless Chromium for the tests that look at pages: a screenshot of a local file,
//! with Chromium's network log, so a test can check that the page rendered and that it fetched
//! nothing.
//!
//! The browser is `$PARLEY_CHROMIUM` or `chromium` on the `PATH` (Debian's package, which
//! `scripts/test` installs). When neither exists the test fails with what to install; it never
//! skips.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Chromium binary, or a panic saying how to get one.
pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("PARLEY_CHROMIUM") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => p,
        None => panic!(
            "this test needs a headless Chromium and none was found: run the README's test \
             command `scripts/test` (it installs Debian's chromium), or `apt-get install \
             chromium`, or set PARLEY_CHROMIUM to a Chromium binary"
        ),
    }
}

/// Hosts Chromium itself calls at start-up even with background networking disabled (clock,
/// component updates, accounts), whatever page it loads. A request to any other host, or to
/// any URL but `file:` and `data:`, came from the page.
const BROWSER_OWN_HOSTS: &[&str] = &[
    "clients2.google.com",
    "update.googleapis.com",
    "accounts.google.com",
    "clientservices.googleapis.com",
    "redirector.gvt1.com",
    "safebrowsingohttpgateway.googleapis.com",
];

/// Whether `url` is one of Chromium's own requests rather than the page's.
pub fn is_browser_own(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or("");
    let host = rest.split(['/', ':', '?']).next().unwrap_or("");
    BROWSER_OWN_HOSTS.contains(&host)
}

/// What loading one page showed.
pub struct Loaded {
    /// The screenshot's pixels as RGBA rows.
    pub rgba: Vec<u8>,
    /// Its width and height.
    pub size: (u32, u32),
    /// Every URL Chromium's network log mentions, in order.
    pub urls: Vec<String>,
}

impl Loaded {
    /// The URLs the page itself asked for, beyond its own file and `data:` URLs.
    pub fn page_fetches(&self) -> Vec<&str> {
        self.urls
            .iter()
            .map(String::as_str)
            .filter(|u| !u.starts_with("file://") && !u.starts_with("data:") && !is_browser_own(u))
            .fold(Vec::new(), |mut seen, u| {
                // The log names a request once per event: keep each URL once.
                if !seen.contains(&u) {
                    seen.push(u);
                }
                seen
            })
    }
}

impl Loaded {
    /// The fraction of pixels that are not (near) white.
    pub fn inked(&self) -> f64 {
        let px = self.rgba.chunks_exact(4);
        let total = px.len().max(1);
        let inked = px
            .filter(|p| p[0] < 235 || p[1] < 235 || p[2] < 235)
            .count();
        inked as f64 / total as f64
    }
}

/// Loads `page` (a local HTML file) in headless Chromium at 1000 × `height` pixels, in a fresh
/// profile under `work`, and returns its screenshot and the URLs of its network log.
pub fn load(page: &Path, work: &Path, height: u32) -> Loaded {
    let profile = work.join("profile");
    let shot = work.join("shot.png");
    let netlog = work.join("netlog.json");
    std::fs::create_dir_all(&profile).unwrap_or_else(|e| panic!("create {profile:?}: {e}"));
    let page = page
        .canonicalize()
        .unwrap_or_else(|e| panic!("page {page:?}: {e}"));
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size=1000,{height}"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", chromium()));
    assert!(
        out.status.success() && shot.is_file(),
        "chromium failed on {page:?} ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&shot).unwrap_or_else(|e| panic!("{shot:?}: {e}")),
    ));
    let mut reader = decoder
        .read_info()
        .unwrap_or_else(|e| panic!("{shot:?}: {e}"));
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("{shot:?}: {e}"));
    buf.truncate(info.buffer_size());
    let rgba = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        other => panic!("unexpected screenshot colour type {other:?}"),
    };
    let log = std::fs::read_to_string(&netlog).unwrap_or_default();
    Loaded {
        rgba,
        size: (info.width, info.height),
        urls: urls_in(&log),
    }
}

/// Every `"url":"…"` value of a Chromium network log.
fn urls_in(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = log;
    while let Some(i) = rest.find("\"url\":\"") {
        rest = &rest[i + 7..];
        let end = rest.find('"').unwrap_or(rest.len());
        out.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    out
}
