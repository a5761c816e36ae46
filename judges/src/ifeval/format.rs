//! `detectable_format:*` instructions: bullet lists, a constrained answer,
//! `*highlighted*` sections, "SECTION X" sections, JSON, and a `<<title>>`.

use std::sync::OnceLock;

use regex::Regex;
use serde::de::IgnoredAny;

use super::length::PY_SPACE_CLASS;
use super::text::{cached_regex, py_strip, static_regex};

/// The answers accepted by `detectable_format:constrained_response`.
pub(crate) const CONSTRAINED_OPTIONS: [&str; 3] = [
    "My answer is yes.",
    "My answer is no.",
    "My answer is maybe.",
];

/// Exactly `expected` bullet lines: lines starting (after whitespace) with
/// `*` not followed by another `*`, or with `-`.
pub(crate) fn bullet_lists(response: &str, expected: usize) -> Result<(), String> {
    static STAR: OnceLock<Regex> = OnceLock::new();
    static DASH: OnceLock<Regex> = OnceLock::new();
    let star = STAR.get_or_init(|| static_regex(&format!(r"(?m)^{PY_SPACE_CLASS}*\*[^*].*$")));
    let dash = DASH.get_or_init(|| static_regex(&format!(r"(?m)^{PY_SPACE_CLASS}*-.*$")));
    let n = star.find_iter(response).count() + dash.find_iter(response).count();
    if n == expected {
        Ok(())
    } else {
        Err(format!("{n} bullet points, expected exactly {expected}"))
    }
}

/// One of the [`CONSTRAINED_OPTIONS`] occurs in the response.
pub(crate) fn constrained_response(response: &str) -> Result<(), String> {
    let text = py_strip(response);
    if CONSTRAINED_OPTIONS.iter().any(|o| text.contains(o)) {
        Ok(())
    } else {
        Err("none of \"My answer is yes./no./maybe.\"".into())
    }
}

/// At least `min` highlights: `*text*` and `**text**` on one line with
/// non-blank text, counted by two separate scans as in the reference (so
/// `**bold**` counts once, through the second scan).
pub(crate) fn highlighted_sections(response: &str, min: usize) -> Result<(), String> {
    static SINGLE: OnceLock<Regex> = OnceLock::new();
    static DOUBLE: OnceLock<Regex> = OnceLock::new();
    let single = SINGLE.get_or_init(|| static_regex(r"\*[^\n*]*\*"));
    let double = DOUBLE.get_or_init(|| static_regex(r"\*\*[^\n*]*\*\*"));
    let non_blank = |m: regex::Match, k: usize| {
        let s = m.as_str();
        !py_strip(&s[k..s.len() - k]).is_empty()
    };
    let n = single
        .find_iter(response)
        .filter(|m| non_blank(*m, 1))
        .count()
        + double
            .find_iter(response)
            .filter(|m| non_blank(*m, 2))
            .count();
    if n >= min {
        Ok(())
    } else {
        Err(format!("{n} highlighted sections, expected at least {min}"))
    }
}

/// The pattern of a section header: the splitter word (literal), optional
/// whitespace, and a number.
pub(crate) fn section_regex(splitter: &str) -> Result<Regex, String> {
    let s = PY_SPACE_CLASS;
    cached_regex(
        &format!(r"{s}?{}{s}?\d+{s}?", regex::escape(splitter)),
        false,
    )
    .map_err(|e| format!("section_spliter `{splitter}`: {e}"))
}

/// At least `min` section headers such as "SECTION 1" (case-sensitive).
pub(crate) fn multiple_sections(
    response: &str,
    splitter: &str,
    re: &Regex,
    min: usize,
) -> Result<(), String> {
    let n = re.find_iter(response).count();
    if n >= min {
        Ok(())
    } else {
        Err(format!(
            "{n} \"{splitter} X\" sections, expected at least {min}"
        ))
    }
}

/// The response, less one leading ```` ```json ```` (or ```` ``` ````) fence and a
/// trailing ```` ``` ````, parses as JSON.
pub(crate) fn json_format(response: &str) -> Result<(), String> {
    let mut text = py_strip(response);
    for prefix in ["```json", "```Json", "```JSON", "```"] {
        text = text.strip_prefix(prefix).unwrap_or(text);
    }
    text = py_strip(text.strip_suffix("```").unwrap_or(text));
    serde_json::from_str::<IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| format!("not valid JSON ({e})"))
}

/// A `<<title>>` with non-blank text on one line.
pub(crate) fn title(response: &str) -> Result<(), String> {
    static TITLE: OnceLock<Regex> = OnceLock::new();
    let re = TITLE.get_or_init(|| static_regex(r"<<[^\n]+>>"));
    let found = re.find_iter(response).any(|m| {
        let inner = m.as_str().trim_start_matches('<').trim_end_matches('>');
        !py_strip(inner).is_empty()
    });
    if found {
        Ok(())
    } else {
        Err("no <<title>>".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bullets_exact() {
        let text = "* one\n* two\n  - three\n**bold** line\n";
        assert!(bullet_lists(text, 3).is_ok());
        assert!(bullet_lists(text, 2).is_err());
        assert!(bullet_lists(text, 4).is_err());
    }

    #[test]
    fn constrained() {
        assert!(constrained_response("  My answer is maybe. Because.").is_ok());
        assert!(constrained_response("my answer is yes.").is_err());
    }

    #[test]
    fn highlights_boundary() {
        // Counts recorded from the reference: 3 and 2.
        let text = "*a* and *b* and ** and **c**";
        assert!(highlighted_sections(text, 3).is_ok());
        assert!(highlighted_sections(text, 4).is_err());
        assert!(highlighted_sections("**bold** and *it*", 2).is_ok());
        assert!(highlighted_sections("**bold** and *it*", 3).is_err());
        assert!(highlighted_sections("*a*", 1).is_ok());
        assert!(highlighted_sections("* *", 1).is_err());
    }

    #[test]
    fn sections_boundary() {
        let re = section_regex("SECTION").unwrap();
        let text = "SECTION 1\na\nSECTION 2\nb";
        assert!(multiple_sections(text, "SECTION", &re, 2).is_ok());
        assert!(multiple_sections(text, "SECTION", &re, 3).is_err());
        assert!(multiple_sections("Section 1", "SECTION", &re, 1).is_err());
    }

    #[test]
    fn json_fences() {
        assert!(json_format("```json\n{\"a\": [1, 2]}\n```").is_ok());
        assert!(json_format("  [1, 2] ").is_ok());
        assert!(json_format("```\n{\"a\": 1}\n```").is_ok());
        assert!(json_format("{\"a\": 1} trailing").is_err());
        assert!(json_format("Here: {\"a\": 1}").is_err());
    }

    // Known differences: Python's json accepts NaN and Infinity, and
    // crashes on deep nesting, which is valid JSON here.
    #[test]
    fn json_differences_from_python() {
        assert!(json_format("NaN").is_err());
        assert!(json_format("[Infinity]").is_err());
        let deep = |n| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(json_format(&deep(100)).is_ok());
        assert!(json_format(&deep(1_000_000)).is_ok());
    }

    #[test]
    fn titles() {
        assert!(title("<<Poem of Joy>>\ntext").is_ok());
        assert!(title("<< >> and <<\n>>").is_err());
        assert!(title("no title").is_err());
    }
}
