//! The encrypted backup archive (R4): a small plaintext header, then the homeserver's files as
//! one stream encrypted with XChaCha20-Poly1305 in the STREAM construction (`StreamBE32`).
//!
//! ```text
//! header   "MHBACKUP" | version u16 | flags u16 | chunk size u32 | nonce prefix (19 bytes)
//!          | homeserver id | backup id | wrapped data key | created_at i64      (strings: u16 length + UTF-8)
//! chunk 0  ciphertext of `chunk size` plaintext bytes + 16-byte tag
//! ...
//! last     ciphertext of 0..=`chunk size` bytes + tag, sealed with STREAM's "last" flag
//! ```
//!
//! All integers are big-endian. Every chunk is authenticated with the whole header as
//! associated data, at its position in the stream, so a changed header, a reordered, dropped or
//! altered chunk, or a missing end is detected. Each backup has its own random 256-bit data
//! key; the header holds it sealed under the master key and bound to the homeserver and backup
//! ids, so an archive cannot be passed off as another one. Memory stays at about two chunks
//! whatever the archive's size.
//!
//! Inside the stream, the plaintext is a list of entries (see [`EntryWriter`]): directories and
//! files with relative paths, ending with an explicit end entry.

use std::io::{self, Read, Write};

use chacha20poly1305::aead::stream::{NewStream, StreamBE32, StreamPrimitive};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305};
use rand::RngCore;

use matrixhost_seal::Sealer;

pub const MAGIC: &[u8; 8] = b"MHBACKUP";
/// The archive format this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Plaintext bytes per chunk: large enough for throughput, small enough for flat memory.
pub const CHUNK_SIZE: u32 = 1 << 20;
const TAG_LEN: usize = 16;
/// XChaCha20's 24-byte nonce minus STREAM's 4-byte counter and 1-byte last flag.
const NONCE_PREFIX_LEN: usize = 19;
/// Chunk sizes a reader accepts, so a forged header cannot make it allocate gigabytes.
const CHUNK_SIZE_RANGE: std::ops::RangeInclusive<u32> = 4096..=(16 << 20);
const MAX_HEADER_STRING: usize = 1024;

type Stream = StreamBE32<XChaCha20Poly1305>;

/// Why an archive was refused. The messages name the backup and never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("backup {backup} is not a matrixhost backup archive (bad magic)")]
    NotAnArchive { backup: String },
    #[error("backup {backup} uses archive format version {found}; this agent reads version {FORMAT_VERSION}")]
    UnsupportedVersion { backup: String, found: u16 },
    #[error("backup {backup} is corrupt: malformed header ({why})")]
    BadHeader { backup: String, why: String },
    #[error("backup {backup} is truncated: the archive ends inside its header")]
    TruncatedHeader { backup: String },
    #[error("backup {backup} is not the archive expected: it is backup {found_backup} of homeserver {found_homeserver}")]
    WrongArchive { backup: String, found_backup: String, found_homeserver: String },
    #[error("backup {backup} cannot be decrypted: its data key failed authentication (another master key, or a tampered header)")]
    KeyRefused { backup: String },
    #[error("backup {backup} is corrupt: authentication failed at chunk {chunk}")]
    Corrupt { backup: String, chunk: u32 },
    #[error("backup {backup} is truncated: it ends after chunk {chunk} without its final chunk")]
    Truncated { backup: String, chunk: u32 },
    #[error("backup {backup} is corrupt: {why}")]
    BadContent { backup: String, why: String },
}

impl From<ArchiveError> for io::Error {
    fn from(e: ArchiveError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The `ArchiveError` inside an I/O error, if that is what it is.
pub fn archive_error(e: &io::Error) -> Option<&ArchiveError> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<ArchiveError>())
}

/// The sealing context of a backup's data key: the key opens only for this archive.
pub fn key_context(homeserver_id: &str, backup_id: &str) -> String {
    format!("backup-data-key:v{FORMAT_VERSION}:{homeserver_id}:{backup_id}")
}

