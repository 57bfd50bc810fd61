//! How schematic META values travel on the kernel command line
//! (`pkg/machinery/meta` `Values.Encode`): `talos.environment=INSTALLER_META_BASE64=<b64>`.
//!
//! The payload is the values written `0x<key in lowercase hex, no padding>=<value>` and joined with
//! `;`, in schematic order (`0xa=...;0xc=hello`). Nothing is escaped: a `;` inside a value would
//! split it on decoding, exactly as upstream. From 1.6.3 (quirk
//! `SupportsCompressedEncodedMETA`) a payload longer than 256 bytes is gzip-compressed at best
//! compression; the decoder recognises gzip by its magic. The bytes are then base64 encoded with
//! the standard alphabet and padding.

use std::io::Write;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::schematic::MetaValue;
use crate::version::TalosVersion;

/// The kernel parameter carrying environment variables for machined and the installer.
pub const ENVIRONMENT_PARAM: &str = "talos.environment";
/// The environment variable holding the encoded META values.
pub const META_ENV_VAR: &str = "INSTALLER_META_BASE64";

/// Compression of large payloads exists from this release (quirk `SupportsCompressedEncodedMETA`).
const COMPRESSED_META_SINCE: TalosVersion = TalosVersion::new(1, 6, 3);
/// Payloads up to this many bytes are never compressed.
const GZIP_THRESHOLD: usize = 256;

/// Whether the version's machined understands a gzip-compressed payload.
pub fn supports_compressed_meta(version: &TalosVersion) -> bool {
    version.core() >= COMPRESSED_META_SINCE
}

/// The uncompressed payload: `0x<key>=<value>` joined with `;`.
pub fn meta_payload(meta: &[MetaValue]) -> String {
    meta.iter()
        .map(|m| format!("0x{:x}={}", m.key, m.value))
        .collect::<Vec<_>>()
        .join(";")
}

/// The base64 text of `INSTALLER_META_BASE64`.
///
/// Not byte-exact with Go when compressed: the gzip header (no name, mtime 0, XFL 2 for best
/// compression, OS 255) matches Go's `compress/gzip`, but the deflate stream comes from a
/// different compressor (miniz_oxide vs Go's `compress/flate`), so the bytes — not the decoded
/// values — differ from what the Go imager prints for payloads over 256 bytes.
pub fn encode_meta(meta: &[MetaValue], allow_gzip: bool) -> String {
    let payload = meta_payload(meta);
    if allow_gzip && payload.len() > GZIP_THRESHOLD {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        // Writing into a Vec cannot fail.
        encoder.write_all(payload.as_bytes()).expect("gzip into memory");
        let compressed = encoder.finish().expect("gzip into memory");
        STANDARD.encode(compressed)
    } else {
        STANDARD.encode(payload.as_bytes())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Read;

    use super::*;

    /// Upstream `DecodeValues`: base64, then gunzip when the bytes start with the gzip magic and
    /// are at least 10 long, then split on `;` and each part on its first `=` with a Go
    /// `ParseUint(k, 0, 8)` key (here only the `0x` form the encoder writes).
    pub(crate) fn decode_meta(text: &str) -> (bool, Vec<MetaValue>) {
        let mut bytes = STANDARD.decode(text).expect("base64");
        let gzipped = bytes.len() >= 10 && bytes[0] == 0x1f && bytes[1] == 0x8b;
        if gzipped {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut out)
                .expect("gunzip");
            bytes = out;
        }
        let text = String::from_utf8(bytes).expect("utf-8");
        let values = text
            .split(';')
            .map(|part| {
                let (k, v) = part.split_once('=').expect("k=v");
                let key = u8::from_str_radix(k.strip_prefix("0x").expect("0x key"), 16).expect("hex key");
                MetaValue {
                    key,
                    value: v.to_owned(),
                }
            })
            .collect();
        (gzipped, values)
    }

    fn mv(key: u8, value: &str) -> MetaValue {
        MetaValue {
            key,
            value: value.to_owned(),
        }
    }

    #[test]
    fn payload_format() {
        assert_eq!(meta_payload(&[mv(0xc, "hello")]), "0xc=hello");
        assert_eq!(
            meta_payload(&[mv(0x0a, "{\"a\":1}"), mv(0, ""), mv(0xff, "x=y")]),
            "0xa={\"a\":1};0x0=;0xff=x=y"
        );
    }

    #[test]
    fn small_payloads_are_plain_base64() {
        assert_eq!(encode_meta(&[mv(0xc, "hello")], true), "MHhjPWhlbGxv");
        assert_eq!(
            encode_meta(&[mv(0xa, "{\"externalIPs\":[\"1.2.3.4\"]}")], true),
            "MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ=="
        );
    }

    #[test]
    fn exactly_256_bytes_is_not_compressed_257_is() {
        // "0xc=" is 4 bytes.
        let at = [mv(0xc, &"a".repeat(252))];
        assert_eq!(meta_payload(&at).len(), 256);
        let encoded = encode_meta(&at, true);
        assert_eq!(decode_meta(&encoded), (false, at.to_vec()));

        let over = [mv(0xc, &"a".repeat(253))];
        let encoded = encode_meta(&over, true);
        assert_eq!(decode_meta(&encoded), (true, over.to_vec()));
        // Header as Go's compress/gzip writes it at BestCompression.
        let raw = STANDARD.decode(&encoded).expect("base64");
        assert_eq!(&raw[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);

        // Without gzip support the large payload stays plain.
        let plain = encode_meta(&over, false);
        assert_eq!(plain, STANDARD.encode(meta_payload(&over)));
        assert_eq!(decode_meta(&plain), (false, over.to_vec()));
    }

    #[test]
    fn compressed_meta_from_1_6_3() {
        let v = |s: &str| TalosVersion::parse(s).expect("version");
        assert!(!supports_compressed_meta(&v("1.6.2")));
        assert!(supports_compressed_meta(&v("1.6.3")));
        assert!(supports_compressed_meta(&v("1.6.3-alpha.0")));
        assert!(supports_compressed_meta(&v("1.12.0")));
    }
}
