//! The SYSTEM.INI profile services (`Get_Profile_*`) over the manifest's
//! profile data, with the DDK's present / empty / missing semantics.

use vmm_plugin_api::abi::{ProfileStatus, ProfileValue};

/// Parse a decimal profile value: `Some(v)` if valid.
pub(crate) fn parse_decimal(text: &str) -> Option<u32> {
    text.trim().parse::<i64>().ok().filter(|v| *v >= i32::MIN as i64 && *v <= u32::MAX as i64).map(|v| v as u32)
}

/// Parse a hexadecimal profile value (optional `0x` prefix or `h` suffix).
pub(crate) fn parse_hex(text: &str) -> Option<u32> {
    let t = text.trim();
    let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    let t = t.strip_suffix('h').or_else(|| t.strip_suffix('H')).unwrap_or(t);
    u32::from_str_radix(t, 16).ok()
}

/// Parse a boolean profile value: 0 / -1 (0xFFFF_FFFF).
pub(crate) fn parse_boolean(text: &str) -> Option<u32> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "on" => Some(0xFFFF_FFFF),
        "0" | "no" | "n" | "false" | "off" => Some(0),
        _ => None,
    }
}

/// Apply the DDK's three cases to a profile lookup.
pub(crate) fn profile_value(value: Option<&str>, default: u32, parse: fn(&str) -> Option<u32>) -> ProfileValue {
    match value {
        None => ProfileValue { status: ProfileStatus::Missing, value: default },
        Some(v) if v.trim().is_empty() => ProfileValue { status: ProfileStatus::Empty, value: default },
        Some(v) => match parse(v) {
            Some(n) => ProfileValue { status: ProfileStatus::Present, value: n },
            None => ProfileValue { status: ProfileStatus::Missing, value: default },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddk_cases() {
        let d = |v| profile_value(v, 7, parse_decimal);
        assert_eq!(d(None), ProfileValue { status: ProfileStatus::Missing, value: 7 });
        assert_eq!(d(Some("  ")), ProfileValue { status: ProfileStatus::Empty, value: 7 });
        assert_eq!(d(Some("12")), ProfileValue { status: ProfileStatus::Present, value: 12 });
        assert_eq!(d(Some("-1")).value, 0xFFFF_FFFF);
        assert_eq!(d(Some("twelve")), ProfileValue { status: ProfileStatus::Missing, value: 7 });
        assert_eq!(parse_hex("0x4321"), Some(0x4321));
        assert_eq!(parse_hex("4321h"), Some(0x4321));
        assert_eq!(parse_boolean("On"), Some(0xFFFF_FFFF));
        assert_eq!(parse_boolean("N"), Some(0));
        assert_eq!(parse_boolean("maybe"), None);
    }
}