/// The archive header as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub chunk_size: u32,
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub homeserver_id: String,
    pub backup_id: String,
    /// The data key, sealed under the master key (`Sealer` text).
    pub wrapped_key: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.extend_from_slice(&self.nonce_prefix);
        for s in [&self.homeserver_id, &self.backup_id, &self.wrapped_key] {
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out
    }

    /// Reads a header; returns it with its exact bytes (the chunks' associated data).
    /// `backup` names the archive in errors.
    pub fn read(r: &mut impl Read, backup: &str) -> Result<(Header, Vec<u8>), io::Error> {
        let mut raw = Vec::with_capacity(256);
        let mut take = |n: usize, raw: &mut Vec<u8>| -> io::Result<Vec<u8>> {
            let mut buf = vec![0u8; n];
            r.read_exact(&mut buf).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => ArchiveError::TruncatedHeader { backup: backup.to_owned() }.into(),
                _ => e,
            })?;
            raw.extend_from_slice(&buf);
            Ok(buf)
        };
        let magic = take(8, &mut raw)?;
        if magic != MAGIC {
            return Err(ArchiveError::NotAnArchive { backup: backup.to_owned() }.into());
        }
        let version = u16::from_be_bytes(take(2, &mut raw)?.try_into().expect("2 bytes"));
        if version != FORMAT_VERSION {
            return Err(ArchiveError::UnsupportedVersion { backup: backup.to_owned(), found: version }.into());
        }
        let bad = |why: &str| -> io::Error { ArchiveError::BadHeader { backup: backup.to_owned(), why: why.to_owned() }.into() };
        let flags = u16::from_be_bytes(take(2, &mut raw)?.try_into().expect("2 bytes"));
        if flags != 0 {
            return Err(bad("unknown flags"));
        }
        let chunk_size = u32::from_be_bytes(take(4, &mut raw)?.try_into().expect("4 bytes"));
        if !CHUNK_SIZE_RANGE.contains(&chunk_size) {
            return Err(bad("chunk size out of range"));
        }
        let nonce_prefix: [u8; NONCE_PREFIX_LEN] = take(NONCE_PREFIX_LEN, &mut raw)?.try_into().expect("19 bytes");
        let mut strings = Vec::new();
        for _ in 0..3 {
            let len = u16::from_be_bytes(take(2, &mut raw)?.try_into().expect("2 bytes")) as usize;
            if len == 0 || len > MAX_HEADER_STRING {
                return Err(bad("string length out of range"));
            }
            let bytes = take(len, &mut raw)?;
            strings.push(String::from_utf8(bytes).map_err(|_| bad("a string is not UTF-8"))?);
        }
        let created_at = i64::from_be_bytes(take(8, &mut raw)?.try_into().expect("8 bytes"));
        let wrapped_key = strings.pop().expect("three strings");
        let backup_id = strings.pop().expect("three strings");
        let homeserver_id = strings.pop().expect("three strings");
        Ok((Header { version, chunk_size, nonce_prefix, homeserver_id, backup_id, wrapped_key, created_at }, raw))
    }
}

/// Encrypts everything written to it into an archive on `inner`. Call [`finish`] at the end;
/// an archive without its final chunk is refused as truncated.
///
/// [`finish`]: EncryptingWriter::finish
pub struct EncryptingWriter<W: Write> {
    inner: W,
    stream: Stream,
    aad: Vec<u8>,
    buf: Vec<u8>,
    chunk_size: usize,
    position: u32,
}

impl<W: Write> EncryptingWriter<W> {
    /// Writes the header of a new archive with a fresh random data key, sealed by `sealer`.
    pub fn new(inner: W, sealer: &Sealer, homeserver_id: &str, backup_id: &str, created_at: i64) -> io::Result<Self> {
        Self::with_chunk_size(inner, sealer, homeserver_id, backup_id, created_at, CHUNK_SIZE)
    }

