//! Schedule expressions (`*/5 * * * *`, `0 30 9 * * 1-5`, `@daily`, `@every 90s`) and the
//! instants at which they fire in a time zone. Pure: no clock, no I/O.
//!
//! # Time semantics
//!
//! * `@every D` fires at the multiples of `D` since the Unix epoch, whatever the time zone.
//! * A cron expression is matched against the wall clock of its time zone, at whole seconds.
//! * A matching wall-clock time that does not exist (spring-forward gap) fires once, at the
//!   first instant after the gap.
//! * A matching wall-clock time that occurs twice (fall-back) fires once, at its first
//!   occurrence. This holds for every expression, `0 * * * *` included: it fires at 01:00 EDT
//!   and then 02:00 EST on the day New York falls back, not at 01:00 EST as well.
//! * Fires strictly increase.
//!
//! # How
//!
//! croner searches *naive* wall-clock time (a `NaiveDateTime`, where no clock ever changes);
//! we map each matching wall-clock time `L` to an instant ourselves with [`resolve`]: the
//! instant itself if unique, the earlier one if repeated, the end of the gap if missing. That
//! map never decreases as `L` grows, so naive order is instant order, and several wall-clock
//! times in one gap collapse onto one instant. croner's own zoned search is not used because
//! its rules differ from ours: it fires interval patterns such as `0 * * * *` on both halves
//! of a repeated hour, and skips patterns that are not a single fixed time (`*/20 * * * *`,
//! `5-10/5 2 * * *`) when their times fall in a gap (see the tests for the evidence).
//!
//! For "fires strictly after `x`" we need the latest wall-clock time whose fire is at or
//! before `x` ([`naive_floor`]): normally `x`'s own wall-clock time, but when `x` lies in the
//! second half of a repeated hour every wall-clock time of that hour fired in its first half,
//! so it is the last second of the repeated range.
//!
//! [`CronSpec::fires_between`] walks backwards from the end of the interval for the newest
//! `limit` fires (croner's backward search, one call per fire), and when there are more, counts
//! the whole interval arithmetically instead of iterating: `@every` by division; a cron
//! expression by adding, per local date that matches, the matching times of day (a product of
//! the matching hours, minutes and seconds, with prefix counts for partial days), and then
//! subtracting the duplicates of each spring-forward gap (all matching wall-clock times of a
//! gap fire at one instant). Gaps are found by probing the zone's offset once per day of the
//! interval and bisecting where it changes; this assumes a zone never changes its offset and
//! changes it back within 24 hours, which no zone does.

use std::time::Duration;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike,
};
use chrono_tz::{GapInfo, Tz};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::model::Time;

pub mod fire;

pub use fire::CATCH_UP_LIMIT;

/// A parsed schedule expression.
#[derive(Debug, Clone)]
pub struct CronSpec {
    /// The text as written, for display and error messages.
    text: String,
    /// What the text means.
    kind: Kind,
}

/// The two kinds of schedule: calendar patterns and fixed intervals.
#[derive(Debug, Clone)]
enum Kind {
    /// A cron expression, matched against local wall-clock time.
    Cron(Box<Expr>),
    /// `@every D`: multiples of `D` (a whole number of seconds, at least one) since the epoch.
    Every(Duration),
}

/// A parsed cron expression with the tables needed to count its fires without iterating.
#[derive(Debug, Clone)]
struct Expr {
    /// The croner pattern, searched on naive wall-clock time.
    cron: Cron,
    /// Prefix counts of the matching hours, minutes and seconds.
    day: DayTable,
}

/// Fires found in an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fires {
    /// The most recent fires of the interval (at most the limit asked for), oldest first: the
    /// ones a catch-up policy enqueues.
    pub times: Vec<Time>,
    /// How many fires the interval holds in all, kept or not.
    pub total: u64,
}

