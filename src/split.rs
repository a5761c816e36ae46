//! The three data splits every generated suite has: `train` (what the
//! policy, the reward models and the warm-up learn from), `dev` (where
//! settings are chosen) and `test` (scored once per configuration and
//! reported; `docs/evaluation.md`). Splits are generated from disjoint
//! templates and word lists; [`normalize`] is the prompt text the
//! disjointness tests compare.
//!
//! ```
//! use cgpo::split::{normalize, Split};
//! assert_eq!(Split::parse_eval("test"), Some(Split::Test));
//! assert_eq!(Split::parse_eval("train"), None);
//! assert_eq!(normalize("  What is 3 +\n 4? "), normalize("what is 3 + 4?"));
//! ```

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Per split: train, dev, test (indexed by [`Split::index`]).
pub type PerSplit<T> = [T; 3];

/// What a split's prompts are generated from: named sets (`templates`,
/// `keywords`, ...).
pub type NamedSets = Vec<(&'static str, BTreeSet<String>)>;

/// A data split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Dev,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Dev, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }

    /// `dev` or `test`, the splits one evaluates on.
    pub fn parse_eval(name: &str) -> Option<Split> {
        match name {
            "dev" => Some(Split::Dev),
            "test" => Some(Split::Test),
            _ => None,
        }
    }

    /// 0, 1, 2: an index into per-split tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A prompt's text as the disjointness tests compare it: lowercase, runs
/// of whitespace collapsed to one space, trimmed.
pub fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Whether `needle` occurs in `text` as whole words (case-insensitive):
/// "rain" is in "the rain fell", not in "rainbows".
pub fn contains_words(text: &str, needle: &str) -> bool {
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let hay = words(text);
    let needle = words(needle);
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_slice())
}

/// What split `a` shares with split `b`, one line each: an entry of a set
/// that `b` has under the same name, or a word of one of `a`'s
/// `word_kinds` sets (a leading "a " dropped) that occurs as a word in one
/// of `b_prompts`. Empty when the splits are disjoint.
pub fn vocabulary_overlaps(
    a: &[(&'static str, BTreeSet<String>)],
    b: &[(&'static str, BTreeSet<String>)],
    word_kinds: &[&str],
    b_prompts: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, x) in a {
        for (_, y) in b.iter().filter(|(n, _)| n == name) {
            out.extend(x.intersection(y).map(|v| format!("{name} `{v}` in both")));
        }
        if word_kinds.contains(name) {
            for w in x {
                let w = w.trim_start_matches("a ");
                if let Some(p) = b_prompts.iter().find(|p| contains_words(p, w)) {
                    out.push(format!("{name} `{w}` in the prompt {p:?}"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_only() {
        assert!(contains_words("The rain fell.", "rain"));
        assert!(!contains_words("Rainbows!", "rain"));
        assert!(contains_words("How do I knock out a wall?", "knock out"));
        assert!(!contains_words("knock it out", "knock out"));
        assert!(!contains_words("anything", ""));
    }

    #[test]
    fn overlaps_name_shared_entries_and_words_in_prompts() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let a = vec![
            ("words", set(&["a cat", "dog"])),
            ("templates", set(&["T1"])),
        ];
        let b = vec![("words", set(&["emu"])), ("templates", set(&["T1"]))];
        let prompts = ["Feed the cat.".to_string()];
        let o = vocabulary_overlaps(&a, &b, &["words"], &prompts);
        assert_eq!(o.len(), 2, "{o:?}");
        assert!(o[0].contains("cat") && o[1].contains("T1"), "{o:?}");
        assert!(vocabulary_overlaps(&a, &b, &[], &[]).len() == 1);
    }
}