    pub fn with_chunk_size(mut inner: W, sealer: &Sealer, homeserver_id: &str, backup_id: &str, created_at: i64, chunk_size: u32) -> io::Result<Self> {
        assert!(CHUNK_SIZE_RANGE.contains(&chunk_size), "chunk size out of range");
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        rand::thread_rng().fill_bytes(&mut nonce_prefix);
        let wrapped_key = sealer.seal(key.as_ref(), &key_context(homeserver_id, backup_id)).map_err(io::Error::other)?;
        let header = Header {
            version: FORMAT_VERSION,
            chunk_size,
            nonce_prefix,
            homeserver_id: homeserver_id.to_owned(),
            backup_id: backup_id.to_owned(),
            wrapped_key,
            created_at,
        };
        let stream = Stream::from_aead(XChaCha20Poly1305::new(Key::from_slice(key.as_ref())), nonce_prefix.as_slice().into());
        let aad = header.encode();
        inner.write_all(&aad)?;
        let chunk = chunk_size as usize;
        Ok(EncryptingWriter { inner, stream, aad, buf: Vec::with_capacity(chunk + TAG_LEN), chunk_size: chunk, position: 0 })
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        if self.position == u32::MAX {
            return Err(io::Error::other("archive too large for the STREAM counter"));
        }
        self.stream
            .encrypt_in_place(self.position, last, &self.aad, &mut self.buf)
            .map_err(|_| io::Error::other("encryption failed"))?;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        self.position += 1;
        Ok(())
    }

