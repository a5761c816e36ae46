//! String clean-up before parsing an answer: math delimiters, `\boxed{}`,
//! `\text{}`-like wrappers, LaTeX spacing, unicode symbols, a leading
//! `x =`, percent and currency marks, and trailing units.
//!
//! Each step removes notation that does not change the value, so that the
//! parser only sees arithmetic. Unit and prefix stripping is offered as
//! separate steps because it is tentative: the caller keeps the text form
//! when the stripped form does not parse.
//!
//! ```
//! use cgpo_judges::math::normalize::{normalize, strip_units};
//! assert_eq!(normalize(r"$\boxed{\dfrac{3}{4}}$."), r"\frac{3}{4}");
//! assert_eq!(normalize(r"1{,}000\,000"), "1000000");
//! assert_eq!(strip_units("5 cm^2"), Some("5"));
//! assert_eq!(strip_units("5 apples"), None);
//! ```

/// Commands whose braced argument is kept and whose name is dropped.
const UNWRAP: &[&str] = &[
    "boxed",
    "fbox",
    "text",
    "textbf",
    "textit",
    "textrm",
    "textnormal",
    "mathrm",
    "mathbf",
    "mathit",
    "mathsf",
    "mbox",
    "hbox",
    "operatorname",
];

/// Commands that carry no value (sizing, spacing, display style).
const DROP: &[&str] = &[
    "left",
    "right",
    "big",
    "Big",
    "bigl",
    "bigr",
    "Bigl",
    "Bigr",
    "displaystyle",
    "textstyle",
    "limits",
    "quad",
    "qquad",
];

/// Unit words removed after a number ("5 cm", "12 dollars"). Single letters
/// that are also common variables (`x`, `n`) are deliberately absent.
const UNITS: &[&str] = &[
    "dollar",
    "dollars",
    "usd",
    "cent",
    "cents",
    "euro",
    "euros",
    "pound",
    "pounds",
    "yen",
    "rupees",
    "mm",
    "cm",
    "m",
    "km",
    "meter",
    "meters",
    "metre",
    "metres",
    "centimeter",
    "centimeters",
    "millimeter",
    "millimeters",
    "kilometer",
    "kilometers",
    "in",
    "inch",
    "inches",
    "ft",
    "foot",
    "feet",
    "yd",
    "yard",
    "yards",
    "mi",
    "mile",
    "miles",
    "g",
    "kg",
    "mg",
    "gram",
    "grams",
    "kilogram",
    "kilograms",
    "lb",
    "lbs",
    "oz",
    "ounce",
    "ounces",
    "ton",
    "tons",
    "l",
    "ml",
    "liter",
    "liters",
    "litre",
    "litres",
    "gallon",
    "gallons",
    "quart",
    "quarts",
    "cup",
    "cups",
    "s",
    "sec",
    "second",
    "seconds",
    "min",
    "mins",
    "minute",
    "minutes",
    "h",
    "hr",
    "hrs",
    "hour",
    "hours",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "mph",
    "kph",
    "km/h",
    "m/s",
    "deg",
    "degree",
    "degrees",
    "unit",
    "units",
    "square",
    "sq",
    "cubic",
];

/// Cleans `raw` for parsing; see the module docs for what is removed.
pub fn normalize(raw: &str) -> String {
    let mut s = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '\u{2212}' | '\u{2013}' | '\u{2014}' => s.push('-'),
            '\u{221e}' => s.push_str(r"\infty "),
            '\u{3c0}' => s.push_str(r"\pi "),
            '\u{221a}' => s.push_str(r"\sqrt"),
            '\u{b0}' => s.push_str(r"^\circ"),
            '\u{d7}' | '\u{b7}' | '\u{22c5}' => s.push('*'),
            '\u{f7}' => s.push('/'),
            '\u{a0}' | '\u{2009}' | '\u{202f}' | '~' => s.push(' '),
            c => s.push(c),
        }
    }
    let s = s.replace("{,}", "");
    let s = strip_delimiters(s.trim());
    let s = rewrite_commands(s);
    let s = s.trim();
    let s = s.strip_suffix('.').unwrap_or(s);
    strip_delimiters(s.trim()).trim().to_owned()
}

