//! Parsing a normalised answer into an [`Answer`]: a number, a sequence
//! (tuple, interval, set, bare list) or, failing both, a text key.
//!
//! A small recursive-descent parser over bytes. The grammar, loosest first:
//!
//! ```text
//! answer := item (',' item)*                      -- several items: a bare list
//! item   := open item (',' item)* close | expr    -- open: ( [ \{   close: ) ] \}
//! expr   := term (('+' | '-') term)*
//! term   := unary (('*' | '/' | juxtaposition) unary)*
//! unary  := ('-' | '+') unary | power
//! power  := atom '!'? ('^' (atom | digits | '-' atom))?
//! atom   := number | \pi | \infty | \sqrt[n]{..} | \frac{..}{..} | ( expr ) | { expr }
//! ```
//!
//! Juxtaposition multiplies (`2\sqrt{3}`, `2\pi`) except that an integer
//! followed by `\frac` is a mixed number (`1\frac{1}{2}` = 3/2), and a
//! number directly after a number is an error (no `2 3`). Outside brackets,
//! `1,000` is one thousand; inside brackets a comma always separates items.
//!
//! ```
//! use cgpo_judges::math::{parse_answer, Answer, Num};
//! assert_eq!(parse_answer(r"1\frac{1}{2}"), Answer::Number(Num::ratio(3, 2).unwrap()));
//! assert!(matches!(parse_answer("[0, 1)"), Answer::Seq { .. }));
//! assert_eq!(parse_answer(r"\text{Yes}"), Answer::Text("yes".into()));
//! ```

use super::normalize::{
    normalize, strip_percent_currency, strip_units, strip_var_prefix, text_key,
};
use super::Num;

/// How a sequence is delimited, which decides how it compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `a, b, c` with no brackets: an unordered list of solutions.
    Bare,
    /// `\{a, b\}`: unordered.
    Set,
    /// A tuple or an interval: ordered, and the bracket bytes must match.
    Delimited { open: u8, close: u8 },
}

/// A parsed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Number(Num),
    Seq {
        shape: Shape,
        items: Vec<Answer>,
    },
    /// Not arithmetic: compared by [`text_key`].
    Text(String),
}

/// Parses a raw answer (as written after "The final answer is", or a gold
/// answer). Never fails: what is not arithmetic becomes [`Answer::Text`].
pub fn parse_answer(raw: &str) -> Answer {
    let norm = normalize(raw);
    let core = strip_percent_currency(strip_var_prefix(&norm));
    if let Some(a) = parse_structured(core) {
        return a;
    }
    if let Some(a) = strip_units(core).and_then(parse_structured) {
        return a;
    }
    Answer::Text(text_key(core))
}

fn parse_structured(s: &str) -> Option<Answer> {
    let mut p = Parser {
        b: s.as_bytes(),
        i: 0,
        depth: 0,
        brackets: 0,
    };
    let items = p.items()?;
    p.skip_ws();
    if p.i != p.b.len() {
        return None;
    }
    Some(seq_or_single(Shape::Bare, items))
}

fn seq_or_single(shape: Shape, mut items: Vec<Answer>) -> Answer {
    if items.len() == 1 && shape == Shape::Bare {
        items.pop().unwrap_or(Answer::Text(String::new()))
    } else {
        Answer::Seq { shape, items }
    }
}

