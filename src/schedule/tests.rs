//! Schedule tests: parsing, the DST rules in several zones, counting, and property tests
//! against a brute-force oracle that steps through instants one by one.

use super::*;
use chrono::{TimeDelta, Utc};
use proptest::prelude::*;
use std::time::Instant;

fn zone(name: &str) -> Tz {
    name.parse().expect("known zone")
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Time {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("valid UTC time")
}

fn spec(text: &str) -> CronSpec {
    parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn next_n(text: &str, tz: &str, after: Time, n: usize) -> Vec<Time> {
    spec(text).next_n(zone(tz), after, n)
}

fn secs(d: TimeDelta) -> Time {
    DateTime::UNIX_EPOCH + d
}

// ------------------------------------------------------------------------------------------
// Parsing

#[test]
fn parse_accepts_the_documented_forms() {
    for text in [
        "*/5 * * * *",
        "0 9 * * MON-FRI",
        "  0 9 * * mon-fri  ",
        "0 0 * JAN,JUL SUN",
        "30 0 9 * * 1-5",
        "*/10 * * * * *",
        "0 0 L * *",
        "0 0 15W * *",
        "0 0 * * 5L",
        "0 0 * * MON#2",
        "0 0 13 * +5",
        "@hourly",
        "@daily",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "@DAILY",
        "@every 1s",
        "@every 90s",
        "@every 1h30m",
        "@every 1d",
    ] {
        assert!(parse(text).is_ok(), "{text}: {:?}", parse(text).err());
    }
}

#[test]
fn as_str_is_the_original_text() {
    assert_eq!(spec("*/5 * * * *").as_str(), "*/5 * * * *");
    assert_eq!(spec("@every 1h30m").as_str(), "@every 1h30m");
    assert_eq!(spec(" @daily").as_str(), " @daily");
}

#[test]
fn parse_rejects_with_readable_messages() {
    let cases = [
        ("", "empty schedule"),
        ("   ", "empty schedule"),
        ("61 * * * *", "`61 * * * *`: minute must be 0-59 (got `61`)"),
        ("* 24 * * *", "hour must be 0-23 (got `24`)"),
        ("* * 0 * *", "day of month must be 1-31 (got `0`)"),
        ("* * 32 * *", "day of month must be 1-31"),
        ("* * * 13 *", "month must be 1-12 or JAN-DEC (got `13`)"),
        ("* * * * 8", "day of week must be 0-7 or SUN-SAT (got `8`)"),
        ("60 * * * * *", "second must be 0-59 (got `60`)"),
        (
            "*/0 * * * *",
            "minute must be 0-59 (got `*/0`: step cannot be zero)",
        ),
        (
            "5/10 * * * *",
            "minute must be 0-59 (got `5/10`: invalid step syntax",
        ),
        ("a * * * *", "minute must be 0-59 (got `a`: unexpected `A`)"),
        ("MON * * * *", "minute must be 0-59 (got `MON`"),
        ("* * * MON *", "month must be 1-12 or JAN-DEC (got `MON`"),
        (
            "* * * * JAN",
            "day of week must be 0-7 or SUN-SAT (got `JAN`",
        ),
        ("* * * JANX *", "month must be 1-12 or JAN-DEC (got `JANX`"),
        (
            "* * * * MON#6",
            "day of week must be 0-7 or SUN-SAT (got `MON#6`: nth",
        ),
        ("1-0 * * * *", "minute must be 0-59 (got `1-0`"),
        ("* * * * * * 2026", "a year field is not supported"),
        ("* * *", "`* * *`: 3 fields; write 5 fields"),
        ("* * * * * * * *", "8 fields; write 5 fields"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
        ("@midnight", "unknown shorthand `@midnight`"),
        ("@reboot", "unknown shorthand"),
        ("@daily 5", "takes nothing after it"),
        ("@every", "@every needs an interval"),
        ("@every 0s", "at least 1s"),
        ("@every 500ms", "at least 1s"),
        ("@every 1500ms", "whole number of seconds"),
        ("@every soon", "`@every soon`: `soon` is not a duration"),
        ("@every 90", "has no unit"),
    ];
    for (text, want) in cases {
        match parse(text) {
            Ok(_) => panic!("{text:?} should be rejected"),
            Err(e) => assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}"),
        }
    }
}

#[test]
fn wrong_field_count_lists_the_accepted_forms() {
    let e = parse("0 0 *").unwrap_err();
    for form in [
        "5 fields",
        "6 fields",
        "@hourly",
        "@daily",
        "@every DURATION",
    ] {
        assert!(e.contains(form), "{e}");
    }
}

// ------------------------------------------------------------------------------------------
// DST: America/New_York (2026-03-08 02:00 EST -> 03:00 EDT, 2026-11-01 02:00 EDT -> 01:00 EST)

#[test]
fn new_york_spring_gap_fires_once_after_the_gap() {
    assert_eq!(
        next_n(
            "30 2 * * *",
            "America/New_York",
            utc(2026, 3, 7, 12, 0, 0),
            3
        ),
        [
            utc(2026, 3, 8, 7, 0, 0), // 03:00 EDT: 02:30 does not exist
            utc(2026, 3, 9, 6, 30, 0),
            utc(2026, 3, 10, 6, 30, 0),
        ]
    );
}

#[test]
fn new_york_fall_back_fires_once_at_the_first_occurrence() {
    let tz = "America/New_York";
    assert_eq!(
        next_n("30 1 * * *", tz, utc(2026, 10, 31, 12, 0, 0), 2),
        [utc(2026, 11, 1, 5, 30, 0), utc(2026, 11, 2, 6, 30, 0)]
    );
    // From inside the repeated hour (01:15 EST), the 01:30 of that day has already fired.
    assert_eq!(
        next_n("30 1 * * *", tz, utc(2026, 11, 1, 6, 15, 0), 1),
        [utc(2026, 11, 2, 6, 30, 0)]
    );
    // Exactly at the first occurrence: the next is the following day.
    assert_eq!(
        next_n("30 1 * * *", tz, utc(2026, 11, 1, 5, 30, 0), 1),
        [utc(2026, 11, 2, 6, 30, 0)]
    );
}

#[test]
fn new_york_hourly_across_both_transitions() {
    let tz = "America/New_York";
    // Spring: 00:00 EST, 01:00 EST, then 02:00 does not exist and 03:00 EDT fires once.
    assert_eq!(
        next_n("0 * * * *", tz, utc(2026, 3, 8, 4, 30, 0), 4),
        [
            utc(2026, 3, 8, 5, 0, 0),
            utc(2026, 3, 8, 6, 0, 0),
            utc(2026, 3, 8, 7, 0, 0),
            utc(2026, 3, 8, 8, 0, 0),
        ]
    );
    // Fall: 00:00 EDT, 01:00 EDT, (01:00 EST is a repeat: skipped), 02:00 EST.
    assert_eq!(
        next_n("0 * * * *", tz, utc(2026, 11, 1, 3, 30, 0), 4),
        [
            utc(2026, 11, 1, 4, 0, 0),
            utc(2026, 11, 1, 5, 0, 0),
            utc(2026, 11, 1, 7, 0, 0),
            utc(2026, 11, 1, 8, 0, 0),
        ]
    );
    assert_eq!(
        next_n("@hourly", tz, utc(2026, 11, 1, 3, 30, 0), 4),
        next_n("0 * * * *", tz, utc(2026, 11, 1, 3, 30, 0), 4)
    );
}

#[test]
fn new_york_interval_patterns_in_the_gap_fire_once_after_it() {
    let tz = "America/New_York";
    // 02:05 and 02:10 do not exist on 2026-03-08: one fire at 03:00 EDT.
    assert_eq!(
        next_n("5-10/5 2 * * *", tz, utc(2026, 3, 7, 12, 0, 0), 3),
        [
            utc(2026, 3, 8, 7, 0, 0),
            utc(2026, 3, 9, 6, 5, 0),
            utc(2026, 3, 9, 6, 10, 0),
        ]
    );
    assert_eq!(
        next_n("*/15 * * * *", tz, utc(2026, 3, 8, 6, 40, 0), 3),
        [
            utc(2026, 3, 8, 6, 45, 0), // 01:45 EST
            utc(2026, 3, 8, 7, 0, 0),  // 03:00 EDT, standing for 02:00-02:45 as well
            utc(2026, 3, 8, 7, 15, 0),
        ]
    );
    assert_eq!(
        next_n("*/15 * * * *", tz, utc(2026, 11, 1, 5, 40, 0), 2),
        [utc(2026, 11, 1, 5, 45, 0), utc(2026, 11, 1, 7, 0, 0)]
    );
    // Every second: the gap's 3600 wall-clock seconds are one fire, at 03:00:00 EDT.
    let s = spec("* * * * * *");
    let ny = zone(tz);
    assert_eq!(
        s.next_n(ny, utc(2026, 3, 8, 6, 59, 58), 3),
        [
            utc(2026, 3, 8, 6, 59, 59),
            utc(2026, 3, 8, 7, 0, 0),
            utc(2026, 3, 8, 7, 0, 1),
        ]
    );
    // Every second in the repeated hour: after 01:59:59 EDT comes 02:00:00 EST.
    assert_eq!(
        s.next_after(ny, utc(2026, 11, 1, 5, 59, 59)),
        Some(utc(2026, 11, 1, 7, 0, 0))
    );
    assert_eq!(
        s.next_after(ny, utc(2026, 11, 1, 6, 30, 0)),
        Some(utc(2026, 11, 1, 7, 0, 0))
    );
}

// ------------------------------------------------------------------------------------------
// Europe/Berlin (2026-03-29 02:00 -> 03:00 at 01:00Z, 2026-10-25 03:00 -> 02:00 at 01:00Z)

#[test]
fn berlin_gap_and_repeat() {
    let tz = "Europe/Berlin";
    assert_eq!(
        next_n("30 2 * * *", tz, utc(2026, 3, 28, 12, 0, 0), 2),
        [utc(2026, 3, 29, 1, 0, 0), utc(2026, 3, 30, 0, 30, 0)]
    );
    assert_eq!(
        next_n("30 2 * * *", tz, utc(2026, 10, 24, 12, 0, 0), 2),
        [utc(2026, 10, 25, 0, 30, 0), utc(2026, 10, 26, 1, 30, 0)]
    );
    // 02:00 CEST = 00:00Z; 02:00 CET (01:00Z) is a repeat; 03:00 CET = 02:00Z.
    assert_eq!(
        next_n("0 * * * *", tz, utc(2026, 10, 24, 23, 30, 0), 3),
        [
            utc(2026, 10, 25, 0, 0, 0),
            utc(2026, 10, 25, 2, 0, 0),
            utc(2026, 10, 25, 3, 0, 0),
        ]
    );
}

// ------------------------------------------------------------------------------------------
// Australia/Lord_Howe: 30-minute DST.

#[test]
fn lord_howe_transition_dates_are_as_assumed() {
    let tz = zone("Australia/Lord_Howe");
    let off = |t: Time| t.with_timezone(&tz).offset().fix().local_minus_utc();
    // DST ends 2026-04-05 02:00 +11 -> 01:30 +10:30, at 2026-04-04 15:00Z.
    assert_eq!(off(utc(2026, 4, 4, 14, 59, 59)), 11 * 3600);
    assert_eq!(off(utc(2026, 4, 4, 15, 0, 0)), 10 * 3600 + 1800);
    // DST starts 2026-10-04 02:00 +10:30 -> 02:30 +11, at 2026-10-03 15:30Z.
    assert_eq!(off(utc(2026, 10, 3, 15, 29, 59)), 10 * 3600 + 1800);
    assert_eq!(off(utc(2026, 10, 3, 15, 30, 0)), 11 * 3600);
}

#[test]
fn lord_howe_half_hour_gap_and_repeat() {
    let tz = "Australia/Lord_Howe";
    // Gap 02:00-02:30 local: 02:00 and 02:20 fire once, at 02:30 +11 (15:30Z).
    assert_eq!(
        next_n("*/20 * * * *", tz, utc(2026, 10, 3, 15, 0, 0), 3),
        [
            utc(2026, 10, 3, 15, 10, 0), // 01:40 +10:30
            utc(2026, 10, 3, 15, 30, 0), // 02:30 +11
            utc(2026, 10, 3, 15, 40, 0), // 02:40 +11
        ]
    );
    assert_eq!(
        next_n("15 2 * * *", tz, utc(2026, 10, 3, 0, 0, 0), 1),
        [utc(2026, 10, 3, 15, 30, 0)]
    );
    // Repeat 01:30-02:00 local: 01:40 fires at +11 only; next is 02:00 +10:30.
    assert_eq!(
        next_n("*/20 * * * *", tz, utc(2026, 4, 4, 14, 10, 0), 3),
        [
            utc(2026, 4, 4, 14, 20, 0), // 01:20 +11
            utc(2026, 4, 4, 14, 40, 0), // 01:40 +11
            utc(2026, 4, 4, 15, 30, 0), // 02:00 +10:30
        ]
    );
    assert_eq!(
        next_n("30 1 * * *", tz, utc(2026, 4, 4, 0, 0, 0), 2),
        [utc(2026, 4, 4, 14, 30, 0), utc(2026, 4, 5, 15, 0, 0)]
    );
}

#[test]
fn tokyo_has_no_dst() {
    let fires = next_n("0 9 * * *", "Asia/Tokyo", utc(2026, 3, 7, 12, 0, 0), 3);
    assert_eq!(
        fires,
        [
            utc(2026, 3, 8, 0, 0, 0),
            utc(2026, 3, 9, 0, 0, 0),
            utc(2026, 3, 10, 0, 0, 0),
        ]
    );
}

// ------------------------------------------------------------------------------------------
// @every

#[test]
fn every_fires_on_epoch_multiples_across_dst() {
    // In New York the local hour 01:00 occurs twice on 2026-11-01, and both are an hour apart
    // on the UTC line: @every 1h fires at both.
    let want = [
        utc(2026, 11, 1, 4, 0, 0),
        utc(2026, 11, 1, 5, 0, 0),
        utc(2026, 11, 1, 6, 0, 0),
        utc(2026, 11, 1, 7, 0, 0),
    ];
    for tz in [
        "America/New_York",
        "Europe/Berlin",
        "Australia/Lord_Howe",
        "UTC",
    ] {
        assert_eq!(
            next_n("@every 1h", tz, utc(2026, 11, 1, 3, 30, 0), 4),
            want,
            "{tz}"
        );
    }
    assert_eq!(
        next_n(
            "@every 1h",
            "America/New_York",
            utc(2026, 3, 8, 5, 59, 59),
            3
        ),
        [
            utc(2026, 3, 8, 6, 0, 0),
            utc(2026, 3, 8, 7, 0, 0),
            utc(2026, 3, 8, 8, 0, 0),
        ]
    );
    let s = spec("@every 90s");
    let ny = zone("America/New_York");
    assert_eq!(
        s.next_after(ny, secs(TimeDelta::seconds(100))),
        Some(secs(TimeDelta::seconds(180)))
    );
    assert_eq!(
        s.next_after(ny, secs(TimeDelta::seconds(180))),
        Some(secs(TimeDelta::seconds(270)))
    );
    assert_eq!(
        s.next_after(ny, secs(TimeDelta::seconds(-1))),
        Some(secs(TimeDelta::zero()))
    );
    assert_eq!(
        s.last_at_or_before(ny, secs(TimeDelta::seconds(-1))),
        Some(secs(TimeDelta::seconds(-90)))
    );
    let restarted = spec("@every 1h30m").next_n(ny, utc(2026, 6, 1, 12, 34, 56), 3);
    for t in restarted {
        assert_eq!(t.timestamp() % 5400, 0);
    }
}

// ------------------------------------------------------------------------------------------
// Seconds

#[test]
fn six_field_expressions_fire_at_seconds() {
    assert_eq!(
        next_n("*/20 * * * * *", "UTC", utc(2026, 5, 1, 10, 0, 5), 3),
        [
            utc(2026, 5, 1, 10, 0, 20),
            utc(2026, 5, 1, 10, 0, 40),
            utc(2026, 5, 1, 10, 1, 0),
        ]
    );
    // 09:00:30 on weekdays in Berlin (CEST): 2026-05-01 is a Friday.
    assert_eq!(
        next_n(
            "30 0 9 * * 1-5",
            "Europe/Berlin",
            utc(2026, 5, 1, 0, 0, 0),
            2
        ),
        [utc(2026, 5, 1, 7, 0, 30), utc(2026, 5, 4, 7, 0, 30)]
    );
    // Every 30 seconds of local hour 2 on the New York spring day: all in the gap, one fire.
    assert_eq!(
        next_n(
            "*/30 * 2 * * *",
            "America/New_York",
            utc(2026, 3, 8, 6, 0, 0),
            2
        ),
        [utc(2026, 3, 8, 7, 0, 0), utc(2026, 3, 9, 6, 0, 0)]
    );
}

#[test]
fn sub_second_inputs_are_handled_at_second_granularity() {
    let s = spec("* * * * * *");
    let tz = zone("UTC");
    let half = TimeDelta::milliseconds(500);
    assert_eq!(
        s.next_after(tz, utc(2026, 1, 1, 12, 0, 0) + half),
        Some(utc(2026, 1, 1, 12, 0, 1))
    );
    assert_eq!(
        s.last_at_or_before(tz, utc(2026, 1, 1, 12, 0, 0) + half),
        Some(utc(2026, 1, 1, 12, 0, 0))
    );
    let f = s.fires_between(
        tz,
        utc(2026, 1, 1, 11, 59, 59) + half,
        utc(2026, 1, 1, 12, 0, 0) + half,
        10,
    );
    assert_eq!(f.times, [utc(2026, 1, 1, 12, 0, 0)]);
    assert_eq!(f.total, 1);
    let e = spec("@every 1s");
    assert_eq!(
        e.next_after(tz, utc(2026, 1, 1, 12, 0, 0) + half),
        Some(utc(2026, 1, 1, 12, 0, 1))
    );
}

// ------------------------------------------------------------------------------------------
// fires_between

#[test]
fn fires_between_every_counts_arithmetically() {
    let s = spec("@every 1s");
    let tz = zone("Europe/Berlin");
    let (from, to) = (utc(2026, 3, 1, 0, 0, 0), utc(2026, 3, 31, 0, 0, 0));
    let started = Instant::now();
    let f = s.fires_between(tz, from, to, 3);
    assert!(
        started.elapsed().as_secs() < 2,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(f.total, 30 * 86_400);
    assert_eq!(
        f.times,
        [to - TimeDelta::seconds(2), to - TimeDelta::seconds(1), to]
    );

    let f = spec("@every 1h").fires_between(
        tz,
        utc(2026, 1, 1, 0, 30, 0),
        utc(2026, 1, 1, 3, 0, 0),
        10,
    );
    assert_eq!(
        f.times,
        [
            utc(2026, 1, 1, 1, 0, 0),
            utc(2026, 1, 1, 2, 0, 0),
            utc(2026, 1, 1, 3, 0, 0)
        ]
    );
    assert_eq!(f.total, 3);
    let f =
        spec("@every 1h").fires_between(tz, utc(2026, 1, 1, 0, 30, 0), utc(2026, 1, 1, 3, 0, 0), 0);
    assert_eq!((f.times.len(), f.total), (0, 3));
    let empty = spec("@every 1h").fires_between(tz, to, from, 10);
    assert_eq!((empty.times.len(), empty.total), (0, 0));
    let empty = spec("@every 1h").fires_between(tz, to, to, 10);
    assert_eq!((empty.times.len(), empty.total), (0, 0));
}

#[test]
fn fires_between_every_second_cron_over_thirty_days_is_fast_and_exact() {
    let s = spec("* * * * * *");
    let tz = zone("America/New_York");
    let started = Instant::now();
    // March 2026 holds the spring gap: every instant is a fire, the gap's wall-clock seconds
    // all collapse onto 03:00:00 EDT.
    let (from, to) = (utc(2026, 3, 1, 0, 0, 0), utc(2026, 3, 31, 0, 0, 0));
    let f = s.fires_between(tz, from, to, 2);
    assert_eq!(f.total, 30 * 86_400);
    assert_eq!(f.times, [to - TimeDelta::seconds(1), to]);
    // November 2026 holds the repeat: its second hour of instants does not fire.
    let (from, to) = (utc(2026, 10, 15, 0, 0, 0), utc(2026, 11, 14, 0, 0, 0));
    let f = s.fires_between(tz, from, to, 2);
    assert_eq!(f.total, 30 * 86_400 - 3_600);
    assert!(
        started.elapsed().as_secs() < 2,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn fires_between_keeps_the_most_recent_and_counts_all() {
    let s = spec("0 * * * *");
    let tz = zone("America/New_York");
    let (from, to) = (utc(2026, 11, 1, 0, 0, 0), utc(2026, 11, 2, 0, 0, 0));
    // 24 hour boundaries in (from, to]; 06:00Z is 01:00 EST, a repeat.
    let f = s.fires_between(tz, from, to, 3);
    assert_eq!(f.total, 23);
    assert_eq!(
        f.times,
        [
            utc(2026, 11, 1, 22, 0, 0),
            utc(2026, 11, 1, 23, 0, 0),
            utc(2026, 11, 2, 0, 0, 0)
        ]
    );
    let all = s.fires_between(tz, from, to, 100);
    assert_eq!(all.total, 23);
    assert_eq!(all.times.len(), 23);
    assert!(!all.times.contains(&utc(2026, 11, 1, 6, 0, 0)));
    assert_eq!(all.times.first(), Some(&utc(2026, 11, 1, 1, 0, 0)));
    assert_eq!(s.fires_between(tz, from, to, 23), all);
    assert_eq!(s.fires_between(tz, from, to, 0).total, 23);

    // Spring day: every half-hour instant fires; 02:00 and 02:30 merge into 03:00 EDT.
    let s = spec("*/30 * * * *");
    let (from, to) = (utc(2026, 3, 8, 0, 0, 0), utc(2026, 3, 9, 0, 0, 0));
    let f = s.fires_between(tz, from, to, 1);
    assert_eq!(f.total, 48);
    assert_eq!(f.times, [to]);
    assert_eq!(s.fires_between(tz, from, to, 1000).times.len(), 48);
    // The interval is half-open: a fire at `from` is not in it, one at `to` is.
    let f = spec("0 0 * * *").fires_between(
        zone("UTC"),
        utc(2026, 1, 1, 0, 0, 0),
        utc(2026, 1, 3, 0, 0, 0),
        10,
    );
    assert_eq!(
        f.times,
        [utc(2026, 1, 2, 0, 0, 0), utc(2026, 1, 3, 0, 0, 0)]
    );
}

#[test]
fn fires_between_counts_long_intervals() {
    let tz = zone("Europe/Berlin");
    // Ten years of @daily: one fire per local day, DST or not.
    let f =
        spec("@daily").fires_between(tz, utc(2020, 1, 1, 12, 0, 0), utc(2030, 1, 1, 12, 0, 0), 1);
    assert_eq!(f.total, 3653);
    // The last is 2030-01-01 00:00 CET.
    assert_eq!(f.times, [utc(2029, 12, 31, 23, 0, 0)]);
    let f =
        spec("@yearly").fires_between(tz, utc(2000, 6, 1, 0, 0, 0), utc(2100, 6, 1, 0, 0, 0), 2);
    assert_eq!(f.total, 100);
}

// ------------------------------------------------------------------------------------------
// last_at_or_before and next_n

#[test]
fn last_at_or_before_follows_the_same_rules() {
    let ny = zone("America/New_York");
    let s = spec("30 1 * * *");
    // At 01:45 EST, the day's 01:30 fired at its first occurrence, 01:30 EDT.
    assert_eq!(
        s.last_at_or_before(ny, utc(2026, 11, 1, 6, 45, 0)),
        Some(utc(2026, 11, 1, 5, 30, 0))
    );
    assert_eq!(
        s.last_at_or_before(ny, utc(2026, 11, 1, 5, 30, 0)),
        Some(utc(2026, 11, 1, 5, 30, 0))
    );
    assert_eq!(
        s.last_at_or_before(ny, utc(2026, 11, 1, 5, 29, 59)),
        Some(utc(2026, 10, 31, 5, 30, 0))
    );
    let s = spec("30 2 * * *");
    assert_eq!(
        s.last_at_or_before(ny, utc(2026, 3, 8, 7, 0, 0)),
        Some(utc(2026, 3, 8, 7, 0, 0))
    );
    assert_eq!(
        s.last_at_or_before(ny, utc(2026, 3, 8, 6, 59, 59)),
        Some(utc(2026, 3, 7, 7, 30, 0))
    );
    let s = spec("0 * * * *");
    assert_eq!(
        s.last_at_or_before(ny, utc(2026, 11, 1, 6, 59, 59)),
        Some(utc(2026, 11, 1, 5, 0, 0))
    );
    assert_eq!(
        s.last_at_or_before(ny, utc(2026, 11, 1, 7, 0, 0)),
        Some(utc(2026, 11, 1, 7, 0, 0))
    );
    let s = spec("*/20 * * * *");
    let lh = zone("Australia/Lord_Howe");
    assert_eq!(
        s.last_at_or_before(lh, utc(2026, 10, 3, 15, 39, 0)),
        Some(utc(2026, 10, 3, 15, 30, 0))
    );
    // Years after the previous fire, @yearly is still found directly.
    let started = Instant::now();
    assert_eq!(
        spec("@yearly").last_at_or_before(ny, utc(2030, 6, 1, 0, 0, 0)),
        Some(utc(2030, 1, 1, 5, 0, 0))
    );
    assert_eq!(
        spec("0 0 29 2 *").last_at_or_before(zone("UTC"), utc(2031, 6, 1, 0, 0, 0)),
        Some(utc(2028, 2, 29, 0, 0, 0))
    );
    assert!(started.elapsed().as_millis() < 1000);
    assert_eq!(
        spec("@every 1h").last_at_or_before(ny, utc(2026, 1, 1, 10, 59, 59)),
        Some(utc(2026, 1, 1, 10, 0, 0))
    );
}

#[test]
fn next_n_returns_n_increasing_fires() {
    let ny = zone("America/New_York");
    assert!(
        spec("@daily")
            .next_n(ny, utc(2026, 1, 1, 0, 0, 0), 0)
            .is_empty()
    );
    let fires = spec("*/7 * * * *").next_n(ny, utc(2026, 3, 8, 5, 0, 0), 50);
    assert_eq!(fires.len(), 50);
    assert!(fires.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        spec("@monthly").next_n(zone("UTC"), utc(2026, 1, 15, 0, 0, 0), 3),
        [
            utc(2026, 2, 1, 0, 0, 0),
            utc(2026, 3, 1, 0, 0, 0),
            utc(2026, 4, 1, 0, 0, 0)
        ]
    );
    // 2026-01-04 is a Sunday.
    assert_eq!(
        spec("@weekly").next_n(zone("UTC"), utc(2026, 1, 1, 0, 0, 0), 2),
        [utc(2026, 1, 4, 0, 0, 0), utc(2026, 1, 11, 0, 0, 0)]
    );
}

#[test]
fn day_of_month_and_day_of_week_are_ored_unless_plus() {
    let tz = "UTC";
    // Vixie cron: both fields restricted means either may match. 2026-04-13 is a Monday.
    assert_eq!(
        next_n("0 0 13 * 5", tz, utc(2026, 4, 1, 0, 0, 0), 6),
        [
            utc(2026, 4, 3, 0, 0, 0),
            utc(2026, 4, 10, 0, 0, 0),
            utc(2026, 4, 13, 0, 0, 0),
            utc(2026, 4, 17, 0, 0, 0),
            utc(2026, 4, 24, 0, 0, 0),
            utc(2026, 5, 1, 0, 0, 0),
        ]
    );
    // A `*` field takes no part: only the 13th, or only Fridays.
    assert_eq!(
        next_n("0 0 13 * *", tz, utc(2026, 4, 1, 0, 0, 0), 2),
        [utc(2026, 4, 13, 0, 0, 0), utc(2026, 5, 13, 0, 0, 0)]
    );
    // croner's `+` prefix on the day of week asks for both: Friday the 13th.
    assert_eq!(
        next_n("0 0 13 * +5", tz, utc(2026, 4, 1, 0, 0, 0), 2),
        [utc(2026, 11, 13, 0, 0, 0), utc(2027, 8, 13, 0, 0, 0)]
    );
    // croner treats only a literal `*` (or `?`) as unrestricted: `*/2` with a weekday is an
    // OR (odd days or Fridays), where Vixie cron would AND them.
    assert_eq!(
        next_n("0 0 */2 * 5", tz, utc(2026, 4, 1, 0, 0, 0), 4),
        [
            utc(2026, 4, 3, 0, 0, 0),
            utc(2026, 4, 5, 0, 0, 0),
            utc(2026, 4, 7, 0, 0, 0),
            utc(2026, 4, 9, 0, 0, 0),
        ]
    );
    assert_eq!(
        next_n("0 0 */2 * 5", tz, utc(2026, 4, 9, 0, 0, 0), 2),
        [utc(2026, 4, 10, 0, 0, 0), utc(2026, 4, 11, 0, 0, 0)]
    );
}

/// Why we search naive time instead of calling croner with a zoned time: croner's own DST
/// rules differ from ours. If this test starts failing after a croner upgrade, croner changed
/// its rules; ours are pinned by the tests above either way.
#[test]
fn croner_zoned_search_differs_from_our_rules() {
    let ny = zone("America/New_York");
    let lh = zone("Australia/Lord_Howe");
    let cron = |p: &str| parser().parse(p).expect("valid");
    let z = |t: DateTime<Tz>| t.with_timezone(&Utc);
    // Interval patterns fire on both halves of the repeated hour (01:00 EDT and 01:00 EST)...
    let start = utc(2026, 11, 1, 3, 30, 0).with_timezone(&ny);
    let croner_fires: Vec<Time> = cron("0 * * * *").iter_after(start).take(4).map(z).collect();
    assert!(croner_fires.contains(&utc(2026, 11, 1, 6, 0, 0)));
    // ... backwards too.
    let start = utc(2026, 11, 1, 8, 30, 0).with_timezone(&ny);
    let croner_back: Vec<Time> = cron("0 * * * *")
        .iter_before(start)
        .take(4)
        .map(z)
        .collect();
    assert!(croner_back.contains(&utc(2026, 11, 1, 6, 0, 0)));
    // Non-fixed patterns whose times fall in a gap are skipped rather than moved past it.
    let start = utc(2026, 10, 3, 15, 0, 0).with_timezone(&lh);
    let croner_fires: Vec<Time> = cron("*/20 * * * *")
        .iter_after(start)
        .take(3)
        .map(z)
        .collect();
    assert!(!croner_fires.contains(&utc(2026, 10, 3, 15, 30, 0)));
    let start = utc(2026, 3, 7, 12, 0, 0).with_timezone(&ny);
    let first = cron("5-10/5 2 * * *").iter_after(start).next().map(z);
    assert_eq!(first, Some(utc(2026, 3, 9, 6, 5, 0)));
    // A fixed-time pattern in the gap does move past it, as ours does.
    let first = cron("30 2 * * *").iter_after(start).next().map(z);
    assert_eq!(first, Some(utc(2026, 3, 8, 7, 0, 0)));
}

// ------------------------------------------------------------------------------------------
// Property tests against a brute-force oracle.

/// Realistic cron patterns; the 6-field ones with a seconds field other than `0` are stepped
/// second by second by the oracle, the rest minute by minute.
const PATTERNS: &[&str] = &[
    "* * * * *",
    "*/5 * * * *",
    "*/7 * * * *",
    "*/20 * * * *",
    "0 * * * *",
    "30 * * * *",
    "15,45 * * * *",
    "0 */2 * * *",
    "30 2 * * *",
    "30 1 * * *",
    "59 1 * * *",
    "0 2 * * *",
    "0 0 * * *",
    "0 3 * * *",
    "45 2 * * 0",
    "0 9-17 * * 1-5",
    "5-10/5 2 * * *",
    "0,30 0-3 * * *",
    "0 12 L * *",
    "0 2 1,15 * 0",
    "@hourly",
    "@daily",
    "*/30 * * * * *",
    "10 30 1 * * *",
    "*/20 * 1-3 * * *",
    "0 */15 * * * *",
];

/// Patterns with few fires, checked only for order and matching (too sparse for a window).
const SPARSE: &[&str] = &["@weekly", "@monthly", "@yearly", "0 0 29 2 *", "0 0 13 * 5"];

const EVERY: &[&str] = &[
    "@every 1h",
    "@every 90s",
    "@every 7m",
    "@every 1d",
    "@every 1h30m",
];

const ZONES: &[&str] = &[
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Tokyo",
    "UTC",
    "America/Santiago",
    "Pacific/Chatham",
    "America/St_Johns",
    "Asia/Kolkata",
    "Europe/London",
];

/// Offset changes of `tz` during `year`, as instants.
fn year_transitions(tz: Tz, year: i32) -> Vec<i64> {
    let from = utc(year, 1, 1, 0, 0, 0).timestamp();
    let to = utc(year + 1, 1, 1, 0, 0, 0).timestamp();
    transitions(tz, from, to)
        .into_iter()
        .map(|(t, _, _)| t)
        .collect()
}

/// A start instant in 2020-2035: uniform, or (when `near` is set and the zone has any) within
/// `window` seconds before one of the zone's offset changes.
fn start_instant(tz: Tz, year: i32, pick: u64, near: bool, window: i64) -> i64 {
    if near {
        let changes = year_transitions(tz, year);
        if !changes.is_empty() {
            let t = changes[(pick as usize) % changes.len()];
            return t - (pick as i64 % window) - 1;
        }
    }
    let from = utc(year, 1, 1, 0, 0, 0).timestamp();
    from + (pick % (365 * 86_400)) as i64
}

fn local(tz: Tz, t: i64) -> NaiveDateTime {
    instant(t)
        .expect("in range")
        .with_timezone(&tz)
        .naive_local()
}

/// Whether the instant `t` is a fire, decided from first principles: its wall-clock time
/// matches and this is its first occurrence, or it is the first instant after a gap in which
/// some wall-clock time matches (stepping the gap by `step` seconds).
fn oracle_fires_at(cron: &Cron, tz: Tz, t: i64, step: i64) -> bool {
    let here = local(tz, t);
    let first = match tz.from_local_datetime(&here) {
        LocalResult::Ambiguous(earlier, _) => earlier.timestamp() == t,
        _ => true,
    };
    if first && cron.is_time_matching(&here).expect("matching") {
        return true;
    }
    let before = local(tz, t - 1) + TimeDelta::seconds(1);
    let mut l = before;
    while l < here {
        if cron.is_time_matching(&l).expect("matching") {
            return true;
        }
        l += TimeDelta::seconds(step);
    }
    false
}

fn oracle_between(cron: &Cron, tz: Tz, from: i64, to: i64, step: i64) -> Vec<Time> {
    let mut out = Vec::new();
    let mut t = (from.div_euclid(step) + 1) * step;
    while t <= to {
        if oracle_fires_at(cron, tz, t, step) {
            out.push(instant(t).expect("in range"));
        }
        t += step;
    }
    out
}

/// 60 when the pattern only fires at second 0 (every zone offset since 1972 is whole minutes,
/// so those fires fall on whole UTC minutes), else 1.
fn oracle_step(cron: &Cron) -> i64 {
    if (1..60).any(|s| cron.pattern.second_match(s).unwrap_or(false)) {
        1
    } else {
        60
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The fires in a window are exactly the oracle's, and every API agrees on them.
    #[test]
    fn fires_match_the_oracle(
        p in 0..PATTERNS.len(),
        z in 0..ZONES.len(),
        year in 2020i32..2036,
        pick in any::<u64>(),
        near in any::<bool>(),
    ) {
        let text = PATTERNS[p];
        let tz = zone(ZONES[z]);
        let s = spec(text);
        let Kind::Cron(expr) = &s.kind else { unreachable!("cron pattern") };
        let step = oracle_step(&expr.cron);
        let window = if step == 1 { 3 * 3600 } else { 2 * 86_400 };
        let from = start_instant(tz, year, pick, near, window / 2);
        let to = from + window;
        let want = oracle_between(&expr.cron, tz, from, to, step);

        let (from_t, to_t) = (instant(from).expect("in range"), instant(to).expect("in range"));
        let all = s.fires_between(tz, from_t, to_t, usize::MAX);
        prop_assert_eq!(&all.times, &want, "{} in {} from {}", text, ZONES[z], from_t);
        prop_assert_eq!(all.total, want.len() as u64);
        let few = s.fires_between(tz, from_t, to_t, 3);
        prop_assert_eq!(&few.times[..], &want[want.len().saturating_sub(3)..]);
        prop_assert_eq!(few.total, want.len() as u64);
        prop_assert_eq!(s.fires_between(tz, from_t, to_t, 0).total, want.len() as u64);

        let mut walked = s.next_n(tz, from_t, want.len() + 1);
        let beyond = walked.pop();
        prop_assert_eq!(&walked, &want);
        prop_assert!(beyond.is_none_or(|b| b > to_t));

        let mut prev = s.last_at_or_before(tz, from_t);
        prop_assert!(prev.is_none_or(|p| p <= from_t));
        for &f in &want {
            prop_assert_eq!(s.last_at_or_before(tz, f), Some(f));
            let before = s.last_at_or_before(tz, f - TimeDelta::seconds(1));
            prop_assert_eq!(before, prev);
            prev = Some(f);
        }
        prop_assert_eq!(s.last_at_or_before(tz, to_t), prev);
    }

    /// Over long intervals the arithmetic count equals counting fires one by one.
    #[test]
    fn counting_equals_iterating(
        p in 0..PATTERNS.len(),
        z in 0..ZONES.len(),
        year in 2020i32..2036,
        pick in any::<u64>(),
        near in any::<bool>(),
        days in 1i64..40,
    ) {
        let text = PATTERNS[p];
        let tz = zone(ZONES[z]);
        let s = spec(text);
        let span = if text.split_whitespace().count() == 6 || text.starts_with("* ") { 3600 } else { days * 86_400 };
        let from = instant(start_instant(tz, year, pick, near, span / 2)).expect("in range");
        let to = from + TimeDelta::seconds(span);
        let mut n = 0u64;
        let mut cur = from;
        while let Some(t) = s.next_after(tz, cur) {
            if t > to || t <= cur { break; }
            n += 1;
            cur = t;
        }
        prop_assert_eq!(s.fires_between(tz, from, to, 0).total, n, "{} in {} from {}", text, ZONES[z], from);
        prop_assert_eq!(s.fires_between(tz, from, to, 2).total, n);
    }

    /// For every kind of expression: fires strictly increase, and each one either matches
    /// the expression at its first occurrence in local time or sits right after an offset
    /// change (the first instant after a gap).
    #[test]
    fn fires_increase_and_match(
        p in 0..(PATTERNS.len() + SPARSE.len() + EVERY.len()),
        z in 0..ZONES.len(),
        year in 2020i32..2036,
        pick in any::<u64>(),
        near in any::<bool>(),
    ) {
        let text = PATTERNS.iter().chain(SPARSE).chain(EVERY).nth(p).expect("in range");
        let tz = zone(ZONES[z]);
        let s = spec(text);
        let from = instant(start_instant(tz, year, pick, near, 86_400)).expect("in range");
        let fires = s.next_n(tz, from, 12);
        prop_assert_eq!(fires.len(), 12);
        prop_assert!(fires[0] > from);
        prop_assert!(fires.windows(2).all(|w| w[0] < w[1]), "{:?}", fires);
        for &f in &fires {
            match &s.kind {
                Kind::Every(d) => prop_assert_eq!(f.timestamp() % d.as_secs() as i64, 0),
                Kind::Cron(expr) => {
                    let t = f.timestamp();
                    let here = local(tz, t);
                    let first = match tz.from_local_datetime(&here) {
                        LocalResult::Ambiguous(earlier, _) => earlier.timestamp() == t,
                        _ => true,
                    };
                    let matches = first && expr.cron.is_time_matching(&here).expect("matching");
                    let after_change = offset(tz, t - 1) != offset(tz, t);
                    prop_assert!(matches || after_change, "{} in {}: {} ({})", text, ZONES[z], f, here);
                }
            }
        }
    }
}
