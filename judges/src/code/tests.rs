//! Acceptance tests of the code judge. Hostile programs run only inside
//! bubblewrap with rlimits and short timeouts; each test checks that the
//! private dirs are gone afterwards.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::Prompt;

struct Fixture {
    judge: CodeJudge,
    scratch: tempfile::TempDir,
}

fn fixture(extra: Value) -> Fixture {
    let scratch = tempfile::tempdir().unwrap();
    let mut params = json!({"timeout_s": 5.0, "scratch_dir": scratch.path()});
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    let judge = CodeJudge::from_params("code", &params).unwrap();
    Fixture { judge, scratch }
}

impl Fixture {
    /// Judges `(response, metadata)` pairs and checks the scratch dir is
    /// empty afterwards.
    fn run(&self, samples: &[(&str, Value)]) -> Vec<Verdict> {
        let p = Prompt::from("write code");
        let views: Vec<_> = samples
            .iter()
            .map(|(r, m)| SampleView::new("id", &p, r, m))
            .collect();
        let out = self.judge.judge(&views);
        assert_eq!(
            std::fs::read_dir(self.scratch.path()).unwrap().count(),
            0,
            "private dirs left behind"
        );
        out
    }

    fn one(&self, response: &str, meta: Value) -> Verdict {
        self.run(&[(response, meta)]).remove(0)
    }

    fn isolated(&self) -> bool {
        matches!(self.judge.sandbox(), Ok(s) if matches!(s.isolation, Isolation::Bwrap(_)))
    }
}

fn fenced(code: &str) -> String {
    format!("Here you go:\n```python\n{code}\n```\n")
}

fn asserts(lines: &[&str]) -> Value {
    json!({ "unit_tests": lines })
}

const ADD: &str = "def add(a, b):\n    return a + b";

fn humaneval() -> Value {
    json!({
        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n",
        "entry_point": "add",
    })
}

/// Hostile tests need the sandbox; they refuse to run without it.
fn isolated_fixture(extra: Value) -> Fixture {
    let f = fixture(extra);
    assert!(
        f.isolated(),
        "bubblewrap is required for this test: {:?}",
        f.judge.sandbox().map(|s| &s.isolation)
    );
    f
}

#[test]
fn passing_solution_both_metadata_forms() {
    let f = isolated_fixture(json!({}));
    let v = f.run(&[
        (&fenced(ADD), humaneval()),
        (&fenced(ADD), asserts(&["assert add(2, 2) == 4"])),
    ]);
    assert_eq!(v, [Verdict::Pass, Verdict::Pass]);
}

#[test]
fn failing_assert_names_the_assert() {
    let f = isolated_fixture(json!({}));
    let bad = fenced("def add(a, b):\n    return a - b");
    let v = f.one(
        &bad,
        asserts(&["assert add(1, 1) == 0", "assert add(2, 2) == 4"]),
    );
    let Verdict::Fail(r) = v else { panic!("{v:?}") };
    assert!(
        r.contains("assert add(2, 2) == 4") && r.contains("AssertionError"),
        "{r}"
    );
    assert!(f.one(&bad, humaneval()).is_fail());
}

#[test]
fn syntax_error_fails() {
    let f = isolated_fixture(json!({}));
    let v = f.one(&fenced("def add(a, b)\n    return a + b"), humaneval());
    assert!(
        matches!(&v, Verdict::Fail(r) if r.contains("SyntaxError")),
        "{v:?}"
    );
}

#[test]
fn early_exit_is_not_a_pass() {
    let f = isolated_fixture(json!({}));
    for (code, want) in [
        ("import sys\nsys.exit(0)", "SystemExit"),
        ("import os\nos._exit(0)", "exited while loading"),
        ("raise SystemExit", "SystemExit"),
    ] {
        let v = f.one(&fenced(&format!("{ADD}\n{code}")), humaneval());
        assert!(
            matches!(&v, Verdict::Fail(r) if r.contains(want)),
            "{code}: {v:?}"
        );
    }
}

#[test]
fn infinite_loop_is_killed_within_the_timeout() {
    let f = isolated_fixture(json!({"timeout_s": 1.0}));
    assert!(f.one(&fenced(ADD), humaneval()).is_pass());
    let start = Instant::now();
    let v = f.one(&fenced("while True:\n    pass"), asserts(&["assert True"]));
    let elapsed = start.elapsed();
    assert_eq!(v, Verdict::fail("timed out after 1s"));
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn ten_gigabyte_allocation_fails() {
    let f = isolated_fixture(json!({"timeout_s": 3.0}));
    let v = f.one(
        &fenced("x = bytearray(10 * 1024 ** 3)\nx[-1] = 1"),
        asserts(&["assert True"]),
    );
    assert!(
        matches!(&v, Verdict::Fail(r) if r.contains("MemoryError")),
        "{v:?}"
    );
}

/// Processes on the host whose real uid is in `uids`.
fn processes_with_uid_in(uids: std::ops::Range<u32>) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok())
                .is_some_and(|u| uids.contains(&u))
        })
        .count()
}

