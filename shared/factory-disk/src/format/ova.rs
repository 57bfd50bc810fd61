//! OVA (talos-imager.md §10.5): a tar of `disk.ovf`, `disk.mf`, `disk.vmdk`, in that order.
//!
//! The stream-optimized vmdk goes to an anonymous temporary file in the scratch directory
//! first (its size is in the OVF and in the tar header, its SHA-256 in the manifest, all of
//! which precede it); it is compressed, so it is about the size of the image's data. The tar is
//! POSIX ustar (as the OVF specification asks) with uid/gid 0, no user/group names, mode 0644
//! and the given mtime.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{vmdk, Sink};
use crate::image::SparseImage;

/// The prepared OVA: the vmdk on disk, the small members in memory.
pub(crate) struct Ova {
    vmdk: File,
    vmdk_len: u64,
    ovf: Vec<u8>,
    mf: Vec<u8>,
}

impl Ova {
    pub(crate) fn prepare(img: &SparseImage, scratch: &Path, threads: usize) -> io::Result<Self> {
        let file = tempfile::tempfile_in(scratch)?;
        let mut w = Hashing {
            inner: BufWriter::with_capacity(1 << 20, file),
            hash: Sha256::new(),
            len: 0,
        };
        vmdk::write(img, &mut w, threads)?;
        w.flush()?;
        let vmdk_len = w.len;
        let vmdk_sha = hex(&w.hash.finalize());
        let mut vmdk = w.inner.into_inner().map_err(|e| e.into_error())?;
        vmdk.seek(SeekFrom::Start(0))?;
        let ovf = ovf(img.size(), vmdk_len).into_bytes();
        let ovf_sha = hex(&Sha256::digest(&ovf));
        let mf = format!("SHA256(disk.vmdk)= {vmdk_sha}\nSHA256(disk.ovf)= {ovf_sha}\n").into_bytes();
        Ok(Self {
            vmdk,
            vmdk_len,
            ovf,
            mf,
        })
    }

    /// Length of the tar.
    pub(crate) fn len(&self) -> u64 {
        [self.ovf.len() as u64, self.mf.len() as u64, self.vmdk_len]
            .iter()
            .map(|n| 512 + n.next_multiple_of(512))
            .sum::<u64>()
            + 1024
    }

    pub(crate) fn write(&self, sink: &mut dyn Sink, mtime: u64) -> io::Result<()> {
        for (name, data) in [("disk.ovf", &self.ovf), ("disk.mf", &self.mf)] {
            let len = data.len() as u64;
            sink.write_all(&tar_header(name, len, mtime, TarFlavor::Ustar))?;
            sink.write_all(data)?;
            sink.write_zeros(len.next_multiple_of(512) - len)?;
        }
        sink.write_all(&tar_header("disk.vmdk", self.vmdk_len, mtime, TarFlavor::Ustar))?;
        // a second handle at the start, so `&self` suffices (the file was rewound in prepare)
        let mut f = self.vmdk.try_clone()?;
        f.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut left = self.vmdk_len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..n])?;
            sink.write_all(&buf[..n])?;
            left -= n as u64;
        }
        sink.write_zeros(self.vmdk_len.next_multiple_of(512) - self.vmdk_len + 1024)
    }
}

/// Hashes and counts what passes through.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Tar header dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TarFlavor {
    /// POSIX ustar (`ustar\0` `00`).
    Ustar,
    /// GNU (`ustar ` ` \0`), what GNU tar writes by default and GCP asks for.
    Gnu,
}

/// A tar header of a regular file: mode 0644, uid/gid 0, empty user/group names. Sizes of
/// 8 GiB and more (beyond 11 octal digits) use the base-256 encoding GNU tar and libarchive
/// read (the gcp `disk.raw` is 9 GiB).
pub(crate) fn tar_header(name: &str, size: u64, mtime: u64, flavor: TarFlavor) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name.as_bytes()[..n]);
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    if size < 1 << 33 {
        octal(&mut h[124..136], size);
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    octal(&mut h[136..148], mtime.min((1 << 33) - 1));
    h[156] = b'0';
    match flavor {
        TarFlavor::Ustar => {
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            octal(&mut h[329..337], 0);
            octal(&mut h[337..345], 0);
        }
        TarFlavor::Gnu => h[257..265].copy_from_slice(b"ustar  \0"),
    }
    // the checksum is computed with its own field as spaces: six octal digits, NUL, space
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h
}

/// Zero-padded octal digits filling `field` but its last byte, which is NUL.
fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

/// `disk.ovf`: a VMware virtual machine (hardware version vmx-15, 2 vCPUs, 2048 MB, a VMXNET3
/// adapter on "VM Network", the disk on a paravirtual SCSI controller), the `talos.config`
/// property delivered through guestinfo, `disk.EnableUUID=true`.
pub(crate) fn ovf(disk_size: u64, vmdk_size: u64) -> String {
    let capacity_mib = disk_size.div_ceil(1 << 20);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="disk.vmdk" ovf:id="file1" ovf:size="{vmdk_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity_mib}" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The VM Network network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="talos">
    <Info>A virtual machine</Info>
    <Name>talos</Name>
    <OperatingSystemSection ovf:id="101" vmw:osType="otherLinux64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection ovf:transport="com.vmware.guestInfo">
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>talos</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-15</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>2048MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard Disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:Description>VMXNET3 ethernet adapter on "VM Network"</rasd:Description>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <vmw:ExtraConfig ovf:required="false" vmw:key="disk.EnableUUID" vmw:value="true"/>
    </VirtualHardwareSection>
    <ProductSection ovf:required="false">
      <Info>Talos Linux</Info>
      <Product>Talos Linux</Product>
      <Property ovf:key="talos.config" ovf:type="string" ovf:userConfigurable="true" ovf:value="">
        <Label>Talos config data</Label>
        <Description>Inline Talos machine configuration (base64 encoded or plain)</Description>
      </Property>
    </ProductSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_header_checksum_and_fields() {
        let h = tar_header("disk.raw", 9 << 30, 1_700_000_000, TarFlavor::Gnu);
        assert_eq!(&h[..9], b"disk.raw\0");
        assert_eq!(&h[100..108], b"0000644\0");
        assert_eq!(h[124], 0x80, "base-256 size");
        assert_eq!(
            u64::from_be_bytes(h[128..136].try_into().unwrap_or_default()),
            9 << 30
        );
        let stored = std::str::from_utf8(&h[148..154]).unwrap_or_default();
        let mut z = h;
        z[148..156].fill(b' ');
        let sum: u32 = z.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(u32::from_str_radix(stored, 8).ok(), Some(sum));
        assert_eq!(&h[154..156], b"\0 ");

        let h = tar_header("disk.ovf", 1234, 0, TarFlavor::Ustar);
        assert_eq!(&h[124..136], b"00000002322\0");
        assert_eq!(&h[257..265], b"ustar\x0000");
    }

    #[test]
    fn ovf_sizes() {
        let o = ovf(8 << 30, 123_456);
        assert!(o.contains(r#"ovf:size="123456""#));
        assert!(o.contains(r#"ovf:capacity="8192""#));
        assert!(o.contains("vmx-15") && o.contains("VmxNet3") && o.contains("VirtualSCSI"));
    }
}
