//! Business calendars: a time zone, weekly working hours (several ranges a
//! day), holidays; or `24x7`. Pure arithmetic over absolute timestamps, with
//! local times resolved through jiff (DST gaps and folds included).

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use std::collections::BTreeSet;
use std::time::Duration;

/// A business calendar.
#[derive(Clone, Debug)]
pub enum Calendar {
    /// Every second counts.
    TwentyFourSeven,
    /// Working hours in a time zone.
    Hours {
        /// The zone the hours are in.
        tz: TimeZone,
        /// Ranges per weekday, Monday first; each `(start, end)`, end after start.
        week: [Vec<(Time, Time)>; 7],
        /// Days without working hours.
        holidays: BTreeSet<Date>,
    },
}

/// How many days to look ahead before giving up (a calendar with no hours at all).
const HORIZON_DAYS: i32 = 3 * 366;

impl Calendar {
    /// The working intervals of one local date, as absolute times.
    fn intervals(&self, date: Date) -> Vec<(Timestamp, Timestamp)> {
        match self {
            Calendar::TwentyFourSeven => Vec::new(),
            Calendar::Hours { tz, week, holidays } => {
                if holidays.contains(&date) {
                    return Vec::new();
                }
                let day = weekday_index(date.weekday());
                week[day]
                    .iter()
                    .filter_map(|(s, e)| {
                        let start = date.to_datetime(*s).to_zoned(tz.clone()).ok()?.timestamp();
                        let end = date.to_datetime(*e).to_zoned(tz.clone()).ok()?.timestamp();
                        (end > start).then_some((start, end))
                    })
                    .collect()
            }
        }
    }

    fn local_date(&self, t: Timestamp) -> Date {
        match self {
            Calendar::TwentyFourSeven => t.to_zoned(TimeZone::UTC).date(),
            Calendar::Hours { tz, .. } => t.to_zoned(tz.clone()).date(),
        }
    }

    /// The moment `business` of working time after `start` has passed.
    /// A zero duration gives `start` itself.
    pub fn add(&self, start: Timestamp, business: Duration) -> Timestamp {
        if let Calendar::TwentyFourSeven = self {
            return add_secs(start, business.as_secs() as i64);
        }
        let mut remaining = business.as_secs() as i64;
        if remaining == 0 {
            return start;
        }
        let mut date = self.local_date(start);
        for _ in 0..HORIZON_DAYS {
            for (s, e) in self.intervals(date) {
                let from = s.max(start);
                if from >= e {
                    continue;
                }
                let available = e.as_second() - from.as_second();
                if remaining <= available {
                    return add_secs(from, remaining);
                }
                remaining -= available;
            }
            date = date.tomorrow().unwrap_or(date);
        }
        add_secs(start, business.as_secs() as i64)
    }

    /// Working time between `a` and `b` (zero when `b` is not after `a`).
    pub fn between(&self, a: Timestamp, b: Timestamp) -> Duration {
        if b <= a {
            return Duration::ZERO;
        }
        if let Calendar::TwentyFourSeven = self {
            return Duration::from_secs((b.as_second() - a.as_second()) as u64);
        }
        let mut total = 0i64;
        let mut date = self.local_date(a);
        let last = self.local_date(b);
        while date <= last {
            for (s, e) in self.intervals(date) {
                let (from, to) = (s.max(a), e.min(b));
                if to > from {
                    total += to.as_second() - from.as_second();
                }
            }
            match date.tomorrow() {
                Ok(d) => date = d,
                Err(_) => break,
            }
        }
        Duration::from_secs(total as u64)
    }
}

fn add_secs(t: Timestamp, secs: i64) -> Timestamp {
    t.checked_add(secs.seconds()).unwrap_or(t)
}

fn weekday_index(w: Weekday) -> usize {
    w.to_monday_zero_offset() as usize
}