/// Field names and accepted values, in 6-field order, for error messages.
const FIELDS: [(&str, &str); 6] = [
    ("second", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day of week", "0-7 or SUN-SAT"),
];

/// What to write instead, shown when the shape of the expression is wrong.
const FORMS: &str = "write 5 fields `minute hour day-of-month month day-of-week` (e.g. `*/5 * * * *`), \
6 fields with leading seconds (e.g. `30 0 9 * * 1-5`), @hourly, @daily, @weekly, @monthly, \
@yearly, or @every DURATION (e.g. `@every 90s`)";

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Parses a schedule expression; the error is a user-facing message quoting the text.
pub fn parse(text: &str) -> Result<CronSpec, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("empty schedule: {FORMS}"));
    }
    let kind = if let Some(rest) = trimmed.strip_prefix('@') {
        let (word, arg) = match rest.split_once(char::is_whitespace) {
            Some((word, arg)) => (word, arg.trim()),
            None => (rest, ""),
        };
        let word = word.to_ascii_lowercase();
        if word == "every" {
            Kind::Every(parse_every(text, arg)?)
        } else {
            let expansion = match word.as_str() {
                "hourly" => "0 * * * *",
                "daily" => "0 0 * * *",
                "weekly" => "0 0 * * 0",
                "monthly" => "0 0 1 * *",
                "yearly" | "annually" => "0 0 1 1 *",
                _ => {
                    return Err(format!(
                        "`{text}`: unknown shorthand `@{word}` (use @hourly, @daily, @weekly, \
                         @monthly, @yearly, @annually or @every DURATION)"
                    ));
                }
            };
            if !arg.is_empty() {
                return Err(format!("`{text}`: `@{word}` takes nothing after it"));
            }
            Kind::Cron(Box::new(parse_cron(text, expansion)?))
        }
    } else {
        Kind::Cron(Box::new(parse_cron(text, trimmed)?))
    };
    Ok(CronSpec {
        text: text.to_string(),
        kind,
    })
}

/// Parses the duration of `@every`: at least a second, and whole seconds, since fires fall on
/// whole seconds.
fn parse_every(text: &str, arg: &str) -> Result<Duration, String> {
    if arg.is_empty() {
        return Err(format!(
            "`{text}`: @every needs an interval, e.g. `@every 90s` or `@every 1h30m`"
        ));
    }
    let d = crate::units::parse_duration(arg).map_err(|e| format!("`{text}`: {e}"))?;
    if d < Duration::from_secs(1) {
        return Err(format!(
            "`{text}`: the interval must be at least 1s (schedules fire at whole seconds)"
        ));
    }
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "`{text}`: the interval must be a whole number of seconds (schedules fire at whole seconds)"
        ));
    }
    Ok(d)
}

/// The croner parser we use: optional seconds, no year field, Vixie-style OR of day of month
/// and day of week.
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Parses a 5- or 6-field expression, naming the offending field in errors.
fn parse_cron(text: &str, pattern: &str) -> Result<Expr, String> {
    let fields: Vec<&str> = pattern.split_whitespace().collect();
    let names: &[(&str, &str)] = match fields.len() {
        5 => &FIELDS[1..],
        6 => &FIELDS[..],
        7 => {
            return Err(format!(
                "`{text}`: 7 fields: a year field is not supported; {FORMS}"
            ));
        }
        n => return Err(format!("`{text}`: {n} fields; {FORMS}")),
    };
    let offset = 6 - fields.len();
    for (i, (field, (name, range))) in fields.iter().zip(names).enumerate() {
        let position = i + offset;
        let bad = |detail: Option<String>| match detail {
            Some(d) => format!("`{text}`: {name} must be {range} (got `{field}`: {d})"),
            None => format!("`{text}`: {name} must be {range} (got `{field}`)"),
        };
        check_letters(position, field).map_err(bad)?;
        // Parse the field alone, every other field `*`, to tell which one croner objects to.
        let mut probe = ["*"; 6];
        probe[position] = field;
        if let Err(e) = parser().parse(&probe.join(" ")) {
            return Err(bad(croner_detail(&e)));
        }
    }
    let cron = parser()
        .parse(pattern)
        .map_err(|e| format!("`{text}`: {e}"))?;
    // A pattern whose day fields match no date (`0 0 30 2 *`) would make every search run to
    // croner's limit; the calendar repeats every 400 years, so "none by year 5000" is "never".
    let epoch = DateTime::UNIX_EPOCH.naive_utc();
    if cron.find_next_occurrence(&epoch, true).is_err() {
        return Err(format!(
            "`{text}`: never fires (no date matches its day-of-month, month and day-of-week fields)"
        ));
    }
    let day = DayTable::new(&cron);
    Ok(Expr { cron, day })
}

/// Refuses letters where croner would silently read them as names of another field (it
/// replaces `MON` by `1` anywhere in the pattern, so `MON * * * *` would mean minute 1).
fn check_letters(position: usize, field: &str) -> Result<(), Option<String>> {
    let upper = field.to_ascii_uppercase();
    let words = upper
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty());
    for word in words {
        let ok = match position {
            3 => matches!(word, "L" | "W" | "LW"),
            4 => MONTH_NAMES.contains(&word),
            5 => word == "L" || WEEKDAY_NAMES.contains(&word),
            _ => false,
        };
        if !ok {
            return Err(Some(format!("unexpected `{word}`")));
        }
    }
    Ok(())
}

