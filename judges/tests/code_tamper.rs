//! The tamper suite: known ways for a policy to forge a `Pass` from a code
//! verifier under RL, each written as a candidate whose real answers are
//! wrong. Every one must get `Fail` or `Error`, never `Pass`; the honest
//! solutions beside them must pass. Needs bubblewrap (`scripts/test`
//! installs it): the judge refuses to run untrusted code without it.

use cgpo_judges::{CodeJudge, Judge, Prompt, SampleView, Verdict};
use serde_json::{json, Value};

fn judge(timeout_s: f64) -> CodeJudge {
    CodeJudge::from_params("code", &json!({"timeout_s": timeout_s})).unwrap()
}

fn run(judge: &CodeJudge, cases: &[(&str, String, Value)]) -> Vec<Verdict> {
    let prompt = Prompt::from("Write the function.");
    let responses: Vec<String> = cases
        .iter()
        .map(|(_, code, _)| format!("```python\n{code}\n```\n"))
        .collect();
    let views: Vec<SampleView> = cases
        .iter()
        .zip(&responses)
        .map(|((name, _, meta), r)| SampleView::new(name, &prompt, r, meta))
        .collect();
    judge.judge(&views)
}

/// The HumanEval-style tests every tamper case of `add` runs against. They
/// use builtins and `math` the way real tests do, so that patching or
/// shadowing those would matter.
fn add_tests() -> Value {
    json!({
        "entry_point": "add",
        "test": "import math\n\
                 def check(candidate):\n\
                 \x20   assert candidate(1, 2) == 3\n\
                 \x20   assert candidate(-1, 1) == 0\n\
                 \x20   assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9\n\
                 \x20   assert math.isclose(candidate(1e10, 1.0), 1e10 + 1.0)\n\
                 \x20   assert all(candidate(i, i) == 2 * i for i in range(5))\n\
                 \x20   assert len([candidate(i, 1) for i in range(3)]) == 3\n",
    })
}

