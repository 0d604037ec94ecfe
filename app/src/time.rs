//! Time formatting from epoch milliseconds with integer math (no chrono, no float formatting: keeps the Wasm small).
//!
//! Callers pass the UTC offset in minutes; the browser's own offset comes from `js_sys::Date` in `live.rs`, the
//! visitor's from their widget. Server-side rendering uses offset 0 until the page hydrates.

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// A calendar date and wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
}

/// Splits epoch ms shifted by `offset_minutes` into a civil date and time (Howard Hinnant's days-to-civil).
pub fn civil(ms: i64, offset_minutes: i32) -> Civil {
    let local = ms + i64::from(offset_minutes) * MINUTE;
    let days = local.div_euclid(DAY);
    let in_day = local.rem_euclid(DAY);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil { year, month, day, hour: (in_day / HOUR) as u32, minute: ((in_day % HOUR) / MINUTE) as u32 }
}

/// "14:05".
pub fn clock(ms: i64, offset_minutes: i32) -> String {
    let c = civil(ms, offset_minutes);
    format!("{:02}:{:02}", c.hour, c.minute)
}

/// "Nov 25" (with the year when it is not `now`'s year).
pub fn date(ms: i64, now: i64, offset_minutes: i32) -> String {
    let c = civil(ms, offset_minutes);
    let month = MONTHS.get(c.month as usize - 1).copied().unwrap_or("?");
    if c.year == civil(now, offset_minutes).year {
        format!("{month} {}", c.day)
    } else {
        format!("{month} {}, {}", c.day, c.year)
    }
}

/// A message's time: "14:05" today, "Nov 24, 14:05" otherwise.
pub fn message_time(ms: i64, now: i64, offset_minutes: i32) -> String {
    let same_day = civil(ms, offset_minutes).day == civil(now, offset_minutes).day && (now - ms).abs() < DAY;
    if same_day {
        clock(ms, offset_minutes)
    } else {
        format!("{}, {}", date(ms, now, offset_minutes), clock(ms, offset_minutes))
    }
}

/// Short age for the inbox: "now", "5m", "3h", "2d", then the date.
pub fn ago(ms: i64, now: i64, offset_minutes: i32) -> String {
    let age = now - ms;
    if age < MINUTE {
        "now".to_owned()
    } else if age < HOUR {
        format!("{}m", age / MINUTE)
    } else if age < DAY {
        format!("{}h", age / HOUR)
    } else if age < 7 * DAY {
        format!("{}d", age / DAY)
    } else {
        date(ms, now, offset_minutes)
    }
}

/// A duration for countdowns: "45 min", "5 h 20 min", "3 d 4 h".
/// The Messenger reply window open now, in words, e.g. "Open, 3 h 20 min left".
pub fn messenger_window(m: &protocol::console::MessengerInfo, now: i64) -> String {
    match (m.response_until, m.human_agent_until) {
        (Some(until), _) if until > now => format!("Open, {} left", remaining(until - now)),
        (_, Some(until)) if until > now => {
            format!("Human agent replies only, {} left", remaining(until - now))
        }
        _ => "Closed: the customer has to write first".to_owned(),
    }
}

pub fn remaining(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < HOUR {
        format!("{} min", (ms / MINUTE).max(1))
    } else if ms < DAY {
        format!("{} h {} min", ms / HOUR, (ms % HOUR) / MINUTE)
    } else {
        format!("{} d {} h", ms / DAY, (ms % DAY) / HOUR)
    }
}

/// Machine-readable UTC timestamp for `<time datetime>`: "2026-11-25T14:05Z".
pub fn iso(ms: i64) -> String {
    let c = civil(ms, 0);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}Z", c.year, c.month, c.day, c.hour, c.minute)
}

/// "UTC+05:30" / "UTC−03:00" / "UTC".
pub fn offset_label(offset_minutes: i32) -> String {
    if offset_minutes == 0 {
        return "UTC".to_owned();
    }
    let sign = if offset_minutes < 0 { '−' } else { '+' };
    let abs = offset_minutes.unsigned_abs();
    format!("UTC{sign}{:02}:{:02}", abs / 60, abs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-25T14:05:00Z
    const T: i64 = 1_795_615_500_000;

    #[test]
    fn civil_matches_known_dates() {
        assert_eq!(civil(0, 0), Civil { year: 1970, month: 1, day: 1, hour: 0, minute: 0 });
        assert_eq!(civil(T, 0), Civil { year: 2026, month: 11, day: 25, hour: 14, minute: 5 });
        // 2024-02-29T23:59Z
        assert_eq!(civil(1_709_251_140_000, 0), Civil { year: 2024, month: 2, day: 29, hour: 23, minute: 59 });
        assert_eq!(civil(-MINUTE, 0), Civil { year: 1969, month: 12, day: 31, hour: 23, minute: 59 });
    }

    #[test]
    fn offsets_shift_the_wall_clock() {
        assert_eq!(clock(T, 60), "15:05");
        assert_eq!(clock(T, -15 * 60), "23:05");
        assert_eq!(date(T, T, 11 * 60), "Nov 26");
        assert_eq!(offset_label(330), "UTC+05:30");
        assert_eq!(offset_label(-180), "UTC−03:00");
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(ago(T, T + 30_000, 0), "now");
        assert_eq!(ago(T, T + 5 * MINUTE, 0), "5m");
        assert_eq!(ago(T, T + 3 * HOUR, 0), "3h");
        assert_eq!(ago(T, T + 2 * DAY, 0), "2d");
        assert_eq!(ago(T, T + 30 * DAY, 0), "Nov 25");
        assert_eq!(ago(T, T + 400 * DAY, 0), "Nov 25, 2026");
    }

    #[test]
    fn message_times_add_the_date_when_not_today() {
        assert_eq!(message_time(T, T + HOUR, 0), "14:05");
        assert_eq!(message_time(T, T + DAY, 0), "Nov 25, 14:05");
        assert_eq!(iso(T), "2026-11-25T14:05Z");
        assert_eq!(remaining(30_000), "1 min");
        assert_eq!(remaining(5 * HOUR + 20 * MINUTE), "5 h 20 min");
        assert_eq!(remaining(3 * DAY + 4 * HOUR), "3 d 4 h");
    }
}
