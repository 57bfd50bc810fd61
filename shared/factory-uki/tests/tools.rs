//! UKIs built from Debian's real systemd-stub, checked with independent tools: `objdump -h`
//! (section table), `objcopy -O binary --only-section` (contents), `sbverify --list` (PE/COFF
//! parser of sbsigntool) and a full `sbsign` + `sbverify --cert` round trip (the image is
//! well-formed for Authenticode, which the SecureBoot step will need).

mod common;

use std::path::Path;

use common::{fake_bzimage, missing_tool, objdump_sections, run, skip, stub_path};
use factory_uki::{
    kernel_version, os_release, AssembleOptions, Layout, SectionData, Stub, TalosUki, UkiProfile,
};

const CMDLINE: &str = "talos.platform=metal console=ttyS0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1";

fn prerequisites(test: &str, tools: &[(&str, &[&str], &str)]) -> Option<Stub> {
    let mut missing = None;
    let stub = stub_path();
    if stub.is_none() {
        missing = Some("no systemd-stub (apt-get install systemd-boot-efi)".to_owned());
    }
    for (program, args, package) in tools {
        missing = missing.or_else(|| missing_tool(program, args, package));
    }
    if skip(test, missing) {
        return None;
    }
    let path = stub?;
    Some(Stub::parse(std::fs::read(&path).expect("reading the stub")).expect("parsing the stub"))
}

struct Inputs {
    _dir: tempfile::TempDir,
    kernel: Vec<u8>,
    initrd_path: std::path::PathBuf,
    initrd: Vec<u8>,
    osrel: String,
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = fake_bzimage("6.18.45-talos", 300_001);
    // A few MiB, read from a file (streamed, as a real initramfs would be).
    let initrd: Vec<u8> = (0..3 * 1024 * 1024 + 17u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let initrd_path = dir.path().join("initramfs.xz");
    std::fs::write(&initrd_path, &initrd).expect("writing the initrd");
    Inputs {
        _dir: dir,
        kernel,
        initrd_path,
        initrd,
        osrel: os_release("Talos", "v1.12.1"),
    }
}

fn build(stub: &Stub, inputs: &Inputs, profiles: Option<Vec<UkiProfile>>, out: &Path) -> Layout {
    let uki = TalosUki {
        osrel: inputs.osrel.clone(),
        cmdline: CMDLINE.to_owned(),
        uname: kernel_version(&inputs.kernel),
        splash: None,
        pcrpkey: None,
        kernel: SectionData::Bytes(inputs.kernel.clone()),
        initrd: SectionData::File(inputs.initrd_path.clone()),
        profiles,
    };
    let file = std::fs::File::create(out).expect("creating the UKI");
    factory_uki::build(
        stub,
        uki,
        &AssembleOptions::default(),
        std::io::BufWriter::new(file),
    )
    .expect("building the UKI")
}

#[test]
fn objdump_lists_the_sections_and_objcopy_extracts_the_inputs() {
    let Some(stub) = prerequisites(
        "objdump/objcopy check",
        &[
            ("objdump", &["--version"], "binutils"),
            ("objcopy", &["--version"], "binutils"),
        ],
    ) else {
        return;
    };
    let inputs = inputs();
    let dir = tempfile::tempdir().expect("tempdir");
    let uki = dir.path().join("metal-amd64-uki.efi");
    let layout = build(&stub, &inputs, None, &uki);
    assert_eq!(std::fs::metadata(&uki).expect("uki").len(), layout.file_size);

    let sections = objdump_sections(&uki);
    let names: Vec<&str> = sections.iter().map(|s| s.name.as_str()).collect();
    let stub_names: Vec<&str> = stub.sections().iter().map(|s| s.name.as_str()).collect();
    let mut expected = stub_names.clone();
    expected.extend([".osrel", ".cmdline", ".uname", ".linux", ".initrd"]);
    assert_eq!(names, expected, "section order");
    let size = |name: &str| {
        sections
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} listed"))
            .size
    };
    assert_eq!(size(".osrel"), inputs.osrel.len() as u64);
    assert_eq!(size(".cmdline"), CMDLINE.len() as u64);
    assert_eq!(size(".uname"), "6.18.45-talos".len() as u64);
    assert_eq!(size(".linux"), inputs.kernel.len() as u64);
    assert_eq!(size(".initrd"), inputs.initrd.len() as u64);
    // What objdump sees agrees with our layout (VMA = ImageBase 0 + RVA).
    for (seen, placed) in sections.iter().zip(&layout.sections) {
        assert_eq!(seen.vma, u64::from(placed.virtual_address), "{}", seen.name);
        assert_eq!(
            seen.file_off,
            u64::from(placed.pointer_to_raw_data),
            "{}",
            seen.name
        );
    }
    // Appended sections are section-aligned and follow the stub's.
    let stub_end = stub
        .sections()
        .iter()
        .map(|s| u64::from(s.virtual_address + s.virtual_size))
        .max()
        .expect("stub sections");
    let appended = &sections[stub_names.len()..];
    assert!(appended[0].vma >= stub_end);
    for s in appended {
        assert_eq!(s.vma % u64::from(stub.section_alignment()), 0, "{}", s.name);
        assert_eq!(s.file_off % u64::from(stub.file_alignment()), 0, "{}", s.name);
    }