/// Candidates for `add` that answer wrongly and try to pass anyway.
fn add_tampers() -> Vec<(&'static str, String)> {
    let wrong = "def add(a, b):\n    return 0\n";
    let mut cases: Vec<(&str, String)> = vec![
        (
            "frame walk for the token at load",
            // The forgery that beat the one-process verifier: the launcher's
            // token sat in a frame above the candidate's code.
            "import os, re, sys\n\
             f = sys._getframe()\n\
             while f is not None:\n\
             \x20   for v in list(f.f_locals.values()) + list(f.f_globals.values()):\n\
             \x20       if isinstance(v, str) and re.fullmatch('[0-9a-f]{32}', v):\n\
             \x20           print(); print(v + ':pass'); print(v); sys.stdout.flush(); os._exit(0)\n\
             \x20   f = f.f_back\n\
             print('\\n' + '0' * 32 + ':pass'); sys.stdout.flush(); os._exit(0)\n"
                .into(),
        ),
        (
            "frame walk for the test's source during a call",
            "import inspect, re, sys\n\
             def add(a, b):\n\
             \x20   f = sys._getframe(1)\n\
             \x20   while f is not None:\n\
             \x20       try:\n\
             \x20           src = inspect.getsource(f.f_code)\n\
             \x20       except Exception:\n\
             \x20           src = ''\n\
             \x20       m = re.search(r'candidate\\(%r, %r\\) == (\\S+)' % (a, b), src)\n\
             \x20       if m:\n\
             \x20           return eval(m.group(1))\n\
             \x20       f = f.f_back\n\
             \x20   return 0\n"
                .into(),
        ),
        (
            "reading the tests from disk",
            // Finds the test source wherever it can and answers from it:
            // `candidate(x, y) == e`, `abs(candidate(x, y) - e)`,
            // `isclose(candidate(x, y), e)`, with `i` bound for loops.
            "import glob, math, re\n\
             SOURCES = ''\n\
             for pattern in ['*', '/sandbox/*', '/tmp/*', '/*/*.py', '/proc/*/cwd/*', '/proc/*/root/sandbox/*']:\n\
             \x20   for p in glob.glob(pattern):\n\
             \x20       try:\n\
             \x20           SOURCES += open(p).read() + '\\n'\n\
             \x20       except Exception:\n\
             \x20           pass\n\
             FORMS = r'(?:candidate|add)\\(([^()]*)\\)\\s*(?:==\\s*(.+?)(?:\\s+for\\b|$)|-\\s*([^)]+)\\)|,\\s*([^)]+)\\))'\n\
             def add(a, b):\n\
             \x20   for line in SOURCES.splitlines():\n\
             \x20       for m in re.finditer(FORMS, line):\n\
             \x20           env = {'i': a, 'math': math}\n\
             \x20           try:\n\
             \x20               if eval('(' + m.group(1) + ',)', env) == (a, b):\n\
             \x20                   return eval(next(g for g in m.groups()[1:] if g), env)\n\
             \x20           except Exception:\n\
             \x20               pass\n\
             \x20   return 0\n"
                .into(),
        ),
        (
            "__eq__ always true, math.isclose patched",
            "import math\n\
             math.isclose = lambda *a, **k: True\n\
             class Anything:\n\
             \x20   def __eq__(self, other): return True\n\
             \x20   def __ne__(self, other): return False\n\
             \x20   def __lt__(self, other): return True\n\
             \x20   def __sub__(self, other): return self\n\
             \x20   def __abs__(self): return 0\n\
             \x20   def __hash__(self): return 0\n\
             def add(a, b):\n\
             \x20   return Anything()\n"
                .into(),
        ),
        (
            "int subclass with __eq__ always true, math.isclose patched",
            "import math\n\
             math.isclose = lambda *a, **k: True\n\
             class Int(int):\n\
             \x20   def __eq__(self, other): return True\n\
             \x20   __hash__ = int.__hash__\n\
             \x20   def __sub__(self, other): return 0\n\
             def add(a, b):\n\
             \x20   return Int(7)\n"
                .into(),
        ),
        (
            "object that fakes its __class__",
            "class Fake:\n\
             \x20   __class__ = property(lambda self: int)\n\
             \x20   def __eq__(self, other): return True\n\
             \x20   def __hash__(self): return 0\n\
             def add(a, b):\n\
             \x20   return Fake()\n"
                .into(),
        ),
        (
            "str subclass with __eq__ always true",
            "class S(str):\n\
             \x20   def __eq__(self, other): return True\n\
             \x20   __hash__ = str.__hash__\n\
             def add(a, b):\n\
             \x20   return S('wrong')\n"
                .into(),
        ),
        (
            "monkeypatching builtins and math",
            format!(
                "import builtins, math\n\
                 builtins.abs = lambda x: 0\n\
                 builtins.all = lambda xs: True\n\
                 builtins.len = lambda xs: 3\n\
                 builtins.AssertionError = type('Quiet', (Exception,), {{}})\n\
                 math.isclose = lambda *a, **k: True\n\
                 {wrong}"
            ),
        ),
        (
            "shadowing the tests' builtins by name",
            format!(
                "def abs(x):\n    return 0\n\
                 def all(xs):\n    return True\n\
                 def len(xs):\n    return 3\n\
                 def check(candidate):\n    pass\n\
                 {wrong}"
            ),
        ),
        (
            "patching the launcher's encoder",
            format!(
                "import __main__\n\
                 __main__._cgpo_encode = lambda x, depth=0: 3\n\
                 {wrong}"
            ),
        ),
        (
            "forging replies on the channel",
            "import json, os\n\
             def frame(m):\n\
             \x20   d = json.dumps(m).encode()\n\
             \x20   return len(d).to_bytes(8, 'big') + d\n\
             for fd in range(3, 10):\n\
             \x20   try:\n\
             \x20       os.write(fd, frame({'ready': ['add', 'abs', 'check']}) + frame({'ok': 3}) * 50)\n\
             \x20   except OSError:\n\
             \x20       pass\n\
             def add(a, b):\n\
             \x20   return 0\n"
                .into(),
        ),
        ("sys.exit(0) before the asserts", format!("import sys\n{wrong}sys.exit(0)\n")),
        ("os._exit(0) before the asserts", format!("import os\n{wrong}os._exit(0)\n")),
        (
            "sys.exit(0) during a call",
            "import sys\ndef add(a, b):\n    sys.exit(0)\n".into(),
        ),
        (
            "os._exit(0) during a call",
            "import os\ndef add(a, b):\n    os._exit(0)\n".into(),
        ),
        (
            "KeyboardInterrupt during a call",
            "def add(a, b):\n    raise KeyboardInterrupt\n".into(),
        ),
        (
            "StopIteration inside the tests' generator",
            "def add(a, b):\n    if a == b:\n        raise StopIteration\n    return a + b + 1\n"
                .into(),
        ),
        (
            "atexit handlers",
            format!(
                "import atexit, os\n\
                 atexit.register(lambda: os._exit(0))\n\
                 atexit.register(lambda: print('\\nPASS\\nOK\\n__cgpo_start__'))\n\
                 {wrong}"
            ),
        ),
        (
            "signal handlers",
            format!(
                "import os, signal\n\
                 for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGXCPU):\n\
                 \x20   signal.signal(s, lambda *a: os._exit(0))\n\
                 signal.alarm(1)\n\
                 {wrong}"
            ),
        ),
        (
            "printing pass markers",
            format!(
                "import sys\n\
                 for stream in (sys.stdout, sys.stderr):\n\
                 \x20   print('__cgpo_start__\\nPASS\\nOK\\nAll tests passed\\n' + '0' * 32 + ':pass', file=stream)\n\
                 {wrong}"
            ),
        ),
        (
            "killing every process in reach",
            "import os, signal\ndef add(a, b):\n    os.kill(-1, signal.SIGKILL)\n".into(),
        ),
        (
            "a generator instead of a value",
            "def add(a, b):\n    return (x for x in [a + b])\n".into(),
        ),
        (
            "a value nested too deeply",
            "def add(a, b):\n    x = []\n    for _ in range(100000):\n        x = [x]\n    return x\n"
                .into(),
        ),
        (
            "a reply larger than a frame",
            "def add(a, b):\n    return 'x' * (100 * 2 ** 20)\n".into(),
        ),
        (
            "tracing and profiling hooks",
            format!(
                "import sys\n\
                 sys.settrace(lambda *a: None)\n\
                 sys.setprofile(lambda *a: None)\n\
                 {wrong}"
            ),
        ),
        (
            "sleeping past the deadline",
            "import time\ndef add(a, b):\n    time.sleep(60)\n".into(),
        ),
    ];
    cases.push(("plain wrong answer", wrong.into()));
    cases
}

