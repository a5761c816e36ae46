//! `cgpo report` as a person sees it: a short `cgpo train` run, its report
//! rendered by headless Chromium (Debian's `chromium`, which `scripts/test`
//! installs), a screenshot taken; the page must load without console
//! messages (it logs none of its own, so any is an error) and show every
//! task's charts.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cgpo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cgpo"))
}

/// The Chromium binary; the test fails without one, as the README's test
/// command installs it.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(dir) = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .find(|d| d.join(name).is_file())
        {
            return dir.join(name);
        }
    }
    panic!("Chromium is not installed: run scripts/test (it installs Debian's `chromium`)");
}

/// Runs headless Chromium on `page` with `args`; returns its stdout and
/// the console messages it logged.
fn browse(page: &Path, args: &[&str]) -> (String, Vec<String>) {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

/// Share of pixels of the RGB(A) screenshot that are not near-white, and
/// of those that are saturated (chart lines, not text or grid).
fn ink(png_path: &Path) -> (u32, u32, f64, f64) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixels = buf[..info.buffer_size()].chunks(channels);
    let (mut total, mut inked, mut colored) = (0usize, 0usize, 0usize);
    for p in pixels {
        total += 1;
        let (r, g, b) = (i32::from(p[0]), i32::from(p[1]), i32::from(p[2]));
        if r.min(g).min(b) < 230 {
            inked += 1;
        }
        if r.max(g).max(b) - r.min(g).min(b) > 80 {
            colored += 1;
        }
    }
    (
        info.width,
        info.height,
        inked as f64 / total as f64,
        colored as f64 / total as f64,
    )
}

#[test]
fn the_report_of_a_short_run_renders_every_tasks_charts_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/configs/tiny_demo.json"
    );
    let run = cgpo()
        .args(["train", "--config", config, "--steps", "4", "--output-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let page = dir.path().join("report.html");
    let report = cgpo().arg("report").arg(dir.path()).output().unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(page.is_file());

    let (dom, console) = browse(&page, &["--dump-dom"]);
    assert!(console.is_empty(), "console messages: {console:#?}");
    let tasks = ["math", "instruction", "chat", "safety"];
    assert!(
        dom.contains(&format!("data-tasks-rendered=\"{n}/{n}\"", n = tasks.len())),
        "not every task's charts rendered: {}",
        dom.lines()
            .find(|l| l.contains("<body"))
            .unwrap_or("no body")
    );
    for task in tasks {
        let at = dom
            .find(&format!("id=\"task-{task}\""))
            .unwrap_or_else(|| panic!("no section for {task}"));
        let tag_end = at + dom[at..].find('>').unwrap();
        assert!(
            dom[at..tag_end].contains("data-rendered=\"yes\""),
            "{task}: {}",
            &dom[at..tag_end]
        );
    }

    let shot = dir.path().join("report.png");
    let (_, console) = browse(
        &page,
        &[
            "--window-size=1400,1600",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    assert!(console.is_empty(), "console messages: {console:#?}");
    let (w, h, inked, colored) = ink(&shot);
    assert_eq!((w, h), (1400, 1600));
    // Text, axes and grid lines, and coloured curves: not a blank page.
    assert!(inked > 0.02, "only {inked:.4} of the pixels are drawn");
    assert!(
        colored > 0.001,
        "only {colored:.5} of the pixels are coloured"
    );
}

#[test]
fn the_console_check_catches_errors() {
    // The check above must be able to fail: a page that errors is caught.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!doctype html><html><body><script>console.error('boom'); missingFunction();</script></body></html>",
    )
    .unwrap();
    let (_, console) = browse(&page, &["--dump-dom"]);
    assert!(console.iter().any(|l| l.contains("boom")), "{console:?}");
    assert!(
        console.iter().any(|l| l.contains("missingFunction")),
        "{console:?}"
    );
}