/// Turns croner's error into a short lowercase detail; `None` when it only says "out of
/// bounds", which the accepted range already explains.
fn croner_detail(e: &croner::errors::CronError) -> Option<String> {
    use croner::errors::CronError as E;
    let msg = match e {
        E::ComponentError(m) => m.clone(),
        E::IllegalCharacters(_) => return Some("unexpected character".into()),
        other => other.to_string(),
    };
    if msg.contains("out of bounds") && !msg.contains("Nth") {
        return None;
    }
    let msg = msg.trim_end_matches('.');
    let mut chars = msg.chars();
    Some(match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => msg.to_string(),
    })
}

impl CronSpec {
    /// The original text, as given to [`parse`].
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first fire strictly after `after`: when to wake up next.
    pub fn next_after(&self, tz: Tz, after: Time) -> Option<Time> {
        let after = after.timestamp();
        let secs = match &self.kind {
            Kind::Every(d) => every_next_after(every_secs(*d), after)?,
            Kind::Cron(e) => e.next_after(tz, after)?,
        };
        instant(secs)
    }

    /// The fires in `(from, to]`, keeping the most recent `limit` (oldest first) and counting
    /// them all: what a catch-up after downtime needs. Costs one search per kept fire plus a
    /// count that visits each local date of the interval once, however many fires it holds.
    pub fn fires_between(&self, tz: Tz, from: Time, to: Time, limit: usize) -> Fires {
        let (from, to) = (from.timestamp(), to.timestamp());
        if to <= from {
            return Fires {
                times: Vec::new(),
                total: 0,
            };
        }
        match &self.kind {
            Kind::Every(d) => every_between(every_secs(*d), from, to, limit),
            Kind::Cron(e) => e.between(tz, from, to, limit),
        }
    }

    /// The first `n` fires strictly after `after`, for previews.
    pub fn next_n(&self, tz: Tz, after: Time, n: usize) -> Vec<Time> {
        let mut out = Vec::with_capacity(n.min(1024));
        let mut cur = after;
        while out.len() < n {
            match self.next_after(tz, cur) {
                Some(t) if t > cur => {
                    out.push(t);
                    cur = t;
                }
                _ => break,
            }
        }
        out
    }

    /// The most recent fire at or before `at`: the one a "latest" catch-up runs.
    pub fn last_at_or_before(&self, tz: Tz, at: Time) -> Option<Time> {
        let at = at.timestamp();
        let secs = match &self.kind {
            Kind::Every(d) => every_last_at_or_before(every_secs(*d), at)?,
            Kind::Cron(e) => e.last_at_or_before(tz, at)?,
        };
        instant(secs)
    }
}

// ---------------------------------------------------------------------------------------------
// @every: arithmetic on seconds since the epoch.

/// The interval in seconds; parsing guarantees at least 1 and at most a century.
fn every_secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1)
}

/// The first multiple of `d` strictly after `after`.
fn every_next_after(d: i64, after: i64) -> Option<i64> {
    after.div_euclid(d).checked_add(1)?.checked_mul(d)
}

/// The last multiple of `d` at or before `at`.
fn every_last_at_or_before(d: i64, at: i64) -> Option<i64> {
    at.div_euclid(d).checked_mul(d)
}

/// The multiples of `d` in `(from, to]`, counted by division.
fn every_between(d: i64, from: i64, to: i64, limit: usize) -> Fires {
    let (first_k, last_k) = (from.div_euclid(d), to.div_euclid(d));
    let total = u64::try_from(last_k - first_k).unwrap_or(0);
    let kept = total.min(u64::try_from(limit).unwrap_or(u64::MAX));
    // `kept <= total`, which is a difference of two i64, so it fits.
    let kept = i64::try_from(kept).unwrap_or(0);
    let times = (last_k - kept + 1..=last_k)
        .filter_map(|k| k.checked_mul(d).and_then(instant))
        .collect();
    Fires { times, total }
}

// ---------------------------------------------------------------------------------------------
// Cron expressions: croner on naive wall-clock time, mapped to instants here.