/// Deep enough for any real answer; deeper input is rejected, not recursed.
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    /// Recursion depth, bounded by [`MAX_DEPTH`].
    depth: usize,
    /// How many sequence brackets enclose the cursor (commas separate there).
    brackets: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Consumes `\name` when it is next and not followed by more letters.
    fn eat_cmd(&mut self, name: &str) -> bool {
        self.skip_ws();
        let rest = &self.b[self.i..];
        let n = name.len();
        if rest.first() == Some(&b'\\')
            && rest.get(1..=n) == Some(name.as_bytes())
            && !rest.get(n + 1).is_some_and(u8::is_ascii_alphabetic)
        {
            self.i += n + 1;
            true
        } else {
            false
        }
    }

    /// Consumes a bare word (`pi`, `sqrt`, `inf`) not followed by letters.
    fn eat_word(&mut self, word: &str) -> bool {
        self.skip_ws();
        let rest = &self.b[self.i..];
        if rest.starts_with(word.as_bytes())
            && !rest.get(word.len()).is_some_and(u8::is_ascii_alphabetic)
        {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn items(&mut self) -> Option<Vec<Answer>> {
        let mut items = vec![self.item()?];
        while self.eat(b',') {
            items.push(self.item()?);
        }
        Some(items)
    }

    fn item(&mut self) -> Option<Answer> {
        let start = self.i;
        if let Some(seq) = self.nested(Self::bracketed) {
            return Some(seq);
        }
        self.i = start;
        self.expr().map(Answer::Number)
    }

    /// `(a, b)`, `[a, b)`, `\{a\}`...; `None` for a bracket with no comma
    /// directly inside, which is grouping and parsed by `expr` instead.
    fn bracketed(&mut self) -> Option<Answer> {
        self.skip_ws();
        let rest = &self.b[self.i..];
        let (open, skip) = match rest {
            [b'\\', b'{', ..] => (b'{', 2),
            [c @ (b'(' | b'['), ..] => (*c, 1),
            _ => return None,
        };
        if open != b'{' && !has_top_comma(&rest[skip - 1..]) {
            return None;
        }
        self.i += skip;
        self.brackets += 1;
        let items = self.items();
        self.brackets -= 1;
        let items = items?;
        self.skip_ws();
        let shape = if open == b'{' {
            if !self.b[self.i..].starts_with(b"\\}") {
                return None;
            }
            self.i += 2;
            Shape::Set
        } else {
            let close = self.peek().filter(|c| matches!(c, b')' | b']'))?;
            self.i += 1;
            Shape::Delimited { open, close }
        };
        Some(Answer::Seq { shape, items })
    }

    fn expr(&mut self) -> Option<Num> {
        let mut acc = self.term()?;
        loop {
            if self.eat(b'+') {
                acc = acc.add(&self.term()?)?;
            } else if self.eat(b'-') {
                acc = acc.sub(&self.term()?)?;
            } else {
                return Some(acc);
            }
        }
    }

    fn term(&mut self) -> Option<Num> {
        let (mut acc, mut int_literal) = self.unary()?;
        loop {
            if self.eat(b'*') {
                acc = acc.mul(&self.unary()?.0)?;
            } else if self.eat(b'/') {
                acc = acc.div(&self.unary()?.0)?;
            } else if self.starts_atom() {
                let before = self.i;
                if int_literal && self.eat_cmd("frac") {
                    self.i = before;
                    let frac = self.power()?.0;
                    // A mixed number takes the sign of its whole part: -1 1/2 = -3/2.
                    acc = if acc.to_f64() < 0.0 {
                        acc.sub(&frac)?
                    } else {
                        acc.add(&frac)?
                    };
                } else {
                    acc = acc.mul(&self.unary()?.0)?;
                }
            } else {
                return Some(acc);
            }
            int_literal = false;
        }
    }

    /// Can juxtaposition continue here? Not before a digit: `2 3` is no number.
    fn starts_atom(&mut self) -> bool {
        match self.peek() {
            Some(b'(' | b'{') => true,
            Some(b'\\') => !self.b[self.i..].starts_with(b"\\}"),
            Some(b'p' | b's') => {
                self.b[self.i..].starts_with(b"pi") || self.b[self.i..].starts_with(b"sqrt")
            }
            _ => false,
        }
    }

    /// The value, and whether it was a bare (possibly signed) integer literal.
    fn unary(&mut self) -> Option<(Num, bool)> {
        if self.eat(b'-') {
            let (v, lit) = self.nested(Self::unary)?;
            Some((v.neg(), lit))
        } else if self.eat(b'+') {
            self.nested(Self::unary)
        } else {
            self.power()
        }
    }

    fn power(&mut self) -> Option<(Num, bool)> {
        let (mut base, mut lit) = self.atom()?;
        if self.eat(b'!') {
            base = factorial(base)?;
            lit = false;
        }
        if self.eat(b'^') {
            if self.eat_cmd("circ") {
                // Degrees inside a tuple or expression: the value is unchanged.
                return Some((base, false));
            }
            let exp = if self.eat(b'-') {
                self.nested(Self::atom)?.0.neg()
            } else {
                self.nested(Self::atom)?.0
            };
            return Some((base.pow(&exp)?, false));
        }
        Some((base, lit))
    }

    fn atom(&mut self) -> Option<(Num, bool)> {
        match self.peek()? {
            b'0'..=b'9' | b'.' => {
                let n = self.number()?;
                Some((n, n.as_int().is_some()))
            }
            b'(' => {
                self.i += 1;
                let v = self.nested(Self::expr)?;
                self.eat(b')').then_some((v, false))
            }
            b'{' => {
                self.i += 1;
                let v = self.nested(Self::expr)?;
                self.eat(b'}').then_some((v, false))
            }
            _ => self.constant_or_function().map(|v| (v, false)),
        }
    }

    fn constant_or_function(&mut self) -> Option<Num> {
        if self.eat_cmd("pi") || self.eat_word("pi") {
            Some(Num::Approx(std::f64::consts::PI))
        } else if self.eat_cmd("infty") || self.eat_word("infinity") || self.eat_word("inf") {
            Some(Num::Approx(f64::INFINITY))
        } else if self.eat_cmd("frac") {
            let num = self.nested(Self::arg)?;
            let den = self.nested(Self::arg)?;
            num.div(&den)
        } else if self.eat_cmd("sqrt") {
            if self.eat(b'[') {
                let k = self.nested(Self::expr)?;
                if !self.eat(b']') {
                    return None;
                }
                self.nested(Self::arg)?.root(&k)
            } else {
                self.nested(Self::arg)?.sqrt()
            }
        } else if self.eat_word("sqrt") {
            self.nested(Self::atom)?.0.sqrt()
        } else {
            None
        }
    }

    /// A command argument: `{expr}`, or a single digit or command as in `\frac34`.
    fn arg(&mut self) -> Option<Num> {
        match self.peek()? {
            b'{' => {
                self.i += 1;
                let v = self.expr()?;
                self.eat(b'}').then_some(v)
            }
            d @ b'0'..=b'9' => {
                self.i += 1;
                Some(Num::int(i128::from(d - b'0')))
            }
            b'\\' => self.constant_or_function(),
            _ => None,
        }
    }

    /// A decimal literal; outside brackets, `d,ddd` groups are thousands.
    fn number(&mut self) -> Option<Num> {
        let start = self.i;
        let mut digits = String::new();
        let mut run = 0;
        let b = self.b;
        while self.i < b.len() {
            let c = b[self.i];
            if c.is_ascii_digit() {
                digits.push(c as char);
                run += 1;
                self.i += 1;
            } else if c == b','
                && self.brackets == 0
                && (1..=3).contains(&run)
                && b.len() >= self.i + 4
                && b[self.i + 1..self.i + 4].iter().all(u8::is_ascii_digit)
                && !b.get(self.i + 4).is_some_and(u8::is_ascii_digit)
                && (digits.len() == run || run == 3)
            {
                self.i += 1;
                run = 0;
            } else {
                break;
            }
        }
        if self.b.get(self.i) == Some(&b'.') {
            digits.push('.');
            self.i += 1;
            while let Some(c) = self.b.get(self.i).filter(|c| c.is_ascii_digit()) {
                digits.push(*c as char);
                self.i += 1;
            }
        }
        if self.i == start {
            return None;
        }
        Num::decimal(&digits)
    }
}

/// Whether the bracket opening `s` holds a comma at its own level, i.e. is
/// a sequence rather than grouping. Bracket kinds may differ (`[0, 1)`).
fn has_top_comma(s: &[u8]) -> bool {
    let mut depth = 0usize;
    for &c in s {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return false;
                }
            }
            b',' if depth == 1 => return true,
            _ => {}
        }
    }
    false
}

