//! The SHEXPACKET of `_SHELL_ShellExecute`, decoded from bytes: a 32-byte
//! header of dwords (`shex_dwTotalSize`, `shex_dwSize`, then offsets of
//! NUL-terminated strings in the baggage that follows, `dwReserved`,
//! `shex_nCmdShow`). [`decode`] is a pure function over a byte slice: every
//! size and offset is checked before it is used, so a malformed packet is an
//! error naming the field, never a read outside the slice.

use vmm_plugin_api::ddk::{
    SHEX_DWRESERVED, SHEX_DWSIZE, SHEX_DWTOTALSIZE, SHEX_IBDIR, SHEX_IBFILE, SHEX_IBOP, SHEX_IBPARAMS, SHEX_NCMDSHOW,
    SHEXPACKET_SIZE,
};

use crate::shell::ansi;

/// The header's dwords.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Header {
    pub(super) total_size: u32,
    pub(super) size: u32,
    pub(super) ib_op: u32,
    pub(super) ib_file: u32,
    pub(super) ib_params: u32,
    pub(super) ib_dir: u32,
    pub(super) reserved: u32,
    pub(super) show: u32,
}

/// A valid packet, its strings decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Packet {
    pub(super) header: Header,
    /// `None`: `shex_ibOp` 0, "open".
    pub(super) verb: Option<String>,
    pub(super) file: String,
    pub(super) params: Option<String>,
    /// `None`: the Windows directory.
    pub(super) dir: Option<String>,
}

/// Why a packet is malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Malformed {
    /// The header, if the packet had one.
    pub(super) header: Option<Header>,
    /// A stable code for the trace (`short_packet`, `bad_size`, ...).
    pub(super) code: &'static str,
    /// The header field at fault.
    pub(super) field: Option<&'static str>,
    /// One sentence.
    pub(super) message: String,
}

