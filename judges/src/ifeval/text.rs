//! Text primitives with Python's semantics, shared by the instruction checks.
//!
//! The reference checker is Python, so "whitespace", "word character",
//! `str.strip`, `str.isupper` and `str.islower` mean what they mean in
//! CPython: these helpers reproduce them where Rust's built-ins differ
//! (Rust's `char::is_whitespace` misses U+001C..U+001F; Rust's `\w` counts
//! combining marks as word characters, Python's does not).
//!
//! ```
//! use cgpo_judges::ifeval::text::{count_words, py_isupper};
//! assert_eq!(count_words("Hello, world! It's 2024."), 5);
//! assert!(py_isupper("HELLO, 2024!"));
//! assert!(!py_isupper("2024"));
//! ```

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::{Regex, RegexBuilder};

/// Python's `str.isspace` for one character: Unicode White_Space plus the
/// information separators U+001C..U+001F, which CPython also counts.
pub fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_is_space)
}

/// Python's `str.split()` with no argument: runs of whitespace separate.
pub fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(py_is_space).filter(|w| !w.is_empty())
}

/// A class matching Python's `\w` on `str`: letters, numbers and `_`.
pub(crate) const PY_WORD_CLASS: &str = r"[\p{L}\p{N}_]";

/// Titlecase letters (category Lt): cased in Python, neither upper nor lower.
fn is_titlecase(c: char) -> bool {
    matches!(c,
        '\u{1C5}' | '\u{1C8}' | '\u{1CB}' | '\u{1F2}'
        | '\u{1F88}'..='\u{1F8F}' | '\u{1F98}'..='\u{1F9F}' | '\u{1FA8}'..='\u{1FAF}'
        | '\u{1FBC}' | '\u{1FCC}' | '\u{1FFC}')
}

/// Python's `str.isupper()`: at least one cased character, and no lowercase
/// or titlecase one.
pub fn py_isupper(s: &str) -> bool {
    let mut cased = false;
    for c in s.chars() {
        if c.is_lowercase() || is_titlecase(c) {
            return false;
        }
        cased |= c.is_uppercase();
    }
    cased
}

/// Python's `str.islower()`: at least one cased character, and no uppercase
/// or titlecase one.
pub fn py_islower(s: &str) -> bool {
    let mut cased = false;
    for c in s.chars() {
        if c.is_uppercase() || is_titlecase(c) {
            return false;
        }
        cased |= c.is_lowercase();
    }
    cased
}

/// The number of `\w+` runs (NLTK's `RegexpTokenizer(r"\w+")`), with
/// Python's `\w`: a word is a maximal run of letters, numbers and `_`, so
/// "it's" is two words and "state-of-the-art" four.
pub fn count_words(text: &str) -> usize {
    static WORD: OnceLock<Regex> = OnceLock::new();
    let word = WORD.get_or_init(|| static_regex(&format!("{PY_WORD_CLASS}+")));
    word.find_iter(text).count()
}

/// The comparison in "less than N" / "at least N" instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    LessThan,
    AtLeast,
}

impl Relation {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "less than" => Some(Self::LessThan),
            "at least" => Some(Self::AtLeast),
            _ => None,
        }
    }

    pub fn holds(self, actual: usize, threshold: usize) -> bool {
        match self {
            Self::LessThan => actual < threshold,
            Self::AtLeast => actual >= threshold,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LessThan => "less than",
            Self::AtLeast => "at least",
        }
    }

    /// `Ok(())` when `actual` satisfies the relation, else a reason such as
    /// "312 words, expected less than 300".
    pub fn check(self, actual: usize, threshold: usize, what: &str) -> Result<(), String> {
        if self.holds(actual, threshold) {
            Ok(())
        } else {
            Err(format!(
                "{actual} {what}, expected {} {threshold}",
                self.as_str()
            ))
        }
    }
}

/// Builds a regex from a constant pattern of this module tree. The patterns
/// are fixed in the source and covered by tests, so a failure is a bug in
/// this crate, never bad input.
pub(crate) fn static_regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("constant ifeval regex")
}

/// A regex built from metadata (keywords, markers, section names), cached
/// across samples and batches: the rollouts of one prompt share patterns,
/// and compiling a case-insensitive Unicode pattern costs far more than
/// running it on a response (Python's `re` keeps a similar cache, which the
/// reference relies on). The cache is emptied when it reaches its bound.
pub(crate) fn cached_regex(pattern: &str, case_insensitive: bool) -> Result<Regex, regex::Error> {
    const MAX_ENTRIES: usize = 4096;
    static CACHE: OnceLock<Mutex<HashMap<(bool, String), Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (case_insensitive, pattern.to_owned());
    // A poisoned lock only means another thread panicked mid-insert; the
    // map is still valid, but skipping the cache is simpler and safe.
    if let Some(re) = cache.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(re);
    }
    let re = RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .build()?;
    if let Ok(mut map) = cache.lock() {
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, re.clone());
    }
    Ok(re)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_python_backslash_w() {
        assert_eq!(count_words(""), 0);
        assert_eq!(count_words("state-of-the-art"), 4);
        assert_eq!(count_words("snake_case x2 ½"), 3);
        assert_eq!(count_words("naïve café"), 2);
        // Python's \w excludes the combining vowel sign U+093F, splitting the word.
        assert_eq!(count_words("हिंदी"), 2);
    }

    #[test]
    fn case_predicates_follow_python() {
        assert!(py_isupper("ABC 1"));
        assert!(!py_isupper("ABc"));
        assert!(!py_isupper("123"));
        assert!(py_islower("abc, def!"));
        assert!(!py_islower("abC"));
        assert!(!py_islower("..."));
        assert!(!py_isupper("\u{1C5}A"));
    }

    #[test]
    fn whitespace_includes_information_separators() {
        assert_eq!(py_strip("\u{1c} a b \n"), "a b");
        assert_eq!(
            py_split(" a\u{1f}b  c ").collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn relations() {
        assert_eq!(
            Relation::LessThan.check(300, 300, "words"),
            Err("300 words, expected less than 300".into())
        );
        assert_eq!(Relation::LessThan.check(299, 300, "words"), Ok(()));
        assert_eq!(Relation::AtLeast.check(300, 300, "words"), Ok(()));
        assert!(Relation::AtLeast.check(299, 300, "words").is_err());
        assert_eq!(Relation::parse("at most"), None);
    }
}
