//! Mix-minus arithmetic: the mixed speakers are summed once into 32-bit accumulators,
//! and each speaker's own mix is that sum minus their own frame, so a tick costs O(K)
//! frame additions for K mixed speakers whatever the number of listeners.
//!
//! A sum of several loud voices exceeds 16 bits. Rather than wrap or hard-clip, every
//! output sample goes through a memoryless soft clipper: the identity up to [`KNEE`]
//! (so a mix that fits is exactly the sum of its inputs), then a `tanh` curve that
//! approaches full scale without reaching it, so loud rooms saturate smoothly.

/// Samples whose magnitude is at most this pass unchanged (about -2.5 dBFS).
pub const KNEE: i32 = 24_576;
/// Headroom between the knee and full scale that the `tanh` curve fills.
const RANGE: f32 = (i16::MAX as i32 - KNEE) as f32;

/// The soft clipper: `x` unchanged while `|x| <= KNEE`, else compressed smoothly into
/// `KNEE..i16::MAX` (monotonic, odd-symmetric, never beyond 16 bits).
#[must_use]
pub fn soft_clip(x: i32) -> i16 {
    if let Ok(small) = i16::try_from(x)
        && i32::from(small).abs() <= KNEE
    {
        return small;
    }
    #[allow(
        clippy::cast_precision_loss,
        reason = "exact below 2^24; sums stay far below"
    )]
    let over = (x.unsigned_abs() - KNEE.unsigned_abs()) as f32 / RANGE;
    #[allow(
        clippy::cast_possible_truncation,
        reason = "KNEE + RANGE * tanh(..) < 32767.5"
    )]
    let y = (KNEE as f32 + RANGE * over.tanh()).round() as i32;
    let y = y.min(i32::from(i16::MAX));
    // y is within 0..=i16::MAX, so both signs fit.
    i16::try_from(if x < 0 { -y } else { y }).unwrap_or(0)
}

/// `acc += frame`, sample by sample (the shorter length wins).
pub fn accumulate(acc: &mut [i32], frame: &[i16]) {
    for (a, &s) in acc.iter_mut().zip(frame) {
        *a += i32::from(s);
    }
}

/// `out = soft_clip(acc)`: the mix of everyone summed.
pub fn clip_into(out: &mut [i16], acc: &[i32]) {
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = soft_clip(a);
    }
}

/// `out = soft_clip(acc - own)`: a speaker's mix-minus, everyone but themselves.
pub fn minus_into(out: &mut [i16], acc: &[i32], own: &[i16]) {
    for ((o, &a), &s) in out.iter_mut().zip(acc).zip(own) {
        *o = soft_clip(a - i32::from(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn below_the_knee_the_mix_is_the_exact_sum() {
        let a = [1000i16, -2000, 3000, 0];
        let b = [500i16, 500, -500, 7];
        let mut acc = [0i32; 4];
        accumulate(&mut acc, &a);
        accumulate(&mut acc, &b);
        let mut out = [0i16; 4];
        clip_into(&mut out, &acc);
        assert_eq!(out, [1500, -1500, 2500, 7]);
        minus_into(&mut out, &acc, &a);
        assert_eq!(out, b);
    }

    #[test]
    fn loud_sums_saturate_below_full_scale() {
        assert_eq!(soft_clip(KNEE), KNEE as i16);
        assert!(soft_clip(KNEE + 1000) > KNEE as i16);
        assert!(soft_clip(KNEE + 1000) < (KNEE + 1000) as i16);
        assert!(soft_clip(10 * 32_767) > 32_000);
        assert_eq!(soft_clip(-10 * 32_767), -soft_clip(10 * 32_767));
        assert_eq!(soft_clip(i32::MIN), -soft_clip(i32::MAX));
    }

    proptest! {
        #[test]
        fn clipper_is_monotonic_and_odd(x in -2_000_000i32..2_000_000) {
            prop_assert!(soft_clip(x) <= soft_clip(x + 1));
            prop_assert_eq!(soft_clip(-x), -soft_clip(x));
            prop_assert!(i32::from(soft_clip(x)).abs() <= x.abs());
        }
    }
}
