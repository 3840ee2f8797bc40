//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`), for
//! end-to-end tests of the dashboard. Uses the std-only HTTP client in [`crate::http`].

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::request;

/// The W3C key of an element reference in WebDriver replies.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
}

fn call(method: &str, url: &str, body: Option<Value>) -> Result<Value, String> {
    let bytes = body.map(|b| b.to_string().into_bytes());
    let headers: &[(&str, &str)] = if bytes.is_some() {
        &[("Content-Type", "application/json")]
    } else {
        &[]
    };
    let r = request(method, url, headers, bytes.as_deref()).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("{e}: {}", r.text()))?;
    if r.status >= 400 {
        return Err(format!(
            "webdriver {method} {url}: {} {}",
            r.status, v["value"]
        ));
    }
    Ok(v["value"].clone())
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session.
    pub fn start() -> Result<Self, String> {
        let port = crate::free_port().map_err(|e| e.to_string())?;
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run chromedriver (apt install chromium-driver): {e}"))?;
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Self {
            driver,
            base,
            session: String::new(),
        };
        if !crate::wait_until(Duration::from_secs(20), || {
            call("GET", &format!("{}/status", b.base), None)
                .map(|v| v["ready"] == true)
                .unwrap_or(false)
        }) {
            return Err("chromedriver did not become ready".into());
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900"]
            }
        }}});
        let v = call("POST", &format!("{}/session", b.base), Some(caps))?;
        b.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {v}"))?
            .to_string();
        Ok(b)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    /// Navigates to `url`.
    pub fn goto(&self, url: &str) -> Result<(), String> {
        call("POST", &self.url("/url"), Some(json!({ "url": url }))).map(|_| ())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub fn eval(&self, script: &str, args: Value) -> Result<Value, String> {
        call(
            "POST",
            &self.url("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
    }

    fn element(&self, css: &str) -> Result<String, String> {
        let v = call(
            "POST",
            &self.url("/element"),
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        v[ELEMENT]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no element {css}"))
    }

    /// Clicks the first element matching `css`, as a user would.
    pub fn click(&self, css: &str) -> Result<(), String> {
        let id = self.element(css)?;
        call(
            "POST",
            &self.url(&format!("/element/{id}/click")),
            Some(json!({})),
        )
        .map(|_| ())
    }

    /// Types `text` into the first element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        let id = self.element(css)?;
        call(
            "POST",
            &self.url(&format!("/element/{id}/value")),
            Some(json!({ "text": text })),
        )
        .map(|_| ())
    }

    /// The visible text of the first element matching `css` ("" if there is none).
    pub fn text(&self, css: &str) -> String {
        self.eval(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            json!([css]),
        )
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub fn screenshot(&self, path: &std::path::Path) -> Result<(), String> {
        let v = call("GET", &self.url("/screenshot"), None)?;
        let b64 = v.as_str().ok_or("no screenshot")?;
        std::fs::write(path, base64_decode(b64)?).map_err(|e| e.to_string())
    }

    /// Waits (bounded) until the text of `css` contains `needle`.
    pub fn wait_for_text(&self, css: &str, needle: &str, timeout: Duration) -> Result<(), String> {
        if crate::wait_until(timeout, || self.text(css).contains(needle)) {
            Ok(())
        } else {
            Err(format!(
                "{css} never showed {needle:?}; it shows {:?}",
                self.text(css)
            ))
        }
    }
}

fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err("bad base64".into()),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = call("DELETE", &self.url(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
