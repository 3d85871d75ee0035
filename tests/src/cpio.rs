//! Minimal writer for the `newc` cpio format the kernel unpacks as initramfs.
//!
//! Written in Rust instead of shelling out to `cpio` so that the archive can
//! hold a `/dev/console` character device without `mknod` on the build host
//! (the kernel opens it for init's stdio before `/init` runs; without it the
//! payload's markers would never reach the serial console), and so that the
//! output is byte-for-byte reproducible (mtime 0, fixed inode numbers).

use std::io::{self, Write};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Accumulates entries and serialises them in insertion order.
#[derive(Debug, Default)]
pub(crate) struct Archive {
    buf: Vec<u8>,
    next_ino: u32,
}

impl Archive {
    pub(crate) fn dir(&mut self, name: &str) {
        self.entry(name, S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    pub(crate) fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, S_IFREG | mode, 1, (0, 0), data);
    }

    pub(crate) fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    pub(crate) fn char_dev(&mut self, name: &str, mode: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | mode, 1, (major, minor), &[]);
    }

    /// Appends the trailer and writes the archive.
    pub(crate) fn finish(mut self, out: &mut impl Write) -> io::Result<()> {
        self.next_ino = 0;
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        out.write_all(&self.buf)
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let ino = if name == "TRAILER!!!" { 0 } else { self.next_ino };
        let name_len = name.len() + 1;
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: reproducible output
            u32::try_from(data.len()).expect("cpio member under 4 GiB"),
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            u32::try_from(name_len).expect("short name"),
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_and_alignment() {
        let mut a = Archive::default();
        a.dir("dev");
        a.char_dev("dev/console", 0o600, 5, 1);
        a.file("init", 0o755, b"#!/bin/sh\n");
        let mut out = Vec::new();
        a.finish(&mut out).unwrap();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("dev/console"));
        assert!(text.contains("TRAILER!!!"));
        // Walk the headers: each must start on a 4-byte boundary.
        let mut pos = 0;
        let mut count = 0;
        while pos < out.len() {
            assert_eq!(&out[pos..pos + 6], b"070701", "header at {pos}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&out[pos + 6 + i * 8..pos + 14 + i * 8]).unwrap();
                usize::from_str_radix(s, 16).unwrap()
            };
            let (filesize, namesize) = (field(6), field(11));
            let mut next = pos + 110 + namesize;
            next = next.div_ceil(4) * 4 + filesize;
            pos = next.div_ceil(4) * 4;
            count += 1;
            if count == 4 {
                break;
            }
        }
        assert_eq!(count, 4);
    }
}
