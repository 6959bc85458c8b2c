//! The bounded header reader.

use crate::{
    Error, GgmlType, Header, Result, TensorInfo, Value, ValueType, DEFAULT_ALIGNMENT, MAGIC,
};
use std::io::{BufReader, Read};
use std::path::Path;

/// Ceilings on what a header may claim. The defaults fit every real model seen (the largest
/// vocabularies have about 260k tokens) with a wide margin, and stop a hostile file from making
/// the reader allocate or loop without end.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_tensors: u64,
    pub max_kv: u64,
    pub max_string_bytes: u64,
    pub max_array_len: u64,
    /// Arrays longer than this are read past and kept as [`Value::SkippedArray`].
    pub max_kept_array_len: u64,
    pub max_array_depth: u32,
    pub max_dims: u32,
    /// Total bytes the header may span; reading stops with an error past it.
    pub max_header_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tensors: 1 << 20,
            max_kv: 1 << 16,
            max_string_bytes: 64 << 20,
            max_array_len: 1 << 24,
            max_kept_array_len: 4096,
            max_array_depth: 4,
            max_dims: 4,
            max_header_bytes: 512 << 20,
        }
    }
}

/// Reserve at most this many elements up front, whatever a count claims: memory then grows
/// only as fast as real bytes arrive.
const MAX_RESERVE: usize = 4096;

/// The fewest bytes one metadata entry takes: its key's length, its type, a one-byte value.
const KV_MIN: u64 = 8 + 4 + 1;
/// The fewest bytes one tensor info takes: its name's length, dimension count, type, offset.
const TENSOR_MIN: u64 = 8 + 4 + 4 + 8;

/// The fewest bytes one value of type `ty` takes.
fn value_min(ty: ValueType) -> u64 {
    ty.fixed_size().unwrap_or(match ty {
        ValueType::String => 8,
        _ => 4 + 8, // an array: its element type and length
    })
}

