//! The math judge's tests: the equivalence table, the format rule through
//! the judge, metadata errors, and a no-panic property.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::Prompt;

fn eq(gold: &str, answer: &str) -> bool {
    equivalent(&parse_answer(gold), &parse_answer(answer), DEFAULT_REL_TOL)
}

/// (gold, answer, equivalent?) for every class the judge claims to handle,
/// with both outcomes in each class.
const TABLE: &[(&str, &str, bool)] = &[
    // integers
    ("42", "42", true),
    ("42", "042", true),
    ("42", "43", false),
    ("0", "-0", true),
    ("12345678901234567890", "12345678901234567891", false),
    ("12345678901234567890", "12345678901234567890", true),
    ("7", "7.0", true),
    ("7", "7.01", false),
    // decimals
    ("0.5", ".5", true),
    ("0.5", "0.50", true),
    ("3.14", "3.141", false),
    ("2.5", "2,5", false),
    ("0.1", "0.10000000001", false),
    // fractions
    ("3/4", r"\frac{3}{4}", true),
    ("3/4", r"\dfrac{3}{4}", true),
    ("3/4", r"\tfrac{3}{4}", true),
    ("3/4", r"\frac34", true),
    ("3/4", r"\frac{6}{8}", true),
    ("3/4", r"\frac{4}{3}", false),
    ("3/4", "0.75", true),
    ("3/4", "0.7", false),
    (r"\frac{-1}{2}", r"-\frac{1}{2}", true),
    (r"\frac{1}{3}", "0.333", false),
    (r"\frac{1}{3}", "1/3", true),
    (r"\frac{2}{3}", r"\frac{3}{2}", false),
    // mixed forms
    ("0.5", "1/2", true),
    ("1.5", r"1\frac{1}{2}", true),
    ("3/2", r"1\frac{1}{2}", true),
    (r"-1\frac{1}{2}", "-1.5", true),
    ("1.5", r"1\frac{1}{3}", false),
    ("2.5", r"2\frac12", true),
    ("2", r"2\frac{1}{2}", false),
    // thousands separators and LaTeX spacing
    ("1000000", "1,000,000", true),
    ("1000", "1{,}000", true),
    ("1000", r"1\,000", true),
    ("1000000", "1,000", false),
    ("1234.5", "1,234.5", true),
    ("1,000", "1000", true),
    ("1,000", "100", false),
    // signs
    ("-3", "\u{2212}3", true),
    ("3", "+3", true),
    ("-3", "3", false),
    ("-3", "- 3", true),
    ("3", "--3", true),
    ("-3", "+3", false),
    // \boxed and math delimiters
    ("5", r"\boxed{5}", true),
    ("5", r"$\boxed{5}$", true),
    ("5", r"\(5\)", true),
    ("5", r"\boxed{6}", false),
    (r"\boxed{\frac{1}{2}}", "0.5", true),
    // percent: a unit, never divided by 100
    ("50%", "50%", true),
    ("50%", "50", true),
    ("50", r"50\%", true),
    ("50%", "0.5", false),
    ("50%", "51%", false),
    ("12.5", "12.5 percent", true),
    // surds and pi (numeric, relative tolerance)
    (r"\sqrt{2}", r"\sqrt2", true),
    (r"2\sqrt{3}", r"\sqrt{12}", true),
    (r"2\sqrt{3}", r"3\sqrt{2}", false),
    (r"\frac{\sqrt{3}}{2}", r"\sqrt{3}/2", true),
    (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt{2}}{2}", false),
    (r"\sqrt{2}", "1.41421356", false),
    (r"\sqrt[3]{8}", "2", true),
    (r"\pi", "\u{3c0}", true),
    (r"2\pi", r"2 \pi", true),
    (r"2\pi", r"\pi", false),
    (r"\frac{\pi}{2}", r"\pi/2", true),
    (r"\frac{\pi}{2}", r"\frac{\pi}{3}", false),
    (r"\pi", "3.14159", false),
    (r"4\sqrt{2}\pi", r"\sqrt{32}\pi", true),
    ("2^{10}", "1024", true),
    ("2^{10}", "1000", false),
    ("100000", r"1\times10^5", true),
    ("100000", r"1\times10^4", false),
    // tuples and intervals
    ("(1, 2)", "(1,2)", true),
    ("(1, 2)", r"\left( 1, 2 \right)", true),
    ("(1, 2)", "(2, 1)", false),
    ("(1, 2)", "(1, 2, 3)", false),
    ("(1/2, -3)", r"(\frac{1}{2}, -3)", true),
    ("[0, 1)", "[0,1)", true),
    ("[0, 1)", "[0, 1]", false),
    ("[0, 1)", "(0, 1)", false),
    (r"(-\infty, 3]", "(-\u{221e}, 3]", true),
    (r"(-\infty, 3]", r"(-\infty, 3)", false),
    (r"(-\infty, 3]", r"(\infty, 3]", false),
    ("(100, 200)", "(100,200)", true),
    ("1, 2", "2, 1", true),
    ("1, 2", "1, 3", false),
    (r"\{1, 2\}", r"\{2, 1\}", true),
    (r"\{1, 2\}", "(1, 2)", false),
    // units and currency
    ("5", "$5", true),
    ("5", r"\$5", true),
    ("5", "5 dollars", true),
    ("5", "5 cm", true),
    ("5", r"5\text{ cm}", true),
    ("5", r"5 \mbox{cm}^2", true),
    ("30", r"30^\circ", true),
    ("30", "30\u{b0}", true),
    ("30", "30 degrees", true),
    ("5", "6 dollars", false),
    ("30", r"31^\circ", false),
    ("18", "$18.00", true),
    ("5", "5 apples", false),
    // text answers
    ("yes", "Yes", true),
    ("yes", r"\text{yes}", true),
    ("yes", "no", false),
    ("(B)", "B", true),
    ("(B)", r"\text{(C)}", false),
    ("Monday", r"\textbf{monday}", true),
    // `x =` prefixes
    ("3", "x = 3", true),
    ("x=3", "3", true),
    ("3", "x = 4", false),
    ("3", "2x = 6", false),
    // non-numeric expressions compare as text
    ("x^2+1", "x^{2} + 1", true),
    ("x^2+1", "x^2-1", false),
    ("2x", "2 x", true),
    ("2x", "x", false),
];

