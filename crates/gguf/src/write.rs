//! A GGUF writer for test fixtures (tiny real models, hostile variations of them).

use crate::{GgmlType, Value, DEFAULT_ALIGNMENT, MAGIC};
use std::io::{self, Write};

/// A tensor and its raw data, already in its ggml type's layout.
#[derive(Debug, Clone)]
pub struct TensorData {
    pub name: String,
    /// GGUF order: innermost dimension first.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    pub data: Vec<u8>,
}

impl TensorData {
    /// Bytes the tensor takes in the data section: its data, or, for a tensor given without data
    /// (a header-only fixture whose weights are a hole in a sparse file), what its shape and type
    /// need.
    fn stored_len(&self) -> u64 {
        if !self.data.is_empty() {
            return self.data.len() as u64;
        }
        let row = self.ggml_type.row_bytes(*self.dims.first().unwrap_or(&1));
        row.and_then(|r| self.dims.iter().skip(1).try_fold(r, |a, &d| a.checked_mul(d)))
            .unwrap_or(0)
    }

    /// A tensor given by shape and type alone (see [`Writer::write_sparse`]).
    pub fn header_only(name: &str, dims: &[u64], ggml_type: GgmlType) -> Self {
        Self { name: name.to_owned(), dims: dims.to_vec(), ggml_type, data: Vec::new() }
    }

    /// An f32 tensor from values.
    pub fn f32(name: &str, dims: &[u64], values: &[f32]) -> Self {
        Self {
            name: name.to_owned(),
            dims: dims.to_vec(),
            ggml_type: GgmlType::F32,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Writer {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorData>,
}

impl Default for Writer {
    fn default() -> Self {
        Self { version: 3, metadata: Vec::new(), tensors: Vec::new() }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::SkippedArray { .. } => {
            panic!("a skipped array has no items to write; build the fixture with Value::Array")
        }
        Value::Array(items) => {
            // An empty array still needs an element type; u8 is as good as any.
            let elem = items.first().map_or(0, |i| i.value_type() as u32);
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i);
            }
        }
    }
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn kv(mut self, key: &str, value: Value) -> Self {
        self.metadata.push((key.to_owned(), value));
        self
    }

    pub fn tensor(mut self, t: TensorData) -> Self {
        self.tensors.push(t);
        self
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// The header alone (what [`crate::read_header`] reads), and each tensor's data offset.
    pub fn header_bytes(&self) -> (Vec<u8>, Vec<u64>) {
        let align = self.alignment();
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offsets = Vec::new();
        let mut data_at = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.0.to_le_bytes());
            out.extend_from_slice(&data_at.to_le_bytes());
            offsets.push(data_at);
            data_at = (data_at + t.stored_len()).div_ceil(align) * align;
        }
        (out, offsets)
    }

    /// Writes the whole file: header, padding, tensor data (each aligned).
    pub fn write_to(&self, mut w: impl Write) -> io::Result<()> {
        let align = self.alignment() as usize;
        let (header, _) = self.header_bytes();
        w.write_all(&header)?;
        w.write_all(&vec![0u8; header.len().next_multiple_of(align) - header.len()])?;
        for t in &self.tensors {
            w.write_all(&t.data)?;
            w.write_all(&vec![0u8; t.data.len().next_multiple_of(align) - t.data.len()])?;
        }
        Ok(())
    }

    /// The length of the whole file: the padded header and every tensor's stored bytes.
    pub fn file_len(&self) -> u64 {
        let align = self.alignment();
        let (header, offsets) = self.header_bytes();
        let data = match (offsets.last(), self.tensors.last()) {
            (Some(at), Some(t)) => at + t.stored_len(),
            _ => 0,
        };
        (header.len() as u64).div_ceil(align) * align + data
    }

    /// Writes a model whose tensors were all given without data as a sparse file: the header,
    /// then a hole of zeros as long as the tensors need (zero weights, for memory measurements).
    pub fn write_sparse(&self, path: &std::path::Path) -> io::Result<()> {
        if self.tensors.iter().any(|t| !t.data.is_empty()) {
            return Err(io::Error::other("write_sparse takes header-only tensors"));
        }
        let mut f = std::fs::File::create(path)?;
        self.write_to(&mut f)?;
        f.set_len(self.file_len())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out).expect("writing to a Vec cannot fail");
        out
    }
}