fn dword(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Decode a packet from `bytes` (at least `shex_dwTotalSize` long; the rest
/// is ignored).
pub(crate) fn decode(bytes: &[u8]) -> Result<Packet, Malformed> {
    const HEADER: usize = SHEXPACKET_SIZE as usize;
    let fail = |header: Option<Header>, code, field, message: String| Err(Malformed { header, code, field, message });
    if bytes.len() < HEADER {
        return fail(
            None,
            "short_packet",
            None,
            format!("the packet has {} bytes, fewer than the 32 of its header", bytes.len()),
        );
    }
    let h = Header {
        total_size: dword(bytes, SHEX_DWTOTALSIZE),
        size: dword(bytes, SHEX_DWSIZE),
        ib_op: dword(bytes, SHEX_IBOP),
        ib_file: dword(bytes, SHEX_IBFILE),
        ib_params: dword(bytes, SHEX_IBPARAMS),
        ib_dir: dword(bytes, SHEX_IBDIR),
        reserved: dword(bytes, SHEX_DWRESERVED),
        show: dword(bytes, SHEX_NCMDSHOW),
    };
    if h.size != SHEXPACKET_SIZE {
        return fail(
            Some(h),
            "bad_size",
            Some("shex_dwSize"),
            format!("shex_dwSize is {}, not sizeof(SHEXPACKET) = 32", h.size),
        );
    }
    if (h.total_size as usize) < HEADER || h.total_size as usize > bytes.len() {
        return fail(
            Some(h),
            "bad_total_size",
            Some("shex_dwTotalSize"),
            format!(
                "shex_dwTotalSize is {}: it must cover the 32-byte header and lie within the {} bytes given",
                h.total_size,
                bytes.len()
            ),
        );
    }
    let packet = &bytes[..h.total_size as usize];
    if h.reserved != 0 {
        return fail(
            Some(h),
            "reserved_not_zero",
            Some("dwReserved"),
            format!("dwReserved (offset 0x18) is {:#X}; SHELL.H says it must be zero", h.reserved),
        );
    }
    if h.ib_file == 0 {
        return fail(
            Some(h),
            "missing_file",
            Some("shex_ibFile"),
            "shex_ibFile is 0: the file is required".to_string(),
        );
    }
    let string = |field: &'static str, offset: u32| -> Result<Option<String>, Malformed> {
        if offset == 0 {
            return Ok(None);
        }
        let at = offset as usize;
        if at < HEADER || at >= packet.len() {
            return Err(Malformed {
                header: Some(h),
                code: "bad_offset",
                field: Some(field),
                message: format!(
                    "{field} is {offset:#X}: a string offset must point into the baggage, bytes 32..{} of the packet",
                    packet.len()
                ),
            });
        }
        match packet[at..].iter().position(|b| *b == 0) {
            Some(n) => Ok(Some(ansi(&packet[at..at + n]))),
            None => Err(Malformed {
                header: Some(h),
                code: "unterminated_string",
                field: Some(field),
                message: format!("the string at {field} ({offset:#X}) has no NUL before shex_dwTotalSize"),
            }),
        }
    };
    let verb = string("shex_ibOp", h.ib_op)?;
    let file = string("shex_ibFile", h.ib_file)?.unwrap_or_default();
    let params = string("shex_ibParams", h.ib_params)?;
    let dir = string("shex_ibDir", h.ib_dir)?;
    Ok(Packet { header: h, verb, file, params, dir })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use vmm_plugin_api::ShexPacket;

    use super::*;

    fn header(total: u32, size: u32, op: u32, file: u32, params: u32, dir: u32, reserved: u32) -> Vec<u8> {
        [total, size, op, file, params, dir, reserved, 1].iter().flat_map(|d| d.to_le_bytes()).collect()
    }

    #[test]
    fn the_sdk_packet_decodes() {
        let bytes = ShexPacket::open("NOTES.TXT").verb("print").params("-q").dir("C:\\TMP").show(3).to_bytes();
        let p = decode(&bytes).unwrap();
        assert_eq!(p.verb.as_deref(), Some("print"));
        assert_eq!(p.file, "NOTES.TXT");
        assert_eq!(p.params.as_deref(), Some("-q"));
        assert_eq!(p.dir.as_deref(), Some("C:\\TMP"));
        assert_eq!(p.header.show, 3);
    }

    #[test]
    fn each_malformation_names_its_field() {
        let mut ok = header(36, 32, 0, 32, 0, 0, 0);
        ok.extend_from_slice(b"A.X\0");
        assert!(decode(&ok).is_ok());
        let case = |bytes: &[u8]| {
            let e = decode(bytes).unwrap_err();
            (e.code, e.field)
        };
        assert_eq!(case(&ok[..31]), ("short_packet", None));
        let mut b = ok.clone();
        b[4] = 33;
        assert_eq!(case(&b), ("bad_size", Some("shex_dwSize")));
        b = ok.clone();
        b[0] = 40;
        assert_eq!(case(&b), ("bad_total_size", Some("shex_dwTotalSize")));
        b[0] = 31;
        assert_eq!(case(&b), ("bad_total_size", Some("shex_dwTotalSize")));
        b = ok.clone();
        b[24] = 1;
        assert_eq!(case(&b), ("reserved_not_zero", Some("dwReserved")));
        b = ok.clone();
        b[12] = 0;
        assert_eq!(case(&b), ("missing_file", Some("shex_ibFile")));
        b = ok.clone();
        b[16] = 8;
        assert_eq!(case(&b), ("bad_offset", Some("shex_ibParams")), "an offset into the header");
        b = ok.clone();
        b[20] = 36;
        assert_eq!(case(&b), ("bad_offset", Some("shex_ibDir")), "an offset at the end");
        b = ok.clone();
        b[35] = b'!';
        assert_eq!(case(&b), ("unterminated_string", Some("shex_ibFile")));
        // The baggage after dwTotalSize does not count.
        b[0] = 35;
        b[35] = 0;
        assert_eq!(case(&b), ("unterminated_string", Some("shex_ibFile")));
    }

    proptest! {
        // A fixed seed: the same cases in every run, so CI is deterministic.
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x0051_4E11),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Arbitrary bytes and sizes: the decoder never panics (every slice
        /// access is in bounds), and what it accepts is consistent.
        #[test]
        fn fuzz_shex_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
            if let Ok(p) = decode(&bytes) {
                prop_assert_eq!(p.header.size, 32);
                prop_assert!(p.header.total_size as usize <= bytes.len());
                prop_assert!(p.header.ib_file >= 32 && p.header.ib_file < p.header.total_size);
            }
        }

        /// Plausible headers with arbitrary sizes and offsets (the
        /// interesting cases are near the boundaries): no panic, and a string
        /// is accepted only if it lies inside the packet.
        #[test]
        fn fuzz_shex_arbitrary_offsets_never_read_out_of_bounds(
            total in 0u32..80,
            size in prop_oneof![Just(32u32), 0u32..64],
            op in prop_oneof![Just(0u32), 0u32..90],
            file in 0u32..90,
            params in prop_oneof![Just(0u32), 0u32..90],
            baggage in proptest::collection::vec(any::<u8>(), 0..48),
            extra in 0usize..8,
        ) {
            let mut bytes = header(total, size, op, file, params, 0, 0);
            bytes.extend_from_slice(&baggage);
            bytes.truncate(bytes.len().saturating_sub(extra));
            if let Ok(p) = decode(&bytes) {
                let end = p.header.total_size as usize;
                prop_assert!(end <= bytes.len());
                prop_assert!((32..end).contains(&(file as usize)));
                // ANSI text: one character per byte.
                prop_assert_eq!(
                    p.file.chars().count(),
                    bytes[file as usize..end].iter().position(|b| *b == 0).unwrap()
                );
            }
        }

        /// Any packet the SDK builds decodes to the same strings.
        #[test]
        fn fuzz_shex_sdk_packets_round_trip(
            file in "[A-Z]{1,8}\\.[A-Z]{3}",
            params in proptest::option::of("[a-z /-]{0,12}"),
            verb in proptest::option::of("open|print|explore"),
        ) {
            let mut p = ShexPacket::open(&file);
            if let Some(v) = verb.as_deref() { p = p.verb(v); }
            if let Some(x) = params.as_deref() { p = p.params(x); }
            let d = decode(&p.to_bytes()).unwrap();
            prop_assert_eq!(d.file, file);
            prop_assert_eq!(d.params, params);
            prop_assert_eq!(d.verb, verb);
        }
    }
}