/// Removes outer `$..$`, `$$..$$`, `\(..\)` and `\[..\]`.
fn strip_delimiters(mut s: &str) -> &str {
    loop {
        let inner = if s.len() >= 2 && s.starts_with('$') && s.ends_with('$') {
            s.trim_matches('$')
        } else if let Some(x) = s.strip_prefix(r"\(").and_then(|x| x.strip_suffix(r"\)")) {
            x
        } else if let Some(x) = s.strip_prefix(r"\[").and_then(|x| x.strip_suffix(r"\]")) {
            x
        } else {
            return s;
        };
        s = inner.trim();
    }
}

/// One pass over LaTeX commands: unwraps [`UNWRAP`], drops [`DROP`] and
/// spacing, and maps synonyms (`\dfrac` -> `\frac`, `\cdot` -> `*`).
fn rewrite_commands(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    // For each open brace: does its closing brace belong to an unwrapped command?
    let mut braces: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j].is_ascii_alphabetic() {
                    j += 1;
                }
                if j == start {
                    // A one-symbol command: `\,` and friends are spacing.
                    match b.get(start) {
                        Some(b',' | b';' | b':' | b'!' | b' ') => {}
                        Some(b'%') => out.push('%'),
                        Some(b'$') => out.push('$'),
                        Some(b'\\') => out.push(' '),
                        Some(_) => {
                            if let Some(c) = s[start..].chars().next() {
                                out.push('\\');
                                out.push(c);
                                i = start + c.len_utf8();
                                continue;
                            }
                        }
                        None => out.push('\\'),
                    }
                    i = (start + 1).min(b.len());
                    continue;
                }
                let name = &s[start..j];
                i = j;
                if UNWRAP.contains(&name) {
                    while i < b.len() && b[i] == b' ' {
                        i += 1;
                    }
                    if b.get(i) == Some(&b'{') {
                        braces.push(true);
                        out.push(' ');
                        i += 1;
                    }
                } else if DROP.contains(&name) {
                } else {
                    match name {
                        "dfrac" | "tfrac" | "cfrac" => out.push_str(r"\frac"),
                        "cdot" | "times" | "ast" => out.push('*'),
                        "div" => out.push('/'),
                        "degree" => out.push_str(r"^\circ"),
                        "infin" => out.push_str(r"\infty"),
                        "lbrace" => out.push_str(r"\{"),
                        "rbrace" => out.push_str(r"\}"),
                        _ => {
                            out.push('\\');
                            out.push_str(name);
                        }
                    }
                    // Keep `\pi2` from reading as the command `\pi2`.
                    if b.get(i).is_some_and(u8::is_ascii_alphabetic) {
                        out.push(' ');
                    }
                }
            }
            b'{' => {
                braces.push(false);
                out.push('{');
                i += 1;
            }
            b'}' => {
                out.push(if braces.pop() == Some(true) { ' ' } else { '}' });
                i += 1;
            }
            _ => {
                let c = s[i..].chars().next().unwrap_or(' ');
                out.push(c);
                i += c.len_utf8().max(1);
            }
        }
    }
    out
}

/// Drops a leading `x =` / `y_1 =` (a one-letter name, optionally with a
/// subscript) when it is the only `=`.
pub fn strip_var_prefix(s: &str) -> &str {
    let Some((lhs, rhs)) = s.split_once('=') else {
        return s;
    };
    if rhs.contains('=') || rhs.trim().is_empty() {
        return s;
    }
    let lhs = lhs.trim();
    let mut chars = lhs.chars();
    let is_name = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => {
            let rest = chars.as_str();
            rest.is_empty()
                || rest.strip_prefix('_').is_some_and(|sub| {
                    sub.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "{} ".contains(c))
                })
        }
        _ => false,
    };
    if is_name {
        rhs.trim()
    } else {
        s
    }
}