    let extract = |name: &str| {
        let out = dir.path().join(format!("extracted{name}"));
        run(
            "objcopy",
            &[
                "-O".as_ref(),
                "binary".as_ref(),
                format!("--only-section={name}").as_ref(),
                uki.as_os_str(),
                out.as_os_str(),
            ],
        );
        std::fs::read(&out).expect("extracted section")
    };
    assert_eq!(extract(".osrel"), inputs.osrel.as_bytes());
    assert_eq!(extract(".cmdline"), CMDLINE.as_bytes());
    assert_eq!(extract(".uname"), b"6.18.45-talos");
    assert!(extract(".linux") == inputs.kernel, ".linux differs");
    assert!(extract(".initrd") == inputs.initrd, ".initrd differs");
    // The stub's own sections are untouched.
    for s in stub.sections() {
        let raw = stub.section_raw_data(s);
        let seen = extract(s.name.as_str());
        let n = (s.virtual_size as usize).min(raw.len());
        assert_eq!(&seen[..n], &raw[..n], "{}", s.name);
    }
}

#[test]
fn profiles_of_1_10_are_listed_in_order() {
    let Some(stub) = prerequisites(
        "objdump profile check",
        &[("objdump", &["--version"], "binutils")],
    ) else {
        return;
    };
    let inputs = inputs();
    let dir = tempfile::tempdir().expect("tempdir");
    let uki = dir.path().join("metal-amd64.iso-uki.efi");
    build(&stub, &inputs, Some(vec![UkiProfile::reset_iso(CMDLINE)]), &uki);
    let sections = objdump_sections(&uki);
    let appended: Vec<(&str, u64)> = sections[stub.sections().len()..]
        .iter()
        .map(|s| (s.name.as_str(), s.size))
        .collect();
    let reset_cmdline = format!("{CMDLINE} talos.experimental.wipe=system");
    assert_eq!(
        appended,
        [
            (".osrel", inputs.osrel.len() as u64),
            (".cmdline", CMDLINE.len() as u64),
            (".uname", 13),
            (".linux", inputs.kernel.len() as u64),
            (".initrd", inputs.initrd.len() as u64),
            (".profile", "ID=main".len() as u64),
            (".profile", "ID=reset\nTITLE=Reset system disk".len() as u64),
            (".cmdline", reset_cmdline.len() as u64),
        ]
    );
}

#[test]
fn deterministic_and_streamed_the_same_way() {
    let Some(stub) = prerequisites("determinism check", &[]) else {
        return;
    };
    let inputs = inputs();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.efi"), dir.path().join("b.efi"));
    build(&stub, &inputs, Some(vec![]), &a);
    build(&stub, &inputs, Some(vec![]), &b);
    let a = std::fs::read(a).expect("a");
    assert!(a == std::fs::read(b).expect("b"), "two builds differ");
    // A sized reader gives the same bytes as the file.
    let uki = TalosUki {
        osrel: inputs.osrel.clone(),
        cmdline: CMDLINE.to_owned(),
        uname: kernel_version(&inputs.kernel),
        splash: None,
        pcrpkey: None,
        kernel: SectionData::Bytes(inputs.kernel.clone()),
        initrd: SectionData::Reader {
            len: inputs.initrd.len() as u64,
            reader: Box::new(std::fs::File::open(&inputs.initrd_path).expect("initrd")),
        },
        profiles: Some(vec![]),
    };
    let mut c = Vec::new();
    factory_uki::build(&stub, uki, &AssembleOptions::default(), &mut c).expect("build");
    assert!(a == c, "reader-fed build differs");
}

#[test]
fn sbsigntool_parses_signs_and_verifies_the_uki() {
    let Some(stub) = prerequisites(
        "sbsigntool check",
        &[
            ("sbverify", &["--help"], "sbsigntool"),
            ("sbsign", &["--help"], "sbsigntool"),
            ("openssl", &["version"], "openssl"),
        ],
    ) else {
        return;
    };
    let inputs = inputs();
    let dir = tempfile::tempdir().expect("tempdir");
    let uki = dir.path().join("uki.efi");
    build(
        &stub,
        &inputs,
        Some(vec![UkiProfile::reset_maintenance(CMDLINE)]),
        &uki,
    );

    // sbverify's own PE/COFF parser: no signature yet, and no complaint about the layout (it
    // warns about "gaps between PE/COFF sections" on Debian's stub, whose symbol table we drop).
    let list = std::process::Command::new("sbverify")
        .arg("--list")
        .arg(&uki)
        .output()
        .expect("sbverify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&list.stdout),
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(list.status.success(), "sbverify --list: {text}");
    assert!(text.contains("No signature table present"), "{text}");
    assert!(!text.contains("warning"), "{text}");

    // Sign with a throwaway key and verify: the Authenticode digest covers the image as laid out.
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    run(
        "openssl",
        &[
            "req",
            "-new",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=factory-uki test",
        ]
        .map(std::ffi::OsStr::new)
        .into_iter()
        .chain([
            "-keyout".as_ref(),
            key.as_os_str(),
            "-out".as_ref(),
            cert.as_os_str(),
        ])
        .collect::<Vec<_>>(),
    );
    let signed = dir.path().join("signed.efi");
    let sign = run(
        "sbsign",
        &[
            "--key".as_ref(),
            key.as_os_str(),
            "--cert".as_ref(),
            cert.as_os_str(),
            "--output".as_ref(),
            signed.as_os_str(),
            uki.as_os_str(),
        ],
    );
    let sign_text = String::from_utf8_lossy(&sign.stderr);
    assert!(!sign_text.contains("warning"), "sbsign: {sign_text}");
    let verify = run(
        "sbverify",
        &["--cert".as_ref(), cert.as_os_str(), signed.as_os_str()],
    );
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("Signature verification OK"),
        "{verify:?}"
    );
}