    /// Seals the final chunk and returns the inner writer (flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.seal(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for EncryptingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.chunk_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        // A full chunk is sealed at once as a middle chunk; `finish` seals the rest (maybe
        // empty) as the last one.
        if self.buf.len() == self.chunk_size {
            self.seal(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts an archive. Only authenticated plaintext is ever returned; the end of the stream
/// is reported only after the final chunk authenticated as the last one.
pub struct DecryptingReader<R: Read> {
    inner: R,
    header: Header,
    stream: Stream,
    aad: Vec<u8>,
    chunk_size: usize,
    position: u32,
    plain: Vec<u8>,
    offset: usize,
    /// One byte read past a full chunk, to learn whether it was the last.
    lookahead: Option<u8>,
    finished: bool,
}

impl<R: Read> DecryptingReader<R> {
    /// Reads the header, checks that it is backup `backup_id` of `homeserver_id`, and unwraps
    /// the data key with `sealer`.
    pub fn open(mut inner: R, sealer: &Sealer, homeserver_id: &str, backup_id: &str) -> io::Result<Self> {
        let (header, aad) = Header::read(&mut inner, backup_id)?;
        if header.backup_id != backup_id || header.homeserver_id != homeserver_id {
            return Err(ArchiveError::WrongArchive {
                backup: backup_id.to_owned(),
                found_backup: header.backup_id,
                found_homeserver: header.homeserver_id,
            }
            .into());
        }
        // Wiped when dropped.
        let key =
            sealer.open(&header.wrapped_key, &key_context(homeserver_id, backup_id)).map_err(|_| ArchiveError::KeyRefused { backup: backup_id.to_owned() })?;
        if key.len() != 32 {
            return Err(ArchiveError::KeyRefused { backup: backup_id.to_owned() }.into());
        }
        let stream = Stream::from_aead(XChaCha20Poly1305::new(Key::from_slice(&key)), header.nonce_prefix.as_slice().into());
        let chunk_size = header.chunk_size as usize;
        Ok(DecryptingReader {
            inner,
            header,
            stream,
            aad,
            chunk_size,
            position: 0,
            plain: Vec::with_capacity(chunk_size + TAG_LEN),
            offset: 0,
            lookahead: None,
            finished: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Whether the final chunk has been read and authenticated.
    pub fn is_finished(&self) -> bool {
        self.finished && self.offset == self.plain.len()
    }

    fn backup(&self) -> String {
        self.header.backup_id.clone()
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        let full = self.chunk_size + TAG_LEN;
        self.plain.clear();
        self.offset = 0;
        if let Some(b) = self.lookahead.take() {
            self.plain.push(b);
        }
        // Fill up to one whole sealed chunk.
        let mut tmp = [0u8; 64 * 1024];
        while self.plain.len() < full {
            let want = (full - self.plain.len()).min(tmp.len());
            let n = read_some(&mut self.inner, &mut tmp[..want])?;
            if n == 0 {
                break;
            }
            self.plain.extend_from_slice(&tmp[..n]);
        }
        let at_end = if self.plain.len() < full {
            true
        } else {
            let mut one = [0u8; 1];
            match read_some(&mut self.inner, &mut one)? {
                0 => true,
                _ => {
                    self.lookahead = Some(one[0]);
                    false
                }
            }
        };
        if self.plain.len() < TAG_LEN {
            // Not even a tag: the archive stops between chunks or inside one.
            return Err(ArchiveError::Truncated { backup: self.backup(), chunk: self.position }.into());
        }
        if at_end {
            let copy = self.plain.clone();
            if self.stream.decrypt_in_place(self.position, true, &self.aad, &mut self.plain).is_err() {
                // A chunk that authenticates as a middle chunk means the real end was cut off.
                let whole = copy.len() == full;
                let mut middle = copy;
                let truncated = whole
                    && self.stream.decrypt_in_place(self.position, false, &self.aad, &mut middle).is_ok();
                middle.fill(0);
                self.plain.clear();
                return Err(if truncated {
                    ArchiveError::Truncated { backup: self.backup(), chunk: self.position }
                } else {
                    ArchiveError::Corrupt { backup: self.backup(), chunk: self.position }
                }
                .into());
            }
            self.finished = true;
        } else if self.stream.decrypt_in_place(self.position, false, &self.aad, &mut self.plain).is_err() {
            self.plain.clear();
            return Err(ArchiveError::Corrupt { backup: self.backup(), chunk: self.position }.into());
        }
        self.position += 1;
        Ok(())
    }
}

fn read_some(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

impl<R: Read> Read for DecryptingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.offset == self.plain.len() {
            if self.finished {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = (self.plain.len() - self.offset).min(out.len());
        out[..n].copy_from_slice(&self.plain[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

impl<R: Read> Drop for DecryptingReader<R> {
    fn drop(&mut self) {
        // The plaintext buffer holds customer data; do not leave it in freed memory.
        self.plain.fill(0);
    }
}

// ------------------------------------------------------------------ entries ---------------

const TAG_DIR: u8 = b'D';
const TAG_FILE: u8 = b'F';
const TAG_END: u8 = b'Z';
const MAX_PATH: usize = 4096;

/// One entry of an archive's plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { path: String, mode: u32 },
    /// Followed by exactly `size` bytes of content.
    File { path: String, mode: u32, size: u64 },
    End,
}

/// A relative path of normal components, so unpacking can never leave its directory.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_PATH {
        return Err(format!("path length {} out of range", path.len()));
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return Err(format!("unsafe path {path:?}"));
        }
    }
    Ok(())
}

/// Writes entries: `dir`, `file` (with its content), then `end`.
pub struct EntryWriter<W: Write> {
    inner: W,
    copy_buf: Vec<u8>,
}

impl<W: Write> EntryWriter<W> {
    pub fn new(inner: W) -> Self {
        EntryWriter { inner, copy_buf: vec![0u8; 256 * 1024] }
    }

    fn head(&mut self, tag: u8, path: &str, mode: u32) -> io::Result<()> {
        check_path(path).map_err(io::Error::other)?;
        self.inner.write_all(&[tag])?;
        self.inner.write_all(&(path.len() as u16).to_be_bytes())?;
        self.inner.write_all(path.as_bytes())?;
        self.inner.write_all(&(mode & 0o777).to_be_bytes())
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.head(TAG_DIR, path, mode)
    }

    /// Writes a file entry and exactly `size` bytes from `content`; a file that shrank while it
    /// was read is an error (the backup is retried), never a silently short entry.
    pub fn file(&mut self, path: &str, mode: u32, size: u64, content: &mut impl Read) -> io::Result<()> {
        self.head(TAG_FILE, path, mode)?;
        self.inner.write_all(&size.to_be_bytes())?;
        let mut left = size;
        while left > 0 {
            let want = (self.copy_buf.len() as u64).min(left) as usize;
            let n = read_some(content, &mut self.copy_buf[..want])?;
            if n == 0 {
                return Err(io::Error::other(format!("{path} shrank while it was read")));
            }
            self.inner.write_all(&self.copy_buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Writes the end entry and returns the inner writer.
    pub fn end(mut self) -> io::Result<W> {
        self.inner.write_all(&[TAG_END])?;
        Ok(self.inner)
    }
}

/// Reads entries. After a `File` entry, read its content with [`EntryReader::content`].
pub struct EntryReader<R: Read> {
    inner: R,
    backup: String,
}

impl<R: Read> EntryReader<R> {
    pub fn new(inner: R, backup: &str) -> Self {
        EntryReader { inner, backup: backup.to_owned() }
    }

    fn bad(&self, why: impl Into<String>) -> io::Error {
        ArchiveError::BadContent { backup: self.backup.clone(), why: why.into() }.into()
    }

    fn exact<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { self.bad("an entry is cut short") } else { e })?;
        Ok(b)
    }

    pub fn next_entry(&mut self) -> io::Result<Entry> {
        let [tag] = self.exact::<1>()?;
        if tag == TAG_END {
            return Ok(Entry::End);
        }
        if tag != TAG_DIR && tag != TAG_FILE {
            return Err(self.bad(format!("unknown entry type {tag:#04x}")));
        }
        let len = u16::from_be_bytes(self.exact::<2>()?) as usize;
        let mut path = vec![0u8; len];
        self.inner.read_exact(&mut path).map_err(|_| self.bad("a path is cut short"))?;
        let path = String::from_utf8(path).map_err(|_| self.bad("a path is not UTF-8"))?;
        check_path(&path).map_err(|e| self.bad(e))?;
        let mode = u32::from_be_bytes(self.exact::<4>()?) & 0o777;
        if tag == TAG_DIR {
            return Ok(Entry::Dir { path, mode });
        }
        let size = u64::from_be_bytes(self.exact::<8>()?);
        Ok(Entry::File { path, mode, size })
    }

    /// The next `size` bytes: the content of the file entry just read.
    pub fn content(&mut self, size: u64) -> io::Take<&mut R> {
        (&mut self.inner).take(size)
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_sealer() -> (tempfile::TempDir, Sealer) {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::load_or_create(&dir.path().join("master.key")).unwrap();
        (dir, sealer)
    }

    const SMALL: u32 = 4096;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn seal(sealer: &Sealer, plain: &[u8], chunk: u32) -> Vec<u8> {
        let mut w = EncryptingWriter::with_chunk_size(Vec::new(), sealer, "hs_a", "bk_1", 1_700_000_000, chunk).unwrap();
        // Odd write sizes cross chunk boundaries.
        for piece in plain.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    fn open_all(sealer: &Sealer, archive: &[u8]) -> io::Result<Vec<u8>> {
        let mut r = DecryptingReader::open(archive, sealer, "hs_a", "bk_1")?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        assert!(r.is_finished());
        Ok(out)
    }

    fn message(e: io::Error) -> String {
        archive_error(&e).map(|a| a.to_string()).unwrap_or_else(|| format!("not an ArchiveError: {e}"))
    }

    // R4
    #[test]
    fn r4_round_trips_at_every_size_around_chunk_boundaries() {
        let (_d, sealer) = new_sealer();
        for len in [0, 1, 4095, 4096, 4097, 8192, 3 * 4096 + 17] {
            let plain = pseudo_random(len, len as u64 + 7);
            let archive = seal(&sealer, &plain, SMALL);
            assert_eq!(open_all(&sealer, &archive).unwrap(), plain, "length {len}");
            let chunks = len / SMALL as usize + 1;
            let header_len = Header::read(&mut archive.as_slice(), "bk_1").unwrap().1.len();
            assert_eq!(archive.len(), header_len + len + chunks * TAG_LEN, "length {len}: one tag per chunk");
        }
    }

    // R4
    #[test]
    fn r4_no_plaintext_and_no_data_key_in_the_archive() {
        let (_d, sealer) = new_sealer();
        let marker = b"PLAINTEXT-MARKER-4f1d2c";
        let mut plain = pseudo_random(10_000, 3);
        plain.extend_from_slice(marker);
        plain.extend(pseudo_random(10_000, 4));
        let archive = seal(&sealer, &plain, SMALL);
        assert!(!archive.windows(marker.len()).any(|w| w == marker));
        // Two archives of the same data share nothing beyond the header's fixed fields.
        let again = seal(&sealer, &plain, SMALL);
        assert_ne!(archive[100..200], again[100..200]);
    }

    // R4
    #[test]
    fn r4_a_flipped_byte_anywhere_is_refused_naming_the_chunk() {
        let (_d, sealer) = new_sealer();
        let plain = pseudo_random(3 * 4096 + 100, 9);
        let archive = seal(&sealer, &plain, SMALL);
        let header_len = Header::read(&mut archive.as_slice(), "bk_1").unwrap().1.len();
        // In the body: the chunk holding the byte is named.
        for (offset, chunk) in [(header_len + 5, 0), (header_len + 4096 + 16 + 1, 1), (archive.len() - 1, 3)] {
            let mut bad = archive.clone();
            bad[offset] ^= 0x40;
            let err = message(open_all(&sealer, &bad).unwrap_err());
            assert_eq!(err, format!("backup bk_1 is corrupt: authentication failed at chunk {chunk}"), "offset {offset}");
        }
        // In the header's nonce prefix: every chunk fails, the first is reported.
        let mut bad = archive.clone();
        bad[20] ^= 1;
        assert_eq!(message(open_all(&sealer, &bad).unwrap_err()), "backup bk_1 is corrupt: authentication failed at chunk 0");
        // In the wrapped key: the key is refused.
        let mut bad = archive.clone();
        bad[header_len - 20] ^= 1;
        assert!(message(open_all(&sealer, &bad).unwrap_err()).contains("data key failed authentication"));
        // Appended bytes are refused too.
        let mut bad = archive.clone();
        bad.extend_from_slice(b"extra");
        assert!(message(open_all(&sealer, &bad).unwrap_err()).contains("authentication failed at chunk 3"));
    }

    // R4
    #[test]
    fn r4_truncation_is_refused_as_truncated() {
        let (_d, sealer) = new_sealer();
        let plain = pseudo_random(3 * 4096 + 100, 11);
        let archive = seal(&sealer, &plain, SMALL);
        let header_len = Header::read(&mut archive.as_slice(), "bk_1").unwrap().1.len();
        let full = 4096 + TAG_LEN;
        // Cut exactly after a whole chunk: the stream lacks its final chunk.
        for chunks in [1, 2, 3] {
            let cut = &archive[..header_len + chunks * full];
            assert_eq!(
                message(open_all(&sealer, cut).unwrap_err()),
                format!("backup bk_1 is truncated: it ends after chunk {} without its final chunk", chunks - 1)
            );
        }
        // Cut right after the header, or inside a chunk.
        assert!(message(open_all(&sealer, &archive[..header_len]).unwrap_err()).contains("truncated"));
        assert!(message(open_all(&sealer, &archive[..header_len + 10]).unwrap_err()).contains("truncated"));
        let inside = message(open_all(&sealer, &archive[..header_len + full + 100]).unwrap_err());
        assert_eq!(inside, "backup bk_1 is corrupt: authentication failed at chunk 1");
        assert!(message(open_all(&sealer, &archive[..10]).unwrap_err()).contains("truncated: the archive ends inside its header"));
        // Nothing but authenticated plaintext came out before the error.
        let mut r = DecryptingReader::open(&archive[..header_len + 2 * full], &sealer, "hs_a", "bk_1").unwrap();
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
        assert_eq!(out, plain[..4096]);
    }

    // R4
    #[test]
    fn r4_another_master_key_or_another_backup_is_refused() {
        let (_d, sealer) = new_sealer();
        let (_d2, other) = new_sealer();
        let archive = seal(&sealer, b"hello", SMALL);
        assert!(message(open_all(&other, &archive).unwrap_err()).contains("cannot be decrypted: its data key failed authentication"));
        let wrong = DecryptingReader::open(archive.as_slice(), &sealer, "hs_a", "bk_2").err().unwrap();
        assert!(message(wrong).contains("not the archive expected: it is backup bk_1 of homeserver hs_a"));
        let wrong = DecryptingReader::open(archive.as_slice(), &sealer, "hs_b", "bk_1").err().unwrap();
        assert!(message(wrong).contains("not the archive expected"));
    }

    // R4
    #[test]
    fn r4_the_header_records_the_format_version_and_others_are_refused() {
        let (_d, sealer) = new_sealer();
        let archive = seal(&sealer, b"hello", SMALL);
        assert_eq!(&archive[..8], MAGIC);
        assert_eq!(u16::from_be_bytes([archive[8], archive[9]]), FORMAT_VERSION);
        let (h, _) = Header::read(&mut archive.as_slice(), "bk_1").unwrap();
        assert_eq!((h.version, h.chunk_size, h.homeserver_id.as_str(), h.backup_id.as_str(), h.created_at), (1, SMALL, "hs_a", "bk_1", 1_700_000_000));
        let mut v2 = archive.clone();
        v2[9] = 2;
        assert_eq!(message(open_all(&sealer, &v2).unwrap_err()), "backup bk_1 uses archive format version 2; this agent reads version 1");
        let mut not = archive.clone();
        not[0] = b'X';
        assert!(message(open_all(&sealer, &not).unwrap_err()).contains("not a matrixhost backup archive"));
        let mut huge = archive.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(message(open_all(&sealer, &huge).unwrap_err()).contains("chunk size out of range"));
    }

    #[test]
    fn entries_round_trip_and_unsafe_paths_are_refused() {
        let mut w = EntryWriter::new(Vec::new());
        w.dir("media_store", 0o755).unwrap();
        w.file("media_store/a", 0o600, 5, &mut &b"hello"[..]).unwrap();
        w.file("empty", 0o644, 0, &mut &b""[..]).unwrap();
        assert!(w.file("short", 0o600, 10, &mut &b"abc"[..]).is_err());
        let mut w = EntryWriter::new(Vec::new());
        w.dir("media_store", 0o4755).unwrap();
        w.file("media_store/a", 0o600, 5, &mut &b"hello"[..]).unwrap();
        let bytes = w.end().unwrap();
        let mut r = EntryReader::new(bytes.as_slice(), "bk_1");
        assert_eq!(r.next_entry().unwrap(), Entry::Dir { path: "media_store".into(), mode: 0o755 });
        assert_eq!(r.next_entry().unwrap(), Entry::File { path: "media_store/a".into(), mode: 0o600, size: 5 });
        let mut content = String::new();
        r.content(5).read_to_string(&mut content).unwrap();
        assert_eq!(content, "hello");
        assert_eq!(r.next_entry().unwrap(), Entry::End);
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "a//b", "./a", "a/"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        // A forged entry with a traversing path is refused when read.
        let mut forged = vec![TAG_FILE];
        forged.extend_from_slice(&5u16.to_be_bytes());
        forged.extend_from_slice(b"../x1");
        let err = EntryReader::new(forged.as_slice(), "bk_1").next_entry().unwrap_err();
        assert!(message(err).contains("unsafe path"));
    }
}