/// Drops a trailing percent mark (`%`, `percent`) and a leading currency
/// sign. Percent is a unit here: `50%` reads as 50, never as 0.5.
pub fn strip_percent_currency(s: &str) -> &str {
    let mut s = s.trim();
    for suffix in ["%", "percent"] {
        if let Some(x) = s.strip_suffix(suffix) {
            s = x.trim_end();
            break;
        }
    }
    for prefix in ["$", "\u{a3}", "\u{20ac}", "\u{a5}"] {
        if let Some(x) = s.strip_prefix(prefix) {
            return x.trim_start();
        }
    }
    s
}

/// Removes trailing units (`^\circ`, words from the unit list, `^2`/`^3`
/// after a unit); `None` when nothing was removed or nothing is left.
pub fn strip_units(s: &str) -> Option<&str> {
    let mut rest = s.trim_end();
    let mut removed = false;
    loop {
        let before = rest;
        for degree in [r"^\circ", r"^{\circ}", r"^ \circ", r"\circ"] {
            if let Some(x) = rest.strip_suffix(degree) {
                rest = x.trim_end();
            }
        }
        let power_stripped = ["^2", "^3", "^{2}", "^{3}"]
            .iter()
            .find_map(|p| rest.strip_suffix(p));
        let word_end = power_stripped.unwrap_or(rest).trim_end();
        // After the last character that cannot be in a unit, which may be
        // more than one byte long.
        let word_start = word_end
            .char_indices()
            .rev()
            .find(|&(_, c)| !(c.is_ascii_alphabetic() || c == '/'))
            .map_or(0, |(k, c)| k + c.len_utf8());
        let word = &word_end[word_start..];
        if !word.is_empty() && UNITS.iter().any(|u| u.eq_ignore_ascii_case(word)) {
            rest = word_end[..word_start].trim_end();
        }
        if rest.len() == before.len() {
            break;
        }
        removed = true;
    }
    (removed && !rest.is_empty()).then_some(rest)
}

/// A comparison key for answers that are not numbers: lower case, no
/// whitespace or grouping braces, and a lone choice letter `(a)` as `a`.
pub fn text_key(s: &str) -> String {
    let key: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '{' && *c != '}')
        .flat_map(char::to_lowercase)
        .collect();
    let b = key.as_bytes();
    if b.len() == 3 && b[0] == b'(' && b[2] == b')' && b[1].is_ascii_alphabetic() {
        return key[1..2].to_owned();
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_removes_notation() {
        assert_eq!(normalize(r"\(\left( 1, 2 \right)\)"), "( 1, 2 )");
        assert_eq!(normalize(r"\text{(B)}"), "(B)");
        assert_eq!(normalize("\u{2212}3"), "-3");
        assert_eq!(normalize(r"5\text{ cm}"), "5  cm");
        assert_eq!(normalize(r"\$5.00"), "$5.00");
        assert_eq!(normalize(r"2\pi"), r"2\pi");
        assert_eq!(normalize(r"\pi r"), r"\pi r");
        assert_eq!(normalize("\\"), "\\");
        assert_eq!(normalize(r"\boxed{"), "");
    }

    #[test]
    fn prefixes_and_suffixes() {
        assert_eq!(strip_var_prefix("x = 3"), "3");
        assert_eq!(strip_var_prefix("y_{1}=3"), "3");
        assert_eq!(strip_var_prefix("2x = 3"), "2x = 3");
        assert_eq!(strip_var_prefix("x = y = 3"), "x = y = 3");
        assert_eq!(strip_percent_currency("50%"), "50");
        assert_eq!(strip_percent_currency("$ 12"), "12");
        assert_eq!(strip_units(r"30^\circ"), Some("30"));
        assert_eq!(strip_units("12 square feet"), Some("12"));
        assert_eq!(strip_units("60 km/h"), Some("60"));
        assert_eq!(strip_units("3x"), None);
        assert_eq!(strip_units("cm"), None);
        // Multi-byte characters before a unit (or none) do not panic.
        assert_eq!(strip_units("\u{fffd}"), None);
        assert_eq!(strip_units("5\u{b7}cm"), Some("5\u{b7}"));
        assert_eq!(text_key(" Yes "), "yes");
        assert_eq!(text_key("(C)"), "c");
    }
}
