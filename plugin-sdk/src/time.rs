//! Calendar arithmetic for timestamps as milliseconds since the Unix epoch
//! (UTC), the unit of an event's time: the proleptic Gregorian calendar of
//! RFC 3339 (§5.7), no time zone database, no allocation.
//!
//! The day counts are Howard Hinnant's `days_from_civil` and
//! `civil_from_days` ("chrono-Compatible Low-Level Date Algorithms"): years
//! counted in 400-year eras that start in March, so that a leap day is an
//! era year's last.

/// Days from 1970-01-01 to `y-m-d` (negative before it). `m` is 1–12 and `d`
/// a day of that month; other values give a meaningless count (see
/// [`utc_ms`] for a checked date).
#[inline]
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month 1–12, day 1–31)` of a day count from 1970-01-01:
/// the inverse of [`days_from_civil`].
#[inline]
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days in month `m` (1–12) of year `y`; 28 for any other `m` (check it
/// first).
#[inline]
pub fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Milliseconds since the epoch of a UTC date and time, checked: month
/// 1–12, a day of that month, hour 0–23, minute 0–59, second 0–60 (a leap
/// second, RFC 3339 §5.7, is read as the next second's start, as chrono's
/// `timestamp_millis` reads it); `ms` is added as it is. `None` for a date
/// or time out of those ranges.
#[inline]
pub fn utc_ms(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64, ms: i64) -> Option<i64> {
    if !(1..=12).contains(&mo)
        || d < 1
        || d > days_in_month(y, mo)
        || !(0..24).contains(&h)
        || !(0..60).contains(&mi)
        || !(0..=60).contains(&s)
    {
        return None;
    }
    Some((((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + s) * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every day of 0000–9999 there and back, one after the other, and
    /// known dates.
    #[test]
    fn day_counts_round_trip() {
        let first = days_from_civil(0, 1, 1);
        let mut expected = (0, 1, 1);
        for z in first..days_from_civil(10_000, 1, 1) {
            assert_eq!(civil_from_days(z), expected, "{z}");
            assert_eq!(days_from_civil(expected.0, expected.1, expected.2), z);
            let (y, m, d) = expected;
            expected = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(utc_ms(2013, 1, 1, 10, 17, 0, 0), Some(1_357_035_420_000));
        assert_eq!(utc_ms(2013, 2, 29, 0, 0, 0, 0), None);
        assert_eq!(utc_ms(2012, 2, 29, 0, 0, 0, 0), Some(1_330_473_600_000));
        assert_eq!(utc_ms(1969, 12, 31, 23, 59, 60, 0), Some(0));
        assert_eq!(utc_ms(2013, 1, 1, 24, 0, 0, 0), None);
    }
}
