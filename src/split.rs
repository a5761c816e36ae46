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

use serde::{Deserialize, Serialize};

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
}
