//! Numbers for the math judge: exact rationals while the arithmetic stays
//! exact, floating point once it cannot (surds, pi, overflow).
//!
//! Exactness matters for large integers: as `f64`, 12345678901234567890 and
//! 12345678901234567891 are the same number, as rationals they are not.
//! Inexact values compare with a relative tolerance (see [`Num::approx_eq`]).
//!
//! ```
//! use cgpo_judges::math::Num;
//! let half = Num::ratio(1, 2).unwrap();
//! let also_half = Num::decimal("0.5").unwrap();
//! assert!(half.approx_eq(&also_half, 1e-9));
//! let root2 = Num::int(2).sqrt().unwrap();
//! assert!(root2.mul(&root2).unwrap().approx_eq(&Num::int(2), 1e-9));
//! ```

use std::fmt;

/// An exact rational `n / d` (reduced, `d > 0`) or an `f64` approximation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    Exact { n: i128, d: i128 },
    Approx(f64),
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    // Callers keep |a|, |b| < i128::MAX so unsigned_abs never overflows here.
    a = a.abs();
    b = b.abs();
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Num {
    pub fn int(n: i128) -> Self {
        Num::Exact { n, d: 1 }
    }

    /// `n / d`, reduced; `None` when `d == 0`.
    pub fn ratio(n: i128, d: i128) -> Option<Self> {
        if d == 0 || n == i128::MIN || d == i128::MIN {
            return None;
        }
        let g = gcd(n, d).max(1);
        let (n, d) = (n / g, d / g);
        Some(if d < 0 {
            Num::Exact { n: -n, d: -d }
        } else {
            Num::Exact { n, d }
        })
    }

    /// A plain decimal literal such as `12`, `0.50` or `.5`; exact when it
    /// fits in an `i128`, else approximate.
    pub fn decimal(s: &str) -> Option<Self> {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let exact = || {
            let digits = format!("{int}{frac}");
            let n: i128 = if digits.is_empty() {
                0
            } else {
                digits.parse().ok()?
            };
            let d = 10i128.checked_pow(u32::try_from(frac.len()).ok()?)?;
            Num::ratio(n, d)
        };
        exact().or_else(|| s.parse::<f64>().ok().map(Num::Approx))
    }

    pub fn to_f64(self) -> f64 {
        match self {
            Num::Exact { n, d } => n as f64 / d as f64,
            Num::Approx(x) => x,
        }
    }

    /// The value as an integer, when it is an exact one.
    pub fn as_int(self) -> Option<i128> {
        match self {
            Num::Exact { n, d: 1 } => Some(n),
            _ => None,
        }
    }

    fn exact_or(
        self,
        other: Self,
        exact: impl Fn(i128, i128, i128, i128) -> Option<Self>,
        approx: impl Fn(f64, f64) -> f64,
    ) -> Option<Self> {
        if let (Num::Exact { n: a, d: b }, Num::Exact { n: c, d: e }) = (self, other) {
            if let Some(r) = exact(a, b, c, e) {
                return Some(r);
            }
        }
        finite_or_inf(approx(self.to_f64(), other.to_f64()))
    }

    pub fn add(&self, o: &Self) -> Option<Self> {
        self.exact_or(
            *o,
            |a, b, c, d| {
                Num::ratio(
                    a.checked_mul(d)?.checked_add(c.checked_mul(b)?)?,
                    b.checked_mul(d)?,
                )
            },
            |x, y| x + y,
        )
    }

    pub fn neg(&self) -> Self {
        match *self {
            Num::Exact { n, d } if n != i128::MIN => Num::Exact { n: -n, d },
            other => Num::Approx(-other.to_f64()),
        }
    }

    pub fn sub(&self, o: &Self) -> Option<Self> {
        self.add(&o.neg())
    }

    pub fn mul(&self, o: &Self) -> Option<Self> {
        self.exact_or(
            *o,
            |a, b, c, d| Num::ratio(a.checked_mul(c)?, b.checked_mul(d)?),
            |x, y| x * y,
        )
    }

    /// `None` on division by zero: such an answer is not a number.
    pub fn div(&self, o: &Self) -> Option<Self> {
        if o.to_f64() == 0.0 {
            return None;
        }
        self.exact_or(
            *o,
            |a, b, c, d| Num::ratio(a.checked_mul(d)?, b.checked_mul(c)?),
            |x, y| x / y,
        )
    }

    pub fn pow(&self, e: &Self) -> Option<Self> {
        if let (Num::Exact { n, d }, Some(k)) = (*self, e.as_int()) {
            // Small integer exponents stay exact; larger ones overflow anyway.
            if let Ok(k32) = u32::try_from(k.unsigned_abs()) {
                if let (Some(pn), Some(pd)) = (n.checked_pow(k32), d.checked_pow(k32)) {
                    return if k >= 0 {
                        Num::ratio(pn, pd)
                    } else {
                        Num::ratio(pd, pn)
                    };
                }
            }
        }
        finite_or_inf(self.to_f64().powf(e.to_f64()))
    }

    /// The principal square root; exact for squares of rationals, `None`
    /// for negative values (complex answers are compared as text).
    pub fn sqrt(&self) -> Option<Self> {
        if self.to_f64() < 0.0 {
            return None;
        }
        if let Num::Exact { n, d } = *self {
            if let (Some(rn), Some(rd)) = (isqrt(n), isqrt(d)) {
                return Num::ratio(rn, rd);
            }
        }
        finite_or_inf(self.to_f64().sqrt())
    }

    /// The `k`-th root, for `k >= 1`; odd roots of negatives are allowed.
    pub fn root(&self, k: &Self) -> Option<Self> {
        let k = k.as_int().filter(|&k| k >= 1)?;
        if k == 2 {
            return self.sqrt();
        }
        let x = self.to_f64();
        if x < 0.0 && k % 2 == 0 {
            return None;
        }
        let r = x.abs().powf(1.0 / k as f64).copysign(x);
        // Snap to an integer when the root is one, so that \sqrt[3]{8} = 2 exactly.
        let rounded = r.round();
        if rounded.abs() < 1e15 {
            let ri = rounded as i128;
            if let Some(p) = ri.checked_pow(u32::try_from(k).ok()?) {
                if Num::int(p) == *self {
                    return Some(Num::int(ri));
                }
            }
        }
        finite_or_inf(r)
    }

    /// Equal exactly when both are exact, else within a relative tolerance:
    /// `|a - b| <= rel_tol * max(|a|, |b|)`, with an absolute floor of
    /// `rel_tol * 1e-3` so that a value that should be 0 but came out as
    /// 1e-17 still matches 0. Infinities equal only themselves.
    pub fn approx_eq(&self, o: &Self, rel_tol: f64) -> bool {
        if let (Num::Exact { n: a, d: b }, Num::Exact { n: c, d }) = (*self, *o) {
            return a == c && b == d;
        }
        let (x, y) = (self.to_f64(), o.to_f64());
        if x.is_infinite() || y.is_infinite() {
            return x == y;
        }
        let diff = (x - y).abs();
        diff <= rel_tol * x.abs().max(y.abs()) || diff <= rel_tol * 1e-3
    }
}