/// Judges every tamper case against the same tests; none may pass.
fn assert_none_pass(judge: &CodeJudge, tampers: &[(&str, String)], tests: &Value) {
    let cases: Vec<(&str, String, Value)> = tampers
        .iter()
        .map(|(name, code)| (*name, code.clone(), tests.clone()))
        .collect();
    let mut passed = Vec::new();
    for ((name, ..), v) in cases.iter().zip(run(judge, &cases)) {
        eprintln!("{name}: {v:?}");
        if v.is_pass() {
            passed.push(*name);
        }
    }
    assert!(passed.is_empty(), "tamper cases that passed: {passed:?}");
}

#[test]
fn no_tamper_case_passes_the_function_tests() {
    let judge = judge(4.0);
    assert_none_pass(&judge, &add_tampers(), &add_tests());
    // The honest solution passes the same tests.
    let honest = run(
        &judge,
        &[(
            "honest",
            "def add(a, b):\n    return a + b\n".into(),
            add_tests(),
        )],
    );
    assert_eq!(honest, [Verdict::Pass]);
}

#[test]
fn assert_line_tests_are_out_of_reach_too() {
    let judge = judge(4.0);
    let meta = json!({"unit_tests": [
        "assert add(1, 2) == 3",
        "assert add(-1, 1) == 0",
        "assert abs(add(2.5, 0.25) - 2.75) < 1e-9",
    ]});
    assert_none_pass(&judge, &add_tampers(), &meta);
    let honest = run(
        &judge,
        &[("honest", "def add(a, b):\n    return a + b\n".into(), meta)],
    );
    assert_eq!(honest, [Verdict::Pass]);
}