struct Reader<R> {
    inner: R,
    offset: u64,
    limits: Limits,
    /// Reused for skipping: a fresh zeroed buffer per skipped token string costs more than the
    /// parsing itself.
    scratch: Vec<u8>,
    /// Bytes that what the header announced (counts and lengths read, entries and items not yet
    /// begun) will take at least past the read under way.
    owed: u64,
    /// Where the read under way ends (a string's bytes, a skipped run, a number).
    reading_to: u64,
}

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        let end = self.offset + buf.len() as u64;
        self.reading_to = self.reading_to.max(end);
        if end > self.limits.max_header_bytes {
            return Err(Error::TooLarge {
                what: "header size",
                offset: self.offset,
                value: end,
                limit: self.limits.max_header_bytes,
            });
        }
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Error::Truncated(self.offset),
            _ => Error::Io(e),
        })?;
        self.offset = end;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn checked(&self, what: &'static str, value: u64, limit: u64) -> Result<u64> {
        if value > limit {
            return Err(Error::TooLarge { what, offset: self.offset, value, limit });
        }
        Ok(value)
    }

    /// Reads past `n` bytes without keeping them.
    fn skip(&mut self, mut n: u64) -> Result<()> {
        self.reading_to = self.reading_to.max(self.offset.saturating_add(n));
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(8192, 0);
        let mut result = Ok(());
        while n > 0 {
            let k = n.min(scratch.len() as u64) as usize;
            if let Err(e) = self.fill(&mut scratch[..k]) {
                result = Err(e);
                break;
            }
            n -= k as u64;
        }
        self.scratch = scratch;
        result
    }

    /// Reads past one value of type `ty`.
    fn skip_value(&mut self, ty: ValueType, depth: u32) -> Result<()> {
        if let Some(size) = ty.fixed_size() {
            return self.skip(size);
        }
        match ty {
            ValueType::String => {
                let len = self.u64()?;
                let len = self.checked("string length", len, self.limits.max_string_bytes)?;
                self.skip(len)
            }
            _ => {
                let (elem, len) = self.array_head(depth)?;
                self.skip_items(elem, len, depth + 1)
            }
        }
    }

    fn skip_items(&mut self, elem: ValueType, len: u64, depth: u32) -> Result<()> {
        match elem.fixed_size() {
            // len <= max_array_len and size <= 8, so this cannot overflow.
            Some(size) => {
                self.begin(size * len);
                self.skip(size * len)
            }
            None => (0..len).try_for_each(|_| {
                self.begin(value_min(elem));
                self.skip_value(elem, depth)
            }),
        }
    }

    /// `n` more bytes announced (a count or length just read).
    fn owe(&mut self, n: u64) {
        self.owed = self.owed.saturating_add(n);
    }

    /// An announced part of `n` bytes (at least) is being read now.
    fn begin(&mut self, n: u64) {
        self.owed = self.owed.saturating_sub(n);
    }

    /// An array's element type and length, checked.
    fn array_head(&mut self, depth: u32) -> Result<(ValueType, u64)> {
        if depth >= self.limits.max_array_depth {
            return Err(self.malformed(format!("arrays nested deeper than {depth}")));
        }
        let elem = self.value_type()?;
        let len = self.u64()?;
        let len = self.checked("array length", len, self.limits.max_array_len)?;
        // len <= max_array_len and value_min <= 12, so this cannot overflow.
        self.owe(len * value_min(elem));
        Ok((elem, len))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        let len = self.checked("string length", len, self.limits.max_string_bytes)? as usize;
        self.reading_to = self.reading_to.max(self.offset + len as u64);
        // Read in chunks so a length that lies about a short file fails before a big allocation.
        let mut out = Vec::with_capacity(len.min(1 << 16));
        let mut chunk = [0u8; 8192];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            self.fill(&mut chunk[..n])?;
            out.extend_from_slice(&chunk[..n]);
            left -= n;
        }
        // Token strings may hold invalid UTF-8 (byte-level vocabularies); keep them readable.
        Ok(String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    fn value(&mut self, ty: ValueType, depth: u32) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.bytes()?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.bytes()?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.bytes()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.bytes()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.bytes()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.bytes()?)),
            ValueType::Bool => {
                let [b] = self.bytes::<1>()?;
                match b {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    _ => return Err(self.malformed(format!("bool byte {b}"))),
                }
            }
            ValueType::String => Value::String(self.string()?),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.bytes()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.bytes()?)),
            ValueType::Array => {
                let (elem, len) = self.array_head(depth)?;
                if len > self.limits.max_kept_array_len {
                    self.skip_items(elem, len, depth + 1)?;
                    return Ok(Value::SkippedArray { elem, len });
                }
                let mut items = Vec::with_capacity((len as usize).min(MAX_RESERVE));
                for _ in 0..len {
                    self.begin(value_min(elem));
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(items)
            }
        })
    }

    fn value_type(&mut self) -> Result<ValueType> {
        let id = self.u32()?;
        ValueType::from_id(id).ok_or_else(|| self.malformed(format!("unknown value type {id}")))
    }

    fn malformed(&self, why: String) -> Error {
        Error::Malformed { offset: self.offset, why }
    }
}

/// Reads the header from any reader positioned at the start of a GGUF file. Reads only the
/// header: nothing past the tensor infos.
pub fn read_header<R: Read>(source: R, limits: Limits) -> Result<Header> {
    parse(&mut reader(source, limits))
}

/// What [`read_header_prefix`] found short of a header.
#[derive(Debug)]
pub enum Prefix {
    /// The bytes end inside the header, which spans at least this many bytes: a lower bound
    /// from the counts and lengths read so far, so asking for that much never reads past the
    /// header.
    More(u64),
    /// Not a header this reader takes (or one over the limits).
    Invalid(Error),
}

