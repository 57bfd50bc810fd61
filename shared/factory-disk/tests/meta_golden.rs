//! The Talos ADV against golden bytes built by hand from the spec text (talos-imager.md §7.2);
//! the SHA-256 values were computed independently (Python hashlib over the same layout).

use std::collections::BTreeMap;

use factory_disk::meta::{
    decode_adv, decode_meta, disk_image_meta_values, encode_adv, meta_content, ADV_LENGTH,
};
use factory_disk::{Bootloader, TalosVersion};

type R = Result<(), Box<dyn std::error::Error>>;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn golden_hello_dual_boot() -> R {
    let values = disk_image_meta_values(
        [(0x0c, &b"hello"[..])],
        "amd64",
        false,
        TalosVersion::parse("v1.11.0"),
        Bootloader::DualBoot,
    );
    let adv = encode_adv(&values)?;
    assert_eq!(adv.len(), 256 * 1024);

    let mut want = vec![0u8; ADV_LENGTH];
    let head: &[u8] = &[
        0x5a, 0x4b, 0x3c, 0x2d, // magic1
        0, 0, 0, 0x0c, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o', // 0x0c = hello
        0, 0, 0, 0x11, 0, 0, 0, 9, b'd', b'u', b'a', b'l', b'-', b'b', b'o', b'o', b't', // 0x11
    ];
    want[..head.len()].copy_from_slice(head);
    want[ADV_LENGTH - 4..].copy_from_slice(&[0xa5, 0xb4, 0xc3, 0xd2]);
    assert_eq!(
        hex(&adv[ADV_LENGTH - 36..ADV_LENGTH - 4]),
        "eed459e582e331e8963dd9f7e3d2b7fa134c49ac8ccd839b03a0538036310074"
    );
    want[ADV_LENGTH - 36..ADV_LENGTH - 4].copy_from_slice(&adv[ADV_LENGTH - 36..ADV_LENGTH - 4]);
    assert!(adv == want, "ADV bytes differ from the spec layout");

    assert_eq!(decode_adv(&adv)?, values);
    let both = meta_content(&values)?.ok_or("content")?;
    assert_eq!(both.len(), 2 * ADV_LENGTH);
    assert!(both[..ADV_LENGTH] == both[ADV_LENGTH..]);
    Ok(())
}

#[test]
fn empty_adv_and_no_values() -> R {
    let adv = encode_adv(&BTreeMap::new())?;
    assert_eq!(
        hex(&adv[ADV_LENGTH - 36..ADV_LENGTH - 4]),
        "e7a327df2cfb2c3010ac1a387e9573d46ea52cac7f25db80ad8fbb41aceabf70"
    );
    assert!(
        meta_content(&BTreeMap::new())?.is_none(),
        "no values: META stays zero"
    );
    // sd-boot / grub / SecureBoot / arm64 / <1.10: no 0x11
    let v = TalosVersion::parse("v1.11.0");
    for (arch, sb, bl) in [
        ("amd64", false, Bootloader::SdBoot),
        ("amd64", false, Bootloader::Grub),
        ("amd64", true, Bootloader::DualBoot),
        ("arm64", false, Bootloader::DualBoot),
    ] {
        assert!(disk_image_meta_values([], arch, sb, v, bl).is_empty());
    }
    assert!(disk_image_meta_values(
        [],
        "amd64",
        false,
        TalosVersion::parse("v1.9.0"),
        Bootloader::DualBoot
    )
    .is_empty());
    Ok(())
}

#[test]
fn fallback_to_second_copy_and_capacity() -> R {
    let values: BTreeMap<u8, Vec<u8>> = [(0x0a, vec![1u8; 1000]), (0x0b, Vec::new())]
        .into_iter()
        .collect();
    let mut part = meta_content(&values)?.ok_or("content")?;
    part.resize(1024 * 1024, 0);
    part[100] ^= 0xff; // corrupt copy 1
    assert!(decode_adv(&part[..ADV_LENGTH]).is_err());
    assert_eq!(decode_meta(&part)?, values);

    // 20 + (8 + len) <= 256 KiB - 40  (Go SetTagBytes)
    let max = ADV_LENGTH - 40 - 28;
    let fits: BTreeMap<u8, Vec<u8>> = [(0x0c, vec![b'a'; max])].into_iter().collect();
    assert_eq!(decode_adv(&encode_adv(&fits)?)?, fits);
    let over: BTreeMap<u8, Vec<u8>> = [(0x0c, vec![b'a'; max + 1])].into_iter().collect();
    assert!(encode_adv(&over).is_err());
    Ok(())
}