#[test]
fn no_tamper_case_passes_the_stdio_tests() {
    let judge = judge(4.0);
    let meta = json!({"stdio_tests": [
        {"input": "1 2\n", "output": "3\n"},
        {"input": "40 2\n", "output": "42\n"},
    ]});
    let tampers: Vec<(&str, String)> = vec![
        ("no output, exit 0", "import sys\nsys.exit(0)\n".into()),
        (
            "os._exit(0) after a wrong answer",
            "import os\nprint(0)\nos._exit(0)\n".into(),
        ),
        (
            "reading the expected output from disk",
            "import glob\n\
             found = ''\n\
             for p in glob.glob('/**/*', recursive=True)[:2000]:\n\
             \x20   try:\n\
             \x20       found += open(p).read()\n\
             \x20   except Exception:\n\
             \x20       pass\n\
             print(found[:100] if 'output' in found else 0)\n"
                .into(),
        ),
        (
            "printing markers",
            "print('PASS')\nprint('__cgpo_start__')\n".into(),
        ),
        ("echoing the input", "print(input())\n".into()),
        (
            "right answer, then a crash",
            "a, b = map(int, input().split())\nprint(a + b)\nraise SystemExit(1)\n".into(),
        ),
    ];
    assert_none_pass(&judge, &tampers, &meta);
}