/// Reads a header from a file's first bytes, or says how many bytes it spans at least: a remote
/// reader asks for that much next (and a little more), and so reads the header in a few
/// requests without reading much past it.
pub fn read_header_prefix(bytes: &[u8], limits: Limits) -> std::result::Result<Header, Prefix> {
    let mut r = reader(bytes, limits);
    match parse(&mut r) {
        Ok(h) => Ok(h),
        Err(Error::Truncated(_)) => {
            let at_least = r.reading_to.max(r.offset).saturating_add(r.owed);
            match r.checked(
                "header size",
                at_least.max(bytes.len() as u64 + 1),
                limits.max_header_bytes,
            ) {
                Ok(n) => Err(Prefix::More(n)),
                Err(e) => Err(Prefix::Invalid(e)),
            }
        }
        Err(e) => Err(Prefix::Invalid(e)),
    }
}

fn reader<R: Read>(inner: R, limits: Limits) -> Reader<R> {
    Reader { inner, offset: 0, limits, scratch: Vec::new(), owed: 0, reading_to: 0 }
}

fn parse<R: Read>(r: &mut Reader<R>) -> Result<Header> {
    let limits = r.limits;
    let magic = r.bytes::<4>()?;
    if u32::from_le_bytes(magic) != MAGIC {
        return Err(Error::NotGguf(magic));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        // A big-endian file shows its version byte-swapped (e.g. 0x03000000).
        return Err(Error::UnsupportedVersion(version));
    }
    let n_tensors = r.u64()?;
    let n_tensors = r.checked("tensor count", n_tensors, limits.max_tensors)?;
    let n_kv = r.u64()?;
    let n_kv = r.checked("metadata count", n_kv, limits.max_kv)?;
    // Both within their limits (2^16 and 2^20), so this cannot overflow.
    r.owe(n_kv * KV_MIN + n_tensors * TENSOR_MIN);

    let mut metadata = Vec::with_capacity((n_kv as usize).min(MAX_RESERVE));
    for _ in 0..n_kv {
        r.begin(KV_MIN);
        let key = r.string()?;
        let ty = r.value_type()?;
        let value = r.value(ty, 0)?;
        metadata.push((key, value));
    }

    let mut tensors = Vec::with_capacity((n_tensors as usize).min(MAX_RESERVE));
    for _ in 0..n_tensors {
        r.begin(TENSOR_MIN);
        let name = r.string()?;
        let n_dims = r.u32()?;
        r.checked("tensor dimensions", n_dims.into(), limits.max_dims.into())?;
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64()?);
        }
        if dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).is_none() {
            return Err(r.malformed(format!("tensor {name} has {dims:?} elements, overflowing")));
        }
        let ggml_type = GgmlType(r.u32()?);
        let offset = r.u64()?;
        tensors.push(TensorInfo { name, dims, ggml_type, offset });
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
            _ => return Err(r.malformed(format!("general.alignment {v:?} is not a power of two"))),
        },
    };
    let header_bytes = r.offset;
    let data_offset = header_bytes.div_ceil(alignment) * alignment;
    Ok(Header { version, metadata, tensors, alignment, data_offset, header_bytes })
}

/// Reads the header of a GGUF file on disk.
pub fn read_header_from_path(path: &Path) -> Result<Header> {
    let file = std::fs::File::open(path).map_err(Error::Io)?;
    read_header(BufReader::with_capacity(1 << 20, file), Limits::default())
}

/// Reads the header of a GGUF file on disk and checks it against the file's length
/// ([`Header::check_layout`]): what the app registers or starts must be loadable as a whole.
pub fn read_checked_from_path(path: &Path) -> Result<Header> {
    let file = std::fs::File::open(path).map_err(Error::Io)?;
    let len = file.metadata().map_err(Error::Io)?.len();
    let header = read_header(BufReader::with_capacity(1 << 20, file), Limits::default())?;
    header.check_layout(len)?;
    Ok(header)
}
