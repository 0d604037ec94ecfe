//! Wall-clock formatting for message timestamps: `HH:MM` from epoch milliseconds and a UTC offset, written by hand
//! (no chrono, no float formatting) to keep the Wasm small.

/// Formats `epoch_ms` as 24-hour `HH:MM` in the zone `utc_offset_minutes` ahead of UTC.
pub fn hhmm(epoch_ms: i64, utc_offset_minutes: i32) -> String {
    let minutes = epoch_ms.div_euclid(60_000) + i64::from(utc_offset_minutes);
    let of_day = minutes.rem_euclid(24 * 60);
    let (h, m) = (of_day / 60, of_day % 60);
    let mut s = String::with_capacity(5);
    for d in [h / 10, h % 10] {
        s.push(digit(d));
    }
    s.push(':');
    for d in [m / 10, m % 10] {
        s.push(digit(d));
    }
    s
}

fn digit(d: i64) -> char {
    char::from(b'0' + (d.rem_euclid(10) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_times() {
        assert_eq!(hhmm(0, 0), "00:00");
        // 2024-01-02T13:05:59.999Z
        assert_eq!(hhmm(1_704_200_759_999, 0), "13:05");
        assert_eq!(hhmm(1_704_200_700_000 + 54 * 60_000, 0), "13:59");
    }

    #[test]
    fn applies_the_offset_and_wraps_around_midnight() {
        assert_eq!(hhmm(1_704_200_759_999, 120), "15:05");
        assert_eq!(hhmm(1_704_200_759_999, -14 * 60), "23:05");
        assert_eq!(hhmm(1_704_200_759_999, 11 * 60), "00:05");
        assert_eq!(hhmm(1_704_200_759_999, 330), "18:35");
    }

    #[test]
    fn handles_times_before_1970() {
        assert_eq!(hhmm(-60_000, 0), "23:59");
        assert_eq!(hhmm(-1, 0), "23:59");
    }
}