#[test]
fn equivalence_table() {
    assert!(TABLE.len() >= 100, "table has {} pairs", TABLE.len());
    let wrong: Vec<String> = TABLE
        .iter()
        .filter(|(g, a, want)| eq(g, a) != *want || eq(a, g) != *want)
        .map(|(g, a, want)| format!("{g:?} vs {a:?}: expected {want}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

fn judge_with(judge: &MathJudge, response: &str, metadata: &Value) -> Verdict {
    let p = Prompt::from("q");
    judge
        .judge(&[SampleView::new("id", &p, response, metadata)])
        .remove(0)
}

fn judge(response: &str, answer: Value) -> Verdict {
    judge_with(
        &MathJudge::new("math"),
        response,
        &json!({ "answer": answer }),
    )
}

fn reason(v: Verdict) -> String {
    match v {
        Verdict::Fail(r) | Verdict::Error(r) => r,
        Verdict::Pass => "pass".into(),
    }
}

#[test]
fn right_format_and_value_passes() {
    let long = "Let x be the number of apples. Then 2x = 84, so x = 42.\n\nThe final answer is $\\boxed{42}$.";
    assert_eq!(judge(long, json!("42")), Verdict::Pass);
    assert_eq!(judge("The final answer is 0.5", json!(0.5)), Verdict::Pass);
    assert_eq!(judge("The final answer is 7.", json!(7)), Verdict::Pass);
    assert_eq!(
        judge("The final answer is: 1,000.", json!(1000)),
        Verdict::Pass
    );
}

#[test]
fn wrong_value_says_found_and_expected() {
    assert_eq!(
        reason(judge("The final answer is 41.", json!("42"))),
        "wrong answer: found `41`, expected `42`"
    );
}

#[test]
fn right_value_in_wrong_format_fails_as_format() {
    let r = reason(judge("The answer is 42.", json!("42")));
    assert_eq!(
        r,
        "format: the last sentence is not \"The final answer is X\" (it is `The answer is 42.`); expected `42`"
    );
    let r = reason(judge(
        "The final answer is 42. I hope it is correct.",
        json!("42"),
    ));
    assert_eq!(
        r,
        "format: text follows the final-answer sentence (`I hope it is correct.`); found `42` (right value), expected `42`"
    );
    let r = reason(judge(
        "The final answer is 41. I hope it is correct.",
        json!("42"),
    ));
    assert!(r.contains("(wrong value)"), "{r}");
    let r = reason(judge("Therefore the final answer is 42.", json!("42")));
    assert!(r.starts_with("format: the last sentence is not"), "{r}");
    let r = reason(judge("The final answer is", json!("42")));
    assert!(
        r.starts_with("format: \"The final answer is\" is not followed"),
        "{r}"
    );
    let r = reason(judge("", json!("42")));
    assert!(r.starts_with("format:"), "{r}");
}

#[test]
fn long_quotes_are_cut() {
    let response = format!("The answer is {}.", "9".repeat(500));
    let r = reason(judge(&response, json!("1")));
    assert!(r.len() < 250 && r.contains("..."), "{r}");
}

#[test]
fn malformed_metadata_is_an_error() {
    let j = MathJudge::new("math");
    let ok = "The final answer is 1.";
    let cases = [
        (json!(null), "metadata is null, not an object"),
        (json!([1]), "metadata is an array, not an object"),
        (json!({}), "metadata has no `answer`"),
        (
            json!({"answer": true}),
            "metadata `answer` must be a string or a number, got a boolean",
        ),
        (
            json!({"answer": null}),
            "metadata `answer` must be a string or a number, got null",
        ),
        (
            json!({"answer": {"v": 1}}),
            "metadata `answer` must be a string or a number, got an object",
        ),
        (json!({"answer": "  "}), "metadata `answer` is empty"),
    ];
    for (meta, want) in cases {
        assert_eq!(judge_with(&j, ok, &meta), Verdict::error(want), "{meta}");
    }
}

#[test]
fn params_pick_the_key_and_reject_typos() {
    let j = MathJudge::from_params("m", &json!({"answer_key": "gold"})).unwrap();
    assert_eq!(
        judge_with(&j, "The final answer is 2.", &json!({"gold": "2"})),
        Verdict::Pass
    );
    assert!(judge_with(&j, "The final answer is 2.", &json!({"answer": "2"})).is_error());
    let e = |p: Value| MathJudge::from_params("m", &p).err().map(|e| e.to_string());
    assert!(e(json!({"answer_kye": "x"})).is_some_and(|m| m.contains("unknown field `answer_kye`")));
    assert!(e(json!({"rel_tol": -1.0})).is_some_and(|m| m.contains("rel_tol")));
    assert!(e(json!({"answer_key": ""})).is_some_and(|m| m.contains("answer_key")));
    assert!(e(json!(null)).is_none());
}

#[test]
fn rel_tol_param_loosens_inexact_comparison() {
    let loose = MathJudge::from_params("m", &json!({"rel_tol": 1e-3})).unwrap();
    let meta = json!({"answer": "\\pi"});
    assert_eq!(
        judge_with(&loose, "The final answer is 3.1416.", &meta),
        Verdict::Pass
    );
    assert!(judge_with(&MathJudge::new("m"), "The final answer is 3.1416.", &meta).is_fail());
}

#[test]
fn registry_builds_math() {
    let registry = crate::JudgeRegistry::with_builtins();
    let spec = crate::JudgeSpec::new("math", json!({}));
    let j = registry.build(&spec).unwrap();
    assert_eq!(j.name(), "math");
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(response in ".{0,200}", answer in ".{0,60}") {
        let v = judge(&response, json!(answer));
        prop_assert_eq!(v.clone(), judge(&response, json!(answer)));
    }

    #[test]
    fn latex_like_text_never_panics(
        response in r"(The final answer is )?[-+*/^(){}\[\],.$\\a-z0-9 %]{0,80}",
        answer in r"[-+*/^(){}\[\],.$\\a-z0-9 %]{0,40}",
    ) {
        let _ = judge(&response, json!(answer));
        let _ = parse_answer(&response);
    }

    #[test]
    fn integers_round_trip_through_the_judge(n in any::<i64>()) {
        let response = format!("The final answer is {n}.");
        prop_assert_eq!(judge(&response, json!(n)), Verdict::Pass);
        let other = n.wrapping_add(1);
        let wrong = format!("The final answer is {}.", other);
        prop_assert!(judge(&wrong, json!(n)).is_fail());
    }
}
