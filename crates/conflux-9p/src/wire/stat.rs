//! Qids and stat records.

use bytes::{BufMut, BytesMut};

use super::{NONUNAME, ParseError, Reader, put_str};

/// A server's unique identity for a file: `type[1] version[4] path[8]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Qid {
    /// QTDIR, QTAPPEND, QTEXCL, QTSYMLINK, ... (the high byte of the mode).
    pub ty: u8,
    /// Changes when the file changes (0 when not tracked).
    pub version: u32,
    /// Unique among the files of the server.
    pub path: u64,
}

impl Qid {
    /// Size on the wire.
    pub const LEN: usize = 13;
    /// A directory.
    pub const DIR: u8 = 0x80;
    /// An append-only file.
    pub const APPEND: u8 = 0x40;
    /// An exclusive-use file.
    pub const EXCL: u8 = 0x20;
    /// A symbolic link (9P2000.u).
    pub const SYMLINK: u8 = 0x02;
    /// A plain file.
    pub const FILE: u8 = 0;

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Qid, ParseError> {
        Ok(Qid { ty: r.u8()?, version: r.u32()?, path: r.u64()? })
    }

    pub(crate) fn emit(&self, out: &mut BytesMut) {
        out.put_u8(self.ty);
        out.put_u32_le(self.version);
        out.put_u64_le(self.path);
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.ty & Qid::DIR != 0
    }
}

/// A directory entry / file metadata record (the 9P2000.u fields are always
/// present here; under plain 9P2000 they are neither sent nor received).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)] // fields are named as in stat(5)
pub struct Stat {
    pub ty: u16,
    pub dev: u32,
    pub qid: Qid,
    pub mode: u32,
    pub atime: u32,
    pub mtime: u32,
    pub length: u64,
    pub name: String,
    pub uid: String,
    pub gid: String,
    pub muid: String,
    /// `.u`: symlink target, device description, ...
    pub extension: String,
    /// `.u`
    pub n_uid: u32,
    /// `.u`
    pub n_gid: u32,
    /// `.u`
    pub n_muid: u32,
}

impl Stat {
    /// DMDIR: a directory.
    pub const DMDIR: u32 = 0x8000_0000;
    /// DMAPPEND: append only.
    pub const DMAPPEND: u32 = 0x4000_0000;
    /// DMEXCL: exclusive use.
    pub const DMEXCL: u32 = 0x2000_0000;
    /// DMSYMLINK (9P2000.u): a symbolic link.
    pub const DMSYMLINK: u32 = 0x0200_0000;

    /// A Twstat record that changes nothing: all-ones numbers, empty strings.
    pub fn dont_touch() -> Stat {
        Stat {
            ty: !0,
            dev: !0,
            qid: Qid { ty: !0, version: !0, path: !0 },
            mode: !0,
            atime: !0,
            mtime: !0,
            length: !0,
            n_uid: !0,
            n_gid: !0,
            n_muid: !0,
            ..Stat::default()
        }
    }

    /// The size of this record on the wire, its own size field included.
    pub fn wire_len(&self, dotu: bool) -> usize {
        let strings = [&self.name, &self.uid, &self.gid, &self.muid].iter().map(|s| 2 + s.len()).sum::<usize>();
        let base = 2 + 2 + 4 + Qid::LEN + 4 + 4 + 4 + 8 + strings;
        if dotu { base + 2 + self.extension.len() + 12 } else { base }
    }

    /// Parses one record (starting with its own `size[2]`).
    pub(crate) fn parse(r: &mut Reader<'_>, dotu: bool) -> Result<Stat, ParseError> {
        let size = r.u16()? as usize;
        let before = r.remaining();
        if before < size {
            return Err(ParseError::BadStat);
        }
        let mut s = Stat {
            ty: r.u16()?,
            dev: r.u32()?,
            qid: Qid::parse(r)?,
            mode: r.u32()?,
            atime: r.u32()?,
            mtime: r.u32()?,
            length: r.u64()?,
            name: r.string()?,
            uid: r.string()?,
            gid: r.string()?,
            muid: r.string()?,
            ..Stat::default()
        };
        if dotu {
            s.extension = r.string()?;
            s.n_uid = r.u32()?;
            s.n_gid = r.u32()?;
            s.n_muid = r.u32()?;
        } else {
            (s.n_uid, s.n_gid, s.n_muid) = (NONUNAME, NONUNAME, NONUNAME);
        }
        if before - r.remaining() != size {
            return Err(ParseError::BadStat);
        }
        Ok(s)
    }

    /// Parses `n[2]` followed by one record (Rstat, Twstat).
    pub(crate) fn parse_sized(r: &mut Reader<'_>, dotu: bool) -> Result<Stat, ParseError> {
        let n = r.u16()? as usize;
        let before = r.remaining();
        let s = Stat::parse(r, dotu)?;
        if before - r.remaining() != n {
            return Err(ParseError::BadStat);
        }
        Ok(s)
    }

    /// Writes one record (starting with its own `size[2]`), as a directory read returns it.
    pub fn emit(&self, out: &mut BytesMut, dotu: bool) {
        out.put_u16_le((self.wire_len(dotu) - 2) as u16);
        out.put_u16_le(self.ty);
        out.put_u32_le(self.dev);
        self.qid.emit(out);
        out.put_u32_le(self.mode);
        out.put_u32_le(self.atime);
        out.put_u32_le(self.mtime);
        out.put_u64_le(self.length);
        for s in [&self.name, &self.uid, &self.gid, &self.muid] {
            put_str(out, s);
        }
        if dotu {
            put_str(out, &self.extension);
            out.put_u32_le(self.n_uid);
            out.put_u32_le(self.n_gid);
            out.put_u32_le(self.n_muid);
        }
    }

    pub(crate) fn emit_sized(&self, out: &mut BytesMut, dotu: bool) {
        out.put_u16_le(self.wire_len(dotu) as u16);
        self.emit(out, dotu);
    }

    /// Parses the records of a directory read.
    pub fn parse_dir(data: &[u8], dotu: bool) -> Result<Vec<Stat>, ParseError> {
        let mut bytes = bytes::Bytes::copy_from_slice(data);
        let mut r = Reader { buf: &mut bytes, ty: 117 };
        let mut out = Vec::new();
        while r.remaining() > 0 {
            out.push(Stat::parse(&mut r, dotu)?);
        }
        Ok(out)
    }
}
