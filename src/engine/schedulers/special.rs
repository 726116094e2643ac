//! The two pieces of numerical analysis diffusers borrows from scipy: the beta distribution's
//! quantile (`scipy.stats.beta.ppf`, for beta sigmas) and a definite integral
//! (`scipy.integrate.quad`, for LMS coefficients). Both are computed to near double precision.

/// `ln Γ(x)` for x > 0 (Lanczos, g = 7, nine terms: relative error about 1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEFFS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the series in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + G + 0.5;
    let series = COEFFS[1..]
        .iter()
        .enumerate()
        .fold(COEFFS[0], |acc, (i, c)| acc + c / (x + (i + 1) as f64));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..10_000 {
        let m = m as f64;
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        for coeff in [even, odd] {
            d = 1.0 + coeff * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + coeff / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// The regularized incomplete beta function I_x(a, b), for a, b > 0.
pub fn regularized_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (-x).ln_1p();
    // The fraction converges fast below the mean; above it, use I_x(a, b) = 1 - I_(1-x)(b, a).
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(1.0 - x, b, a) / b
    }
}

/// The quantile of the Beta(a, b) distribution: the x in [0, 1] with I_x(a, b) = q.
///
/// Bisection to the last bit: the CDF is monotone, so this cannot fail, and with at most about
/// 1100 evaluations per call it is fast enough for sigma schedules.
pub fn beta_ppf(q: f64, a: f64, b: f64) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q <= 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return 1.0;
    }
    // Solve in the smaller tail, where the answer has the most relative precision.
    let (target, a, b, mirrored) = if q > 0.5 {
        (1.0 - q, b, a, true)
    } else {
        (q, a, b, false)
    };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    loop {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if regularized_beta(mid, a, b) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let x = 0.5 * (lo + hi);
    if mirrored {
        1.0 - x
    } else {
        x
    }
}

/// Nodes and weights of n-point Gauss–Legendre quadrature on [-1, 1].
fn gauss_legendre_rule(n: usize) -> Vec<(f64, f64)> {
    let pi = std::f64::consts::PI;
    (0..n)
        .map(|i| {
            // Newton's method on P_n from the usual cosine guess.
            let mut x = (pi * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
            let mut derivative = 1.0;
            for _ in 0..100 {
                let (mut p0, mut p1) = (1.0, x);
                for k in 2..=n {
                    let k = k as f64;
                    let p2 = ((2.0 * k - 1.0) * x * p1 - (k - 1.0) * p0) / k;
                    p0 = p1;
                    p1 = p2;
                }
                let pn = if n == 0 { 1.0 } else { p1 };
                let pn_1 = if n == 0 { 0.0 } else { p0 };
                derivative = n as f64 * (x * pn - pn_1) / (x * x - 1.0);
                let step = pn / derivative;
                x -= step;
                if step.abs() < 1e-16 {
                    break;
                }
            }
            (x, 2.0 / ((1.0 - x * x) * derivative * derivative))
        })
        .collect()
}

/// ∫_a^b f by 20-point Gauss–Legendre quadrature: exact for polynomials up to degree 39, so
/// exact (to rounding) for LMS's Lagrange basis polynomials.
pub fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    let half = 0.5 * (b - a);
    let mid = 0.5 * (a + b);
    gauss_legendre_rule(20)
        .into_iter()
        .map(|(x, w)| w * f(mid + half * x))
        .sum::<f64>()
        * half
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials_and_half_integers() {
        let mut factorial = 1.0f64;
        for n in 1..20 {
            assert!((ln_gamma(n as f64) - factorial.ln()).abs() < 1e-12, "{n}");
            factorial *= n as f64;
        }
        let sqrt_pi = std::f64::consts::PI.sqrt();
        assert!((ln_gamma(0.5) - sqrt_pi.ln()).abs() < 1e-13);
        assert!((ln_gamma(1.5) - (0.5 * sqrt_pi).ln()).abs() < 1e-13);
    }

    #[test]
    fn incomplete_beta_has_closed_forms_where_known() {
        // I_x(1, 1) = x; I_x(a, 1) = x^a; I_x(1/2, 1/2) = (2/π) asin(√x).
        for x in [1e-9, 0.01, 0.3, 0.5, 0.77, 0.999_999] {
            assert!((regularized_beta(x, 1.0, 1.0) - x).abs() < 1e-14, "{x}");
            assert!(
                (regularized_beta(x, 0.6, 1.0) - x.powf(0.6)).abs() < 1e-14,
                "{x}"
            );
            let arcsine = 2.0 / std::f64::consts::PI * x.sqrt().asin();
            assert!(
                (regularized_beta(x, 0.5, 0.5) - arcsine).abs() < 1e-13,
                "{x}"
            );
        }
    }

    #[test]
    fn beta_ppf_inverts_the_cdf() {
        for q in [
            0.0, 1e-12, 1e-3, 0.1, 0.25, 0.5, 0.6, 0.9, 0.999, 0.9999, 1.0,
        ] {
            let x = beta_ppf(q, 0.6, 0.6);
            assert!((0.0..=1.0).contains(&x));
            assert!(
                // Near 1, x itself is only resolved to a double's spacing.
                (regularized_beta(x, 0.6, 0.6) - q).abs() < 1e-12,
                "{q}: {x}"
            );
        }
        // Symmetric: the median is one half, and ppf(q) = 1 - ppf(1 - q).
        assert!((beta_ppf(0.5, 0.6, 0.6) - 0.5).abs() < 1e-15);
        assert!((beta_ppf(0.2, 0.6, 0.6) + beta_ppf(0.8, 0.6, 0.6) - 1.0).abs() < 1e-14);
        // Arcsine distribution: ppf(q) = sin²(πq/2).
        let q: f64 = 0.3;
        let exact = (std::f64::consts::PI * q / 2.0).sin().powi(2);
        assert!((beta_ppf(q, 0.5, 0.5) - exact).abs() < 1e-14);
    }

    #[test]
    fn quadrature_integrates_polynomials_and_smooth_functions() {
        let cubic = |t: f64| (t - 0.3) * (t + 2.0) * (t - 5.5);
        let antiderivative = |t: f64| {
            // Expanded: t³ - 3.8t² - 9.95t + 3.3.
            t.powi(4) / 4.0 - 3.8 * t.powi(3) / 3.0 - 9.95 * t * t / 2.0 + 3.3 * t
        };
        let (a, b) = (14.6, 9.72);
        let exact = antiderivative(b) - antiderivative(a);
        assert!((integrate(cubic, a, b) - exact).abs() < 1e-10 * exact.abs());
        assert!((integrate(f64::exp, 0.0, 1.0) - (1f64.exp() - 1.0)).abs() < 1e-14);
    }
}