fn finite_or_inf(x: f64) -> Option<Num> {
    (!x.is_nan()).then_some(Num::Approx(x))
}

/// The exact integer square root of `n`, when `n` is a perfect square.
fn isqrt(n: i128) -> Option<i128> {
    if n < 0 {
        return None;
    }
    let guess = (n as f64).sqrt().round() as i128;
    (guess.saturating_sub(1)..=guess.saturating_add(1))
        .find(|&r| r >= 0 && r.checked_mul(r) == Some(n))
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::Exact { n, d: 1 } => write!(f, "{n}"),
            Num::Exact { n, d } => write!(f, "{n}/{d}"),
            Num::Approx(x) => write!(f, "{x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_arithmetic_reduces_and_overflows_to_approx() {
        let a = Num::ratio(6, -8).unwrap();
        assert_eq!(a, Num::Exact { n: -3, d: 4 });
        assert_eq!(Num::decimal("0.750").unwrap(), Num::Exact { n: 3, d: 4 });
        assert_eq!(
            Num::int(12)
                .sqrt()
                .unwrap()
                .mul(&Num::int(1))
                .unwrap()
                .as_int(),
            None
        );
        assert_eq!(Num::ratio(9, 4).unwrap().sqrt(), Num::ratio(3, 2));
        let big = Num::int(i128::MAX / 2);
        assert!(matches!(big.mul(&big), Some(Num::Approx(_))));
        assert_eq!(Num::int(2).pow(&Num::int(-2)), Num::ratio(1, 4));
        assert_eq!(Num::int(8).root(&Num::int(3)), Some(Num::int(2)));
        assert_eq!(Num::int(-8).root(&Num::int(3)), Some(Num::int(-2)));
        assert_eq!(Num::int(-8).sqrt(), None);
        assert_eq!(Num::int(1).div(&Num::int(0)), None);
    }

    #[test]
    fn large_integers_compare_exactly() {
        let a = Num::decimal("12345678901234567890").unwrap();
        let b = Num::decimal("12345678901234567891").unwrap();
        assert!(!a.approx_eq(&b, 1e-9));
        assert!(Num::Approx(1.0 + 1e-12).approx_eq(&Num::int(1), 1e-9));
        assert!(!Num::Approx(1.0 + 1e-6).approx_eq(&Num::int(1), 1e-9));
        assert!(Num::Approx(f64::INFINITY).approx_eq(&Num::Approx(f64::INFINITY), 1e-9));
        assert!(!Num::Approx(f64::INFINITY).approx_eq(&Num::Approx(f64::NEG_INFINITY), 1e-9));
    }
}