impl Expr {
    /// First fire strictly after the instant `after` (seconds).
    fn next_after(&self, tz: Tz, after: i64) -> Option<i64> {
        let floor = naive_floor(tz, after)?;
        let local = self.cron.find_next_occurrence(&floor, false).ok()?;
        resolve(tz, local)
    }

    /// Latest fire at or before the instant `at` (seconds).
    fn last_at_or_before(&self, tz: Tz, at: i64) -> Option<i64> {
        let floor = naive_floor(tz, at)?;
        let local = self.cron.find_previous_occurrence(&floor, true).ok()?;
        resolve(tz, local)
    }

    /// Fires in `(from, to]` (seconds, `from < to`): newest `limit` by walking backwards, and
    /// the total by counting when the walk stopped at the limit.
    fn between(&self, tz: Tz, from: i64, to: i64, limit: usize) -> Fires {
        let mut times = Vec::new();
        let mut cur = self.last_at_or_before(tz, to);
        while times.len() < limit {
            match cur {
                // Each fire is below the last one; the check only guards against looping.
                Some(t) if t > from && times.last().is_none_or(|&last| t < last) => {
                    times.push(t);
                    cur = self.last_at_or_before(tz, t - 1);
                }
                _ => break,
            }
        }
        let total = if times.len() < limit {
            times.len() as u64
        } else {
            self.count(tz, from, to)
        };
        times.reverse();
        Fires {
            times: times.into_iter().filter_map(instant).collect(),
            total,
        }
    }

    /// How many fires `(from, to]` holds, without visiting them.
    fn count(&self, tz: Tz, from: i64, to: i64) -> u64 {
        let (Some(lo), Some(hi)) = (naive_floor(tz, from), naive_floor(tz, to)) else {
            return 0;
        };
        let mut total = self.count_naive(lo, hi);
        // All matching wall-clock times of a gap, and the wall-clock time the gap ends on,
        // fire at the single instant the gap ends: count them once.
        for (at, before, after) in transitions(tz, from, to) {
            if after <= before {
                continue; // clocks went back: naive counting already counts each time once
            }
            let (Some(gap_start), Some(gap_end)) = (naive_at(at + before), naive_at(at + after))
            else {
                continue;
            };
            let collapsed = self.count_naive(gap_start - chrono::TimeDelta::seconds(1), gap_end);
            total -= collapsed.saturating_sub(1).min(total);
        }
        total
    }

    /// How many wall-clock seconds in `(lo, hi]` match, by local date.
    fn count_naive(&self, lo: NaiveDateTime, hi: NaiveDateTime) -> u64 {
        if hi <= lo {
            return 0;
        }
        let (first, last) = (lo.date(), hi.date());
        let mut total = 0;
        let mut date = first;
        loop {
            if self.date_matches(date) {
                let upper = if date == last {
                    self.day.at_or_before(hi)
                } else {
                    self.day.per_day()
                };
                let lower = if date == first {
                    self.day.at_or_before(lo)
                } else {
                    0
                };
                total += upper - lower;
            }
            if date >= last {
                break;
            }
            match date.succ_opt() {
                Some(next) => date = next,
                None => break,
            }
        }
        total
    }

    /// Whether the day-of-month, month and day-of-week fields match this date.
    fn date_matches(&self, date: NaiveDate) -> bool {
        let p = &self.cron.pattern;
        let weekday = croner::Weekday::from_days_from_sunday(date.weekday().num_days_from_sunday());
        p.month_match(date.month()).unwrap_or(false)
            && p.year_match(date.year()).unwrap_or(false)
            && p.day_match(date.year(), date.month(), date.day(), weekday)
                .unwrap_or(false)
    }
}

/// Prefix counts of matching hours, minutes and seconds: `hours[h]` is how many matching hours
/// are below `h`, and so on.
#[derive(Debug, Clone)]
struct DayTable {
    /// `hours[h]`: matching hours below `h`, for `h` in 0..=24.
    hours: [u64; 25],
    /// `minutes[m]`: matching minutes below `m`, for `m` in 0..=60.
    minutes: [u64; 61],
    /// `seconds[s]`: matching seconds below `s`, for `s` in 0..=60.
    seconds: [u64; 61],
}

