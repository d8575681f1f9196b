//! A real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`, installed by `tests/run`) with fantoccini. The driver
//! runs on a loopback port; dropping [`Browser`] ends the session and stops
//! the driver by its PID.

use crate::servers::{free_port, temp_dir};
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub struct Browser {
    pub rt: tokio::runtime::Runtime,
    pub client: Option<Client>,
    driver: Child,
    /// Where [`Browser::screenshot`] writes: `target/screenshots/{test}/`.
    shots: PathBuf,
}

impl Browser {
    pub fn start(test: &str) -> Browser {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let port = free_port();
        let dir = temp_dir("chromium");
        let mut driver = std::process::Command::new("/usr/bin/chromedriver");
        driver
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("driver.log")).unwrap())
            .stderr(Stdio::null());
        let driver = driver
            .spawn()
            .expect("chromedriver is installed (tests/run installs chromium-driver)");
        let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--window-size=1000,900",
                    format!("--user-data-dir={}", dir.join("profile").display()),
                ]
            }
        }))
        .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let client = rt.block_on(async {
            loop {
                let mut b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
                b.capabilities(caps.clone());
                // An attempt that hangs is given up and made again.
                match tokio::time::timeout(Duration::from_secs(15), b.connect(&url)).await {
                    Ok(Ok(c)) => break c,
                    why if start.elapsed() < Duration::from_secs(60) => {
                        eprintln!("browser: no session yet ({:?}); again", why.err());
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Ok(Err(e)) => panic!("chromium did not start through chromedriver: {e}"),
                    Err(_) => panic!("chromedriver did not answer in 60 s"),
                }
            }
        });
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/screenshots")
            .join(test);
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            rt,
            client: Some(client),
            driver,
            shots,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    pub fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).unwrap();
    }

    /// The page's source as the browser has it (the DOM, serialised).
    pub fn source(&self) -> String {
        self.rt.block_on(self.c().source()).unwrap()
    }

    /// Runs a read of the page again when the element it found was replaced
    /// before it was read (the dashboard swaps its content on live updates).
    fn fresh<T>(
        &self,
        read: impl Fn() -> Result<T, fantoccini::error::CmdError>,
    ) -> Result<T, fantoccini::error::CmdError> {
        let mut tries = 0;
        loop {
            match read() {
                Err(e) if tries < 5 && e.to_string().contains("stale element") => tries += 1,
                other => return other,
            }
        }
    }

    /// The visible text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        self.fresh(|| {
            self.rt
                .block_on(async { self.c().find(Locator::Css(css)).await?.text().await })
        })
        .unwrap_or_else(|e| panic!("no {css} on the page: {e}\n{}", self.source()))
    }

    /// The visible texts of every element matching `css`.
    pub fn texts(&self, css: &str) -> Vec<String> {
        self.fresh(|| {
            self.rt.block_on(async {
                let mut out = Vec::new();
                for e in self.c().find_all(Locator::Css(css)).await? {
                    out.push(e.text().await?);
                }
                Ok::<_, fantoccini::error::CmdError>(out)
            })
        })
        .unwrap()
    }

    /// Types into the field labelled by `id` (or chooses a file, for a file input).
    pub fn fill(&self, id: &str, value: &str) {
        self.rt
            .block_on(async { self.c().find(Locator::Id(id)).await?.send_keys(value).await })
            .unwrap_or_else(|e| panic!("cannot fill #{id}: {e}"));
    }

    /// Chooses the option with this visible text in the `<select>` of `id`.
    pub fn select(&self, id: &str, label: &str) {
        self.rt
            .block_on(async { self.c().find(Locator::Id(id)).await?.select_by_label(label).await })
            .unwrap_or_else(|e| panic!("cannot choose {label:?} in #{id}: {e}"));
    }

    /// The address of the page shown.
    pub fn url(&self) -> String {
        self.rt.block_on(self.c().current_url()).unwrap().to_string()
    }

    /// Clicks the first element matching `css` and waits for the next page.
    pub fn click(&self, css: &str) {
        self.rt
            .block_on(async { self.c().find(Locator::Css(css)).await?.click().await })
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    /// Clicks what submits a form or follows a link, then waits for the next
    /// page to hold `css`. The old page is marked first, so an element the
    /// old page also had (a notice, a heading) cannot pass for the new one.
    pub fn click_to(&self, click: &str, css: &str) {
        self.eval("window.__postdesk_old_page = true; return null");
        self.click(click);
        let loaded = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    let fresh = self
                        .c()
                        .execute(
                            "return window.__postdesk_old_page !== true && document.readyState === 'complete'",
                            Vec::new(),
                        )
                        .await;
                    if matches!(fresh, Ok(serde_json::Value::Bool(true))) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
        });
        assert!(loaded.is_ok(), "no new page after clicking {click}:\n{}", self.source());
        self.wait_for(css);
    }

    /// Waits until an element matching `css` is on the page.
    pub fn wait_for(&self, css: &str) {
        let found = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), self.c().wait().for_element(Locator::Css(css))).await
        });
        assert!(matches!(found, Ok(Ok(_))), "{css} did not appear:\n{}", self.source());
    }

    /// The result of a script run in the page.
    pub fn eval(&self, script: &str) -> serde_json::Value {
        self.rt.block_on(self.c().execute(script, Vec::new())).unwrap()
    }

    /// Writes a PNG of the window to `target/screenshots/{test}/{name}.png`.
    pub fn screenshot(&self, name: &str) {
        let png = self.rt.block_on(self.c().screenshot()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), c.close()).await });
        }
        // The driver and any browser it left: the whole process group, by its PID.
        // The driver by its PID: SIGTERM lets it end a browser it still runs,
        // SIGKILL after 5 s. (Never the process group: Chromium's processes
        // leave it, and a group signal reached far beyond the test here.)
        let pid = self.driver.id();
        let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        let start = Instant::now();
        while matches!(self.driver.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