#[test]
fn fork_bomb_is_contained() {
    let f = isolated_fixture(json!({"timeout_s": 2.0, "max_processes": 16, "parallelism": 2}));
    let bomb =
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass";
    let start = Instant::now();
    let v = f.one(&fenced(bomb), asserts(&["assert True"]));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(!v.is_pass(), "{v:?}");
    // The pid namespace goes with its init; give the kernel a moment.
    std::thread::sleep(Duration::from_millis(200));
    // This judge's uids only: other tests' sandboxes run meanwhile.
    let first = f.judge.first_uid;
    assert!(first >= f.judge.params.uid_base);
    // Two slots, each with a candidate's and a harness's uid.
    assert_eq!(processes_with_uid_in(first..first + 4), 0);
    // The limit holds inside: 16 processes, not thousands.
    let count = "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(5)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)\nassert n < 16, n";
    assert_eq!(
        f.one(&fenced(count), asserts(&["assert True"])),
        Verdict::Pass
    );
}

#[test]
fn huge_output_is_capped() {
    let f = isolated_fixture(json!({"max_output_kb": 64}));
    let start = Instant::now();
    let v = f.one(
        &fenced("while True:\n    print('x' * 1000)"),
        asserts(&["assert True"]),
    );
    assert_eq!(v, Verdict::fail("output exceeded 64 KiB"));
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn network_is_unreachable() {
    let f = isolated_fixture(json!({}));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    for host in ["127.0.0.1", "1.1.1.1"] {
        let code =
            format!("import socket\nsocket.create_connection(('{host}', {port}), timeout=2)");
        let v = f.one(&fenced(&code), asserts(&["assert True"]));
        assert!(
            matches!(&v, Verdict::Fail(r) if r.contains("Error")),
            "{host}: {v:?}"
        );
    }
    assert!(listener.accept().is_err(), "the sandbox reached the host");
}

#[test]
fn host_files_outside_the_sandbox_are_untouched() {
    let f = isolated_fixture(json!({}));
    let victim_dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let victim = victim_dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let path = victim.display();
    let attacks = [
        format!("import os\nos.remove('{path}')"),
        format!("open('{path}', 'w').write('pwned')"),
        format!(
            "import shutil\nshutil.rmtree('{}')",
            victim_dir.path().display()
        ),
        "open('/usr/pwned', 'w').write('x')".to_string(),
        "import os\nos.remove('main.py')".to_string(),
    ];
    for code in &attacks {
        let v = f.one(&fenced(code), asserts(&["assert True"]));
        assert!(!v.is_pass(), "{code}: {v:?}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!Path::new("/usr/pwned").exists());
}

#[test]
fn runs_unprivileged_with_an_empty_environment() {
    let f = isolated_fixture(json!({}));
    let code = "import os\nassert os.getuid() != 0\nassert 'HOME' not in os.environ and os.environ['LANG'] == 'C.UTF-8'\nassert not os.path.exists('/root/.cargo') and not os.path.exists('/work')";
    assert_eq!(
        f.one(&fenced(code), asserts(&["assert True"])),
        Verdict::Pass
    );
}

#[test]
fn malformed_metadata_is_an_error() {
    let f = fixture(json!({}));
    let code = fenced(ADD);
    let cases = [
        (Value::Null, "not an object"),
        (json!({}), "neither"),
        (json!({"unit_tests": []}), "neither"),
        (json!({"test": 5, "entry_point": "add"}), "invalid type"),
        (
            json!({"unit_tests": "assert add(1, 1) == 2"}),
            "invalid type",
        ),
        (
            json!({"test": "def check(c): pass"}),
            "without `entry_point`",
        ),
        (
            json!({"test": "", "entry_point": "add); import os; (x"}),
            "not an identifier",
        ),
    ];
    for (meta, want) in cases {
        let v = f.one(&code, meta.clone());
        assert!(
            matches!(&v, Verdict::Error(r) if r.contains(want)),
            "{meta}: {v:?}"
        );
    }
}

#[test]
fn unfenced_and_completion_responses() {
    let f = isolated_fixture(json!({}));
    assert_eq!(f.one(ADD, humaneval()), Verdict::fail("no code block"));
    let lenient = isolated_fixture(json!({"allow_unfenced": true}));
    assert_eq!(lenient.one(ADD, humaneval()), Verdict::Pass);
    let mut meta = humaneval();
    meta["prompt"] = json!("def add(a, b):\n    \"\"\"Adds.\"\"\"\n");
    assert_eq!(
        f.one("```python\n    return a + b\n```", meta.clone()),
        Verdict::Pass
    );
    assert_eq!(f.one(&fenced(ADD), meta), Verdict::Pass);
}

#[test]
fn batch_runs_in_parallel_and_keeps_order() {
    let f = isolated_fixture(json!({"parallelism": 4, "timeout_s": 2.0}));
    let sleepy = fenced(&format!("import time\ntime.sleep(0.5)\n{ADD}"));
    let wrong = fenced("def add(a, b):\n    return 0");
    let samples: Vec<(&str, Value)> = (0..8)
        .map(|i| {
            (
                if i % 2 == 0 { &sleepy } else { &wrong }.as_str(),
                humaneval(),
            )
        })
        .collect();
    let start = Instant::now();
    let v = f.run(&samples);
    let expected: Vec<bool> = (0..8).map(|i| i % 2 == 0).collect();
    assert_eq!(v.iter().map(Verdict::is_pass).collect::<Vec<_>>(), expected);
    // Four sleeps of 0.5 s, one after another, would take 2 s.
    assert!(
        start.elapsed() < Duration::from_millis(1900),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn without_bubblewrap_every_sample_is_an_error() {
    let f = fixture(json!({"bwrap": "/nonexistent/bwrap"}));
    let v = f.one(&fenced(ADD), humaneval());
    assert!(
        matches!(&v, Verdict::Error(r) if r.contains("bubblewrap (`/nonexistent/bwrap`) not found")
            && r.contains("allow_unisolated")),
        "{v:?}"
    );
}

#[test]
fn allow_unisolated_runs_on_the_host_and_says_so() {
    let f = fixture(json!({"bwrap": "/nonexistent/bwrap", "allow_unisolated": true}));
    assert!(!f.isolated());
    assert_eq!(f.one(&fenced(ADD), humaneval()), Verdict::Pass);
    let v = f.one(&fenced("def add(a, b):\n    return 0"), humaneval());
    assert!(
        matches!(&v, Verdict::Fail(r) if r.contains("not isolated") && r.contains("AssertionError")),
        "{v:?}"
    );
}

#[test]
fn bad_interpreter_and_params() {
    let f = fixture(json!({"interpreter": "/nonexistent/python"}));
    assert!(
        matches!(f.one(&fenced(ADD), humaneval()), Verdict::Error(r) if r.contains("cannot run"))
    );
    for bad in [
        json!({"timeout": 1}),
        json!({"timeout_s": 0.0}),
        json!({"parallelism": 0}),
    ] {
        assert!(CodeJudge::from_params("code", &bad).is_err(), "{bad}");
    }
}

#[test]
fn site_builtins_and_packages_without_pth_files() {
    let code = "import sys\nassert any(p.endswith(('site-packages', 'dist-packages')) for p in sys.path), sys.path\nassert callable(exit) and callable(quit)";
    for pth in [false, true] {
        let f = isolated_fixture(json!({"process_pth_files": pth}));
        assert_eq!(
            f.one(&fenced(code), asserts(&["assert True"])),
            Verdict::Pass
        );
        let no_site = f.one(
            &fenced("import sys\nassert sys.flags.no_site"),
            asserts(&["assert True"]),
        );
        assert_eq!(no_site.is_pass(), !pth, "{no_site:?}");
    }
}

#[test]
fn bwrap_binds_no_host_path_writable() {
    let f = isolated_fixture(json!({}));
    let sandbox = f.judge.sandbox().unwrap();
    for (as_root, [candidate, harness]) in
        [true, false].map(|r| (r, sandbox.bwrap_args_for_tests(Path::new("/private"), r)))
    {
        let binds = |args: &[std::ffi::OsString]| -> Vec<String> {
            args.windows(3)
                .filter(|w| w[0] == "--ro-bind" && w[1].to_string_lossy().starts_with("/private"))
                .map(|w| format!("{} {}", w[1].to_string_lossy(), w[2].to_string_lossy()))
                .collect()
        };
        // Each process sees its own file only: the tests never enter the
        // candidate's sandbox.
        assert_eq!(
            binds(&candidate),
            ["/private/candidate/main.py /sandbox/main.py"]
        );
        assert_eq!(
            binds(&harness),
            ["/private/harness/tests.py /sandbox/tests.py"]
        );
        let args: Vec<String> = candidate
            .iter()
            .map(|a| a.to_string_lossy().into())
            .collect();
        eprintln!("bwrap {} <python> ...", args.join(" "));
        for flag in [
            "--unshare-net",
            "--unshare-pid",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
        ] {
            assert!(args.iter().any(|a| a == flag), "{flag} missing");
        }
        for flag in ["--bind", "--bind-try", "--dev-bind", "--share-net"] {
            assert!(!args.iter().any(|a| a == flag), "{flag} present");
        }
        assert_eq!(args.iter().any(|a| a == "--unshare-user"), !as_root);
        assert_eq!(args.last().map(String::as_str), Some("--"));
    }
}