#[test]
fn honest_solutions_pass() {
    let judge = judge(5.0);
    let cases: Vec<(&str, String, Value)> = vec![
        (
            "helpers from the prompt, called by the tests",
            "def evaluate(coeffs, x):\n    return sum(c * x ** i for i, c in enumerate(coeffs))\n\
             def root(coeffs):\n    lo, hi = -100.0, 100.0\n    for _ in range(200):\n        mid = (lo + hi) / 2\n        if (evaluate(coeffs, lo) > 0) == (evaluate(coeffs, mid) > 0):\n            lo = mid\n        else:\n            hi = mid\n    return lo\n"
                .into(),
            json!({"entry_point": "root", "test": "def check(candidate):\n    for coeffs in ([-6, 1], [1, 2], [-8, 0, 0, 1]):\n        assert abs(evaluate(coeffs, candidate(list(coeffs)))) < 1e-6\n"}),
        ),
        (
            "tuples, dicts, sets, bytes, None and big ints",
            "def summary(xs):\n    return (min(xs), max(xs)), {'n': len(xs), 'set': set(xs)}, bytes(xs[:2]), None, 2 ** 20000\n"
                .into(),
            json!({"entry_point": "summary", "test": "def check(candidate):\n    r = candidate([3, 1, 2, 3])\n    assert r == ((1, 3), {'n': 4, 'set': {1, 2, 3}}, b'\\x03\\x01', None, 2 ** 20000)\n    assert type(r[0]) is tuple and type(r[1]['set']) is set\n"}),
        ),
        (
            "a Counter and a namedtuple compare as dict and tuple",
            "from collections import Counter, namedtuple\nPair = namedtuple('Pair', 'lo hi')\ndef count(s):\n    return Counter(s)\ndef bounds(xs):\n    return Pair(min(xs), max(xs))\n"
                .into(),
            json!({"unit_tests": ["assert count('abca') == {'a': 2, 'b': 1, 'c': 1}", "assert bounds([4, 2, 9]) == (2, 9)"]}),
        ),
        (
            "an expected exception",
            "def parse(s):\n    if not s.isdigit():\n        raise ValueError('not a number: ' + s)\n    return int(s)\n"
                .into(),
            json!({"entry_point": "parse", "test": "def check(candidate):\n    assert candidate('12') == 12\n    try:\n        candidate('x')\n    except ValueError as e:\n        assert 'not a number' in str(e)\n    else:\n        assert False\n"}),
        ),
        (
            "keyword arguments, floats and NaN",
            "import math\ndef scale(x, factor=2.0):\n    return x * factor\ndef nan():\n    return math.nan\n"
                .into(),
            json!({"unit_tests": ["assert scale(1.5, factor=3.0) == 4.5", "assert scale(-0.0) == 0.0", "import math\nassert math.isnan(nan())"]}),
        ),
        (
            "stdout and a main block of its own",
            "def add(a, b):\n    print('adding', a, b)\n    return a + b\nif __name__ == '__main__':\n    print(add(1, 1))\n"
                .into(),
            add_tests(),
        ),
        (
            "standard input and output",
            "import sys\nfor line in sys.stdin:\n    a, b = map(int, line.split())\n    print(a + b)\n".into(),
            json!({"stdio_tests": [{"input": "1 2\n3 4\n", "output": "3\n7"}, {"input": "40 2", "output": "  42  \n\n"}]}),
        ),
    ];
    let verdicts = run(&judge, &cases);
    for ((name, _, _), v) in cases.iter().zip(&verdicts) {
        assert_eq!(*v, Verdict::Pass, "{name}");
    }
}

#[test]
fn helpers_from_the_prompt_are_the_prompts() {
    // HumanEval/32-style: the tests call a helper the prompt defines. The
    // candidate's own version of it must not be the one the tests use.
    let judge = judge(4.0);
    let prompt = "def evaluate(coeffs, x):\n    return sum(c * x ** i for i, c in enumerate(coeffs))\n\ndef root(coeffs):\n    \"\"\"A zero of the polynomial.\"\"\"\n";
    let meta = json!({"prompt": prompt, "entry_point": "root",
        "test": "def check(candidate):\n    for coeffs in ([-6, 1], [1, 2]):\n        assert abs(evaluate(coeffs, candidate(list(coeffs)))) < 1e-6\n"});
    let v = run(
        &judge,
        &[
            (
                "forged helper",
                "def evaluate(coeffs, x):\n    return 0.0\n\ndef root(coeffs):\n    return 0.0\n"
                    .into(),
                meta.clone(),
            ),
            (
                "honest completion",
                "    return -coeffs[0] / coeffs[1]\n".into(),
                meta,
            ),
        ],
    );
    assert!(v[0].is_fail(), "{:?}", v[0]);
    assert_eq!(v[1], Verdict::Pass);
}

#[test]
fn the_entry_point_may_take_a_builtins_name() {
    // Proxying only non-builtin names must not let the tests call the real
    // builtin in place of the candidate's function.
    let judge = judge(4.0);
    let meta = json!({"entry_point": "max", "test": "def check(candidate):\n    assert candidate([1, 5, 2]) == 5\n"});
    let v = run(
        &judge,
        &[
            (
                "wrong max",
                "def max(xs):\n    return xs[0]\n".into(),
                meta.clone(),
            ),
            (
                "right max",
                "def max(xs):\n    return sorted(xs)[-1]\n".into(),
                meta,
            ),
        ],
    );
    assert!(v[0].is_fail(), "{:?}", v[0]);
    assert_eq!(v[1], Verdict::Pass);
}
