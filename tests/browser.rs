//! The broker's page in a real browser: headless Chromium loads the page
//! of a real `broker --mode lb --http` with two named workers, runs its
//! script, and the workers must be in the DOM the script built (the HTML
//! the server sends has no worker in it).
//!
//! Chromium is Debian's `chromium` package (`apt-get install chromium`;
//! `.ci/run` installs it); `$CHROMIUM` names another binary. Without one
//! the test says `skipped: ...`, unless REQUIRE_BROWSER=1 (as in `.ci/run`)
//! makes it fail. The browser runs in a process group of its own, with a
//! fresh profile directory: both are removed when the test ends, pass or
//! fail.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// How long Chromium may take to load the page and dump it.
const BROWSER_WITHIN: Duration = Duration::from_secs(60);

/// The Chromium binary: `$CHROMIUM`, else `chromium` or `chromium-browser`
/// on the PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A headless Chromium and its profile directory; on drop, every process
/// of its group is killed and the directory removed.
struct Browser {
    child: std::process::Child,
    profile: PathBuf,
}

impl Browser {
    /// Loads `url`, lets its scripts run for `budget` of virtual time
    /// (Chromium's clock runs ahead while the page waits for nothing), and
    /// returns the DOM as it then is.
    fn dump_dom(binary: &Path, url: &str, budget: Duration) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let profile = std::env::temp_dir().join(format!(
            "zmq-reqrep-chromium-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox", // the tests run as root in CI
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                &format!("--user-data-dir={}", profile.display()),
                &format!("--virtual-time-budget={}", budget.as_millis()),
                "--dump-dom",
                url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        let mut browser = match child {
            Ok(child) => Browser { child, profile },
            Err(error) => {
                let _ = std::fs::remove_dir_all(&profile);
                panic!("cannot start {}: {error}", binary.display());
            }
        };
        let mut stdout = browser.child.stdout.take().unwrap();
        let reader = thread::spawn(move || {
            let mut dom = String::new();
            let _ = stdout.read_to_string(&mut dom);
            dom
        });
        let deadline = Instant::now() + BROWSER_WITHIN;
        loop {
            if browser.child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromium still running after {BROWSER_WITHIN:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        // `browser` is dropped here: the rest of its group goes too.
        drop(browser);
        reader.join().unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test created (its
        // id is the browser's pid, which is not reaped before this).
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[test]
fn the_page_shows_the_workers_in_a_real_browser() {
    let Some(binary) = chromium() else {
        if std::env::var("REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("REQUIRE_BROWSER=1 but no chromium on the PATH (apt-get install chromium)");
        }
        skipped("no chromium on the PATH (apt-get install chromium, or set CHROMIUM)");
        return;
    };
    let (broker, frontend, backend) = start_broker("lb", &["--http", "127.0.0.1:0"]);
    let page = wait_page(&broker);
    let _workers: Vec<Proc> = ["alpha-worker", "beta-worker"]
        .iter()
        .map(|name| {
            Proc::start(
                WORKER,
                &["--connect", &backend, "--mode", "lb", "--name", name],
            )
        })
        .collect();
    broker.wait_log_count(" ready", 2, SOON);
    let mut client = Proc::start(
        BROKER_CLIENT,
        &["--connect", &frontend, "--count", "4", "--interval-ms", "0"],
    );
    client.expect_exit(0, SOON);

    let url = format!("http://{page}/");
    let dom = Browser::dump_dom(&binary, &url, Duration::from_secs(3));
    for name in ["alpha-worker", "beta-worker"] {
        assert!(
            dom.contains(&format!("data-worker=\"{name}\"")),
            "no row for {name} in the rendered page:\n{dom}"
        );
    }
    assert!(dom.contains("2 known · 2 idle"), "{dom}");
    assert!(
        dom.contains("<body class=\"live\">"),
        "the page says it is live:\n{dom}"
    );
    assert!(dom.contains("load balancing (--mode lb)"), "{dom}");
}