/// Parses `"09:00-12:00,13:00-17:00"` into ranges.
pub fn parse_ranges(text: &str) -> Result<Vec<(Time, Time)>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (s, e) = part
            .split_once('-')
            .ok_or_else(|| format!("{part:?}: expected a range like \"09:00-17:00\""))?;
        let parse = |t: &str| -> Result<Time, String> {
            let t = t.trim();
            if t == "24:00" {
                return Ok(Time::MAX);
            }
            t.parse::<Time>().map_err(|_| format!("{t:?} is not a time like 09:00"))
        };
        let (s, e) = (parse(s)?, parse(e)?);
        if e <= s {
            return Err(format!("{part:?}: the end must come after the start"));
        }
        out.push((s, e));
    }
    out.sort();
    for w in out.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(format!("{text:?}: ranges overlap"));
        }
    }
    Ok(out)
}

/// The all-day dates of an iCalendar file's events (`DTSTART;VALUE=DATE:`,
/// with `DTEND` exclusive for several days).
pub fn parse_ics_dates(text: &str) -> Result<Vec<Date>, String> {
    let unfolded = text.replace("\r\n ", "").replace("\n ", "");
    let mut out = Vec::new();
    let mut start: Option<Date> = None;
    let mut end: Option<Date> = None;
    let date_of = |line: &str| -> Option<Date> {
        let v = line.rsplit(':').next()?.trim();
        let v = &v[..v.len().min(8)];
        if v.len() != 8 {
            return None;
        }
        let y: i16 = v[..4].parse().ok()?;
        let m: i8 = v[4..6].parse().ok()?;
        let d: i8 = v[6..8].parse().ok()?;
        Date::new(y, m, d).ok()
    };
    for line in unfolded.lines() {
        let line = line.trim_end();
        if line == "BEGIN:VEVENT" {
            start = None;
            end = None;
        } else if line.starts_with("DTSTART") {
            start = date_of(line);
            if start.is_none() {
                return Err(format!("cannot read {line:?}"));
            }
        } else if line.starts_with("DTEND") {
            end = date_of(line);
        } else if line == "END:VEVENT"
            && let Some(s) = start
        {
            let mut d = s;
            let stop = end.unwrap_or(s.tomorrow().unwrap_or(s));
            loop {
                out.push(d);
                d = d.tomorrow().unwrap_or(stop);
                if d >= stop {
                    break;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn office() -> Calendar {
        let mut week: [Vec<(Time, Time)>; 7] = Default::default();
        for day in week.iter_mut().take(4) {
            *day = parse_ranges("09:00-12:00,13:00-17:00").unwrap();
        }
        week[4] = parse_ranges("09:00-16:00").unwrap();
        Calendar::Hours {
            tz: TimeZone::get("Europe/Berlin").unwrap(),
            week,
            holidays: ["2026-12-24", "2026-12-25", "2026-12-26"]
                .iter()
                .map(|d| d.parse().unwrap())
                .collect(),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn h(hours: f64) -> Duration {
        Duration::from_secs((hours * 3600.0) as u64)
    }

    #[test]
    fn add_table() {
        let c = office();
        // (start UTC, business hours, deadline UTC). Berlin is UTC+1 in winter, UTC+2 in summer.
        let table = [
            // Monday 10:00 local + 1h = 11:00.
            ("2026-11-23T09:00:00Z", 1.0, "2026-11-23T10:00:00Z"),
            // Across lunch: Monday 11:30 + 1h = 13:30.
            ("2026-11-23T10:30:00Z", 1.0, "2026-11-23T12:30:00Z"),
            // Before opening: Monday 07:00 + 1h = 10:00.
            ("2026-11-23T06:00:00Z", 1.0, "2026-11-23T09:00:00Z"),
            // After closing: Monday 18:00 + 1h = Tuesday 10:00.
            ("2026-11-23T17:00:00Z", 1.0, "2026-11-24T09:00:00Z"),
            // Friday 15:30 + 1h: Friday ends at 16:00, Monday 09:30.
            ("2026-11-27T14:30:00Z", 1.0, "2026-11-30T08:30:00Z"),
            // Weekend start: Saturday + 2h = Monday 11:00.
            ("2026-11-28T12:00:00Z", 2.0, "2026-11-30T10:00:00Z"),
            // Spanning days: Monday 09:00 + 8h (7h a day Mon-Thu) = Tuesday 10:00.
            ("2026-11-23T08:00:00Z", 8.0, "2026-11-24T09:00:00Z"),
            // Holidays: Wednesday 23 Dec 16:00 + 2h → 24-26 off, 27 Sunday → Monday 28 Dec 10:00.
            ("2026-12-23T15:00:00Z", 2.0, "2026-12-28T09:00:00Z"),
            // DST starts (29 March 2026, Sunday): Friday 27 March 15:00 + 2h = Monday 10:00 CEST = 08:00Z.
            ("2026-03-27T14:00:00Z", 2.0, "2026-03-30T08:00:00Z"),
            // DST ends (25 October 2026): Friday 23 Oct 15:00 CEST + 2h = Monday 10:00 CET = 09:00Z.
            ("2026-10-23T13:00:00Z", 2.0, "2026-10-26T09:00:00Z"),
            // Zero.
            ("2026-11-28T12:00:00Z", 0.0, "2026-11-28T12:00:00Z"),
        ];
        for (start, hours, want) in table {
            assert_eq!(c.add(ts(start), h(hours)), ts(want), "{start} + {hours}h");
        }
        assert_eq!(
            Calendar::TwentyFourSeven.add(ts("2026-11-28T12:00:00Z"), h(25.0)),
            ts("2026-11-29T13:00:00Z")
        );
    }

    #[test]
    fn between_table() {
        let c = office();
        let table = [
            ("2026-11-23T09:00:00Z", "2026-11-23T10:00:00Z", 1.0),
            ("2026-11-23T10:30:00Z", "2026-11-23T12:30:00Z", 1.0),
            ("2026-11-27T14:30:00Z", "2026-11-30T08:30:00Z", 1.0),
            ("2026-11-28T00:00:00Z", "2026-11-29T23:00:00Z", 0.0),
            ("2026-11-23T10:00:00Z", "2026-11-23T09:00:00Z", 0.0),
        ];
        for (a, b, hours) in table {
            assert_eq!(c.between(ts(a), ts(b)), h(hours), "{a}..{b}");
        }
    }

    #[test]
    fn ranges_and_ics() {
        assert!(parse_ranges("17:00-09:00").is_err());
        assert!(parse_ranges("09:00-12:00,11:00-13:00").is_err());
        assert!(parse_ranges("9am-5pm").is_err());
        assert_eq!(parse_ranges("00:00-24:00").unwrap().len(), 1);
        let ics = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:Christmas\r\nDTSTART;VALUE=DATE:20261224\r\nDTEND;VALUE=DATE:20261227\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20270101\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let dates: Vec<String> = parse_ics_dates(ics).unwrap().iter().map(|d| d.to_string()).collect();
        assert_eq!(dates, vec!["2026-12-24", "2026-12-25", "2026-12-26", "2027-01-01"]);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn a_deadline_never_precedes_its_start(start in 1_700_000_000i64..1_900_000_000, secs in 0u64..2_000_000) {
                let s = Timestamp::from_second(start).unwrap();
                let d = office().add(s, Duration::from_secs(secs));
                prop_assert!(d >= s);
                // And the business time between them is exactly what was asked.
                prop_assert_eq!(office().between(s, d), Duration::from_secs(secs));
            }

            #[test]
            fn pausing_never_shortens_a_deadline(start in 1_700_000_000i64..1_900_000_000, target in 60u64..500_000, pause_at in 0u64..500_000, pause_len in 0i64..1_000_000) {
                let c = office();
                let s = Timestamp::from_second(start).unwrap();
                let due = c.add(s, Duration::from_secs(target));
                let paused = Timestamp::from_second(start + pause_at as i64).unwrap();
                let resumed = Timestamp::from_second(start + pause_at as i64 + pause_len).unwrap();
                let shifted = crate::core::sla::shift_for_pause(&c, due, paused, resumed);
                prop_assert!(shifted >= due);
            }
        }
    }
}
