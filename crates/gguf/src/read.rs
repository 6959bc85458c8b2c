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

struct Reader<R> {
    inner: R,
    offset: u64,
    limits: Limits,
    /// Reused for skipping: a fresh zeroed buffer per skipped token string costs more than the
    /// parsing itself.
    scratch: Vec<u8>,
}

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        let end = self.offset + buf.len() as u64;
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
            Some(size) => self.skip(size * len),
            None => (0..len).try_for_each(|_| self.skip_value(elem, depth)),
        }
    }

    /// An array's element type and length, checked.
    fn array_head(&mut self, depth: u32) -> Result<(ValueType, u64)> {
        if depth >= self.limits.max_array_depth {
            return Err(self.malformed(format!("arrays nested deeper than {depth}")));
        }
        let elem = self.value_type()?;
        let len = self.u64()?;
        Ok((elem, self.checked("array length", len, self.limits.max_array_len)?))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        let len = self.checked("string length", len, self.limits.max_string_bytes)? as usize;
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
    let mut r = Reader { inner: source, offset: 0, limits, scratch: Vec::new() };
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

    let mut metadata = Vec::with_capacity((n_kv as usize).min(MAX_RESERVE));
    for _ in 0..n_kv {
        let key = r.string()?;
        let ty = r.value_type()?;
        let value = r.value(ty, 0)?;
        metadata.push((key, value));
    }

    let mut tensors = Vec::with_capacity((n_tensors as usize).min(MAX_RESERVE));
    for _ in 0..n_tensors {
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