impl DayTable {
    /// Reads the matching values of the time-of-day fields from croner.
    fn new(cron: &Cron) -> Self {
        let p = &cron.pattern;
        let mut t = DayTable {
            hours: [0; 25],
            minutes: [0; 61],
            seconds: [0; 61],
        };
        for h in 0..24u32 {
            let m = u64::from(p.hour_match(h).unwrap_or(false));
            t.hours[h as usize + 1] = t.hours[h as usize] + m;
        }
        for v in 0..60u32 {
            let m = u64::from(p.minute_match(v).unwrap_or(false));
            t.minutes[v as usize + 1] = t.minutes[v as usize] + m;
            let s = u64::from(p.second_match(v).unwrap_or(false));
            t.seconds[v as usize + 1] = t.seconds[v as usize] + s;
        }
        t
    }

    /// Matching times in a whole day.
    fn per_day(&self) -> u64 {
        self.hours[24] * self.minutes[60] * self.seconds[60]
    }

    /// Matching times of day at or before the time of `t` (whole seconds).
    fn at_or_before(&self, t: NaiveDateTime) -> u64 {
        let (h, m, s) = (
            t.hour() as usize,
            t.minute() as usize,
            t.second().min(59) as usize,
        );
        let (per_hour, per_minute) = (self.minutes[60] * self.seconds[60], self.seconds[60]);
        let mut n = self.hours[h] * per_hour;
        if self.hours[h + 1] > self.hours[h] {
            n += self.minutes[m] * per_minute;
            if self.minutes[m + 1] > self.minutes[m] {
                n += self.seconds[s + 1];
            }
        }
        n
    }
}

// ---------------------------------------------------------------------------------------------
// Time zone helpers, all in whole seconds since the epoch.

/// The instant at `secs` seconds since the epoch, if representable.
fn instant(secs: i64) -> Option<Time> {
    DateTime::from_timestamp(secs, 0)
}

/// The wall-clock reading `secs` seconds after 1970-01-01 00:00:00 (a naive time as seconds).
fn naive_at(secs: i64) -> Option<NaiveDateTime> {
    instant(secs).map(|t| t.naive_utc())
}

/// The zone's offset from UTC, in seconds, at the instant `secs`.
fn offset(tz: Tz, secs: i64) -> Option<i64> {
    let naive = naive_at(secs)?;
    Some(i64::from(
        tz.offset_from_utc_datetime(&naive).fix().local_minus_utc(),
    ))
}

/// The instant at which a matching wall-clock time fires: itself if it occurs once, its first
/// occurrence if it occurs twice, the end of the gap if it does not occur.
fn resolve(tz: Tz, local: NaiveDateTime) -> Option<i64> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.timestamp()),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.timestamp()),
        LocalResult::None => Some(GapInfo::new(&local, &tz)?.end?.timestamp()),
    }
}

/// The latest wall-clock time whose fire would be at or before the instant `at`: every
/// wall-clock time after it fires after `at`. That is `at`'s own reading, except in the second
/// half of a repeated range, whose readings all fired in the first half: then it is the last
/// second of the range.
fn naive_floor(tz: Tz, at: i64) -> Option<NaiveDateTime> {
    let local = instant(at)?.with_timezone(&tz).naive_local();
    match tz.from_local_datetime(&local) {
        LocalResult::Ambiguous(earlier, later) if later.timestamp() == at => {
            let earlier = earlier.timestamp();
            let before = offset(tz, earlier)?;
            let change = first_change(tz, earlier, at, before)?;
            naive_at(change + before - 1)
        }
        _ => Some(local),
    }
}

/// The first instant in `(lo, hi]` whose offset differs from `before` (the offset at `lo`),
/// by bisection; assumes a single change in the range, and that `hi` is past it.
fn first_change(tz: Tz, lo: i64, hi: i64, before: i64) -> Option<i64> {
    let (mut lo, mut hi) = (lo, hi);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset(tz, mid)? != before {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// The offset changes in `(from, to]` as `(instant, offset before, offset after)`, found by
/// probing once a day and bisecting where the offset differs.
fn transitions(tz: Tz, from: i64, to: i64) -> Vec<(i64, i64, i64)> {
    const DAY: i64 = 86_400;
    let mut out = Vec::new();
    let (mut at, Some(mut before)) = (from, offset(tz, from)) else {
        return out;
    };
    while at < to {
        let probe = at.saturating_add(DAY).min(to);
        let Some(now) = offset(tz, probe) else {
            break;
        };
        if now == before {
            at = probe;
            continue;
        }
        let Some(change) = first_change(tz, at, probe, before) else {
            break;
        };
        let Some(after) = offset(tz, change) else {
            break;
        };
        out.push((change, before, after));
        (at, before) = (change, after);
    }
    out
}

#[cfg(test)]
mod tests;
