//! Virtual time: [`Instant`] since boot and [`Duration`], both in
//! nanoseconds inside, milliseconds where devices see them.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// A span of virtual time.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(u64);

impl Duration {
    /// No time.
    pub const ZERO: Duration = Duration(0);
    /// The longest representable span.
    pub const MAX: Duration = Duration(u64::MAX);

    /// From nanoseconds.
    pub const fn from_nanos(ns: u64) -> Self {
        Duration(ns)
    }
    /// From microseconds.
    pub const fn from_micros(us: u64) -> Self {
        Duration(us.saturating_mul(1_000))
    }
    /// From milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms.saturating_mul(1_000_000))
    }
    /// From seconds.
    pub const fn from_secs(s: u64) -> Self {
        Duration(s.saturating_mul(1_000_000_000))
    }
    /// Nanoseconds.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    /// Whole milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }
    /// Whether this is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
    /// `self - other`, or zero.
    pub const fn saturating_sub(self, other: Duration) -> Duration {
        Duration(self.0.saturating_sub(other.0))
    }
    /// The wall-clock equivalent.
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0)
    }

    /// Parse `"250ms"`, `"1.5s"`, `"40us"`, `"3m"`, `"100ns"`; a bare
    /// number is milliseconds.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let scale: f64 = match unit.trim() {
            "" | "ms" => 1e6,
            "s" | "sec" => 1e9,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            "m" | "min" => 60e9,
            other => {
                return Err(format!("invalid duration `{text}`: unknown unit `{other}` (use ns, us, ms, s or m)"));
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration `{text}`: expected a number with a unit, such as 250ms or 1.5s"))?;
        let ns = value * scale;
        if !ns.is_finite() || ns < 0.0 || ns > u64::MAX as f64 {
            return Err(format!("invalid duration `{text}`: out of range"));
        }
        Ok(Duration(ns.round() as u64))
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0;
        if ns.is_multiple_of(1_000_000) {
            write!(f, "{}ms", ns / 1_000_000)
        } else if ns.is_multiple_of(1_000) {
            write!(f, "{}us", ns / 1_000)
        } else {
            write!(f, "{ns}ns")
        }
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, rhs: Duration) -> Duration {
        Duration(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Duration {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

/// A point in virtual time: nanoseconds since the machine booted.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// Boot.
    pub const ZERO: Instant = Instant(0);
    /// Never.
    pub const NEVER: Instant = Instant(u64::MAX);

    /// Nanoseconds since boot.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    /// Milliseconds since boot, as `Get_System_Time` reports them (wraps
    /// after about 49.7 days).
    pub const fn system_time_ms(self) -> u32 {
        (self.0 / 1_000_000) as u32
    }
    /// Whole milliseconds since boot.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }
    /// The span since `earlier`, or zero.
    pub const fn since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t+{}", Duration(self.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(rhs.0))
    }
}

impl Sub for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.since(rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(Duration::parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(Duration::parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(Duration::parse("40us").unwrap(), Duration::from_micros(40));
        assert_eq!(Duration::parse("7").unwrap(), Duration::from_millis(7));
        assert_eq!(Duration::parse("2m").unwrap(), Duration::from_secs(120));
        assert!(Duration::parse("5 parsecs").is_err());
        assert!(Duration::parse("ms").is_err());
    }

    #[test]
    fn system_time_is_milliseconds() {
        let t = Instant::ZERO + Duration::from_micros(12_345);
        assert_eq!(t.system_time_ms(), 12);
        assert_eq!(format!("{}", Duration::from_micros(1500)), "1500us");
    }
}