fn factorial(n: Num) -> Option<Num> {
    let k = n.as_int().filter(|k| (0..=33).contains(k))?;
    (1..=k).try_fold(1i128, i128::checked_mul).map(Num::int)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Option<f64> {
        match parse_answer(s) {
            Answer::Number(n) => Some(n.to_f64()),
            _ => None,
        }
    }

    #[test]
    fn arithmetic_and_latex() {
        assert_eq!(num(r"\frac34"), Some(0.75));
        assert_eq!(num(r"\frac{\sqrt{16}}{2}"), Some(2.0));
        assert_eq!(num(r"-1\frac{1}{2}"), Some(-1.5));
        assert_eq!(num(r"2^{10}"), Some(1024.0));
        assert_eq!(num("2^-1"), Some(0.5));
        assert_eq!(num("5!"), Some(120.0));
        assert_eq!(num(r"\sqrt[3]{27}"), Some(3.0));
        assert_eq!(num("(1+2)*3"), Some(9.0));
        assert_eq!(num("1,234,567.5"), Some(1_234_567.5));
        assert_eq!(num("2 3"), None);
        assert_eq!(num("1/0"), None);
    }

    #[test]
    fn sequences_and_text() {
        let interval = parse_answer(r"(-\infty, 3]");
        assert!(matches!(
            interval,
            Answer::Seq { shape: Shape::Delimited { open: b'(', close: b']' }, ref items } if items.len() == 2
        ));
        assert!(matches!(
            parse_answer(r"\{1, 2\}"),
            Answer::Seq {
                shape: Shape::Set,
                ..
            }
        ));
        assert!(matches!(
            parse_answer("1, 2"),
            Answer::Seq {
                shape: Shape::Bare,
                ..
            }
        ));
        assert!(matches!(parse_answer("(100,200)"), Answer::Seq { .. }));
        assert_eq!(parse_answer("x^2 + 1"), Answer::Text("x^2+1".into()));
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(matches!(parse_answer(&deep), Answer::Text(_)));
        let deep_minus = "-".repeat(10_000) + "1";
        assert!(matches!(parse_answer(&deep_minus), Answer::Text(_)));
    }
}
