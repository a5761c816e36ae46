//! `detectable_content:*` instructions: `[placeholder]` count and a
//! postscript marker.

use std::sync::OnceLock;

use regex::Regex;

use super::length::PY_SPACE_CLASS;
use super::text::{cached_regex, static_regex};

/// At least `min` placeholders: non-overlapping `[...]` on one line.
pub(crate) fn placeholders(response: &str, min: usize) -> Result<(), String> {
    static PLACEHOLDER: OnceLock<Regex> = OnceLock::new();
    let re = PLACEHOLDER.get_or_init(|| static_regex(r"\[.*?\]"));
    let n = re.find_iter(response).count();
    if n >= min {
        Ok(())
    } else {
        Err(format!("{n} [placeholders], expected at least {min}"))
    }
}

/// The pattern that finds a postscript marker in the lowercased response.
/// "P.S." and "P.P.S" get the reference's spacing-tolerant patterns
/// ("p. s.", "p.p.s"); any other marker is matched literally, ignoring case.
pub(crate) fn postscript_regex(marker: &str) -> Result<Regex, String> {
    let pattern = match marker {
        "P.P.S" => format!(r"p\.{PY_SPACE_CLASS}?p\.{PY_SPACE_CLASS}?s"),
        "P.S." => format!(r"p\.{PY_SPACE_CLASS}?s\."),
        other => regex::escape(&other.to_lowercase()),
    };
    cached_regex(&pattern, false).map_err(|e| format!("postscript_marker `{marker}`: {e}"))
}

/// The marker occurs anywhere (the reference's `\s*MARKER.*$` in multiline
/// mode matches wherever the marker does).
pub(crate) fn postscript(response: &str, marker: &str, re: &Regex) -> Result<(), String> {
    if re.is_match(&response.to_lowercase()) {
        Ok(())
    } else {
        Err(format!("no postscript starting with {marker:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_boundary() {
        let text = "Dear [name], at [address]\n[broken\n]";
        assert!(placeholders(text, 2).is_ok());
        assert_eq!(
            placeholders(text, 3),
            Err("2 [placeholders], expected at least 3".into())
        );
    }

    #[test]
    fn postscript_markers() {
        let ps = |m: &str, t: &str| postscript(t, m, &postscript_regex(m).unwrap());
        assert!(ps("P.S.", "Bye.\np. s. see you").is_ok());
        assert!(ps("P.S.", "Bye.\nPS see you").is_err());
        assert!(ps("P.P.S", "x\nP.P.S. more").is_ok());
        assert!(ps("P.P.S", "x\nP.S. more").is_err());
        assert!(ps("Note:", "x\nNOTE: y").is_ok());
        assert!(ps("Note:", "x\nNote y").is_err());
    }
}
