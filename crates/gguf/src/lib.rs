//! GGUF files: the header (metadata and tensor infos) read without touching the weights, typed
//! accessors for what the app needs, exact tensor byte sizes, and a writer for test fixtures.
//!
//! Every count and length in a file is untrusted: the reader checks each against a limit before
//! using it, never reserves memory from a count alone, and fails with an error instead of
//! panicking. Reading stops once the tensor infos are read, so a 100 GB model costs a few reads.

pub mod fixtures;
mod ggml;
mod read;
mod value;
mod write;

pub use ggml::GgmlType;
pub use read::{
    read_checked_from_path, read_header, read_header_from_path, read_header_prefix, Limits, Prefix,
};
pub use value::{Value, ValueType};
pub use write::{TensorData, Writer};

/// "GGUF" as a little-endian u32.
pub const MAGIC: u32 = 0x4655_4747;
/// Used when the file does not set `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a GGUF file (the first four bytes are {0:02x?}, not \"GGUF\")")]
    NotGguf([u8; 4]),
    #[error("GGUF version {0} is not supported (only 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("the file ends inside the header (at byte {0})")]
    Truncated(u64),
    #[error("{what} at byte {offset} is {value}, above the limit of {limit}")]
    TooLarge { what: &'static str, offset: u64, value: u64, limit: u64 },
    #[error("bad header at byte {offset}: {why}")]
    Malformed { offset: u64, why: String },
    #[error("tensor {tensor} has ggml type {ggml_type}, which no llama.cpp build this app knows can load")]
    UnknownTensorType { tensor: String, ggml_type: u32 },
    #[error("tensor {tensor}: {why}")]
    BadTensor { tensor: String, why: String },
    #[error("the file is {file_len} bytes, but its tensors end at byte {data_end}: it is cut short by {} bytes (an interrupted download or copy?)", data_end - file_len)]
    TooShort { file_len: u64, data_end: u64 },
    #[error("the file is {file_len} bytes, but its tensors end at byte {data_end}: {} bytes follow that no tensor describes", file_len - data_end)]
    TooLong { file_len: u64, data_end: u64 },
    #[error("reading failed: {0}")]
    Io(std::io::Error),
}

impl Error {
    /// True when the file itself is at fault (a corrupt or hostile file), not the reading of it.
    pub fn is_invalid_file(&self) -> bool {
        !matches!(self, Error::Io(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in GGUF order: `dims[0]` is the innermost (row length).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Exact bytes of the tensor's data; `None` for a type this reader does not know, a row that
    /// is not a whole number of blocks, or a size past `u64` (only a hostile header has one).
    pub fn byte_size(&self) -> Option<u64> {
        let row = self.ggml_type.row_bytes(*self.dims.first().unwrap_or(&1))?;
        self.dims.iter().skip(1).try_fold(row, |acc, &d| acc.checked_mul(d))
    }

    /// The block (layer) a tensor belongs to: `blk.12.attn_q.weight` -> 12.
    pub fn block_index(&self) -> Option<u32> {
        self.name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
    }

    /// A mixture-of-experts expert tensor (`blk.N.ffn_{up,down,gate,gate_up}_{,ch}exps…`): what
    /// llama.cpp's `--n-cpu-moe` keeps in RAM (its `LLM_FFN_EXPS_REGEX`). The router
    /// (`ffn_gate_inp`) and shared experts (`*_shexp`) are not.
    pub fn is_expert(&self) -> bool {
        let Some(rest) = self.name.strip_prefix("blk.") else { return false };
        let Some((_, t)) = rest.split_once('.') else { return false };
        ["ffn_up_", "ffn_down_", "ffn_gate_", "ffn_gate_up_"].iter().any(|p| {
            t.strip_prefix(p).is_some_and(|s| {
                let s = s.strip_prefix("ch").unwrap_or(s);
                s == "exps" || s.starts_with("exps.")
            })
        })
    }
}

/// A GGUF header: version, metadata in file order, tensor infos and where the data begins.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the data section (after the header, aligned).
    pub data_offset: u64,
    /// Bytes of header actually read.
    pub header_bytes: u64,
}

impl Header {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    pub fn name(&self) -> Option<&str> {
        self.get_str("general.name")
    }

    /// `<architecture>.<suffix>`, the way per-model keys are named.
    fn arch_u64(&self, suffix: &str) -> Option<u64> {
        self.get_u64(&format!("{}.{suffix}", self.architecture()?))
    }

    pub fn block_count(&self) -> Option<u64> {
        self.arch_u64("block_count")
    }

    pub fn context_length(&self) -> Option<u64> {
        self.arch_u64("context_length")
    }

    pub fn embedding_length(&self) -> Option<u64> {
        self.arch_u64("embedding_length")
    }

    pub fn feed_forward_length(&self) -> Option<u64> {
        self.arch_u64("feed_forward_length")
    }

    /// Attention heads per layer. Some models (OpenELM, some hybrids) give one value per layer;
    /// a scalar is repeated for every block.
    pub fn head_count_per_layer(&self) -> Option<Vec<u64>> {
        self.per_layer("attention.head_count")
    }

    /// KV heads per layer (defaults to the head count when absent, as llama.cpp does).
    pub fn head_count_kv_per_layer(&self) -> Option<Vec<u64>> {
        self.per_layer("attention.head_count_kv").or_else(|| self.head_count_per_layer())
    }

    fn per_layer(&self, suffix: &str) -> Option<Vec<u64>> {
        let key = format!("{}.{suffix}", self.architecture()?);
        match self.get(&key)? {
            Value::Array(items) => items.iter().map(Value::as_u64).collect(),
            v => {
                let n = v.as_u64()?;
                Some(vec![n; self.block_count().unwrap_or(1) as usize])
            }
        }
    }

    /// Per-head key length: `attention.key_length`, else embedding / heads.
    pub fn key_length(&self) -> Option<u64> {
        self.arch_u64("attention.key_length").or_else(|| self.default_head_dim())
    }

    pub fn value_length(&self) -> Option<u64> {
        self.arch_u64("attention.value_length").or_else(|| self.default_head_dim())
    }

    fn default_head_dim(&self) -> Option<u64> {
        let heads = *self.head_count_per_layer()?.iter().find(|&&h| h > 0)?;
        Some(self.embedding_length()? / heads)
    }

    pub fn expert_count(&self) -> Option<u64> {
        self.arch_u64("expert_count")
    }

    pub fn expert_used_count(&self) -> Option<u64> {
        self.arch_u64("expert_used_count")
    }

    pub fn sliding_window(&self) -> Option<u64> {
        self.arch_u64("attention.sliding_window")
    }

    /// `general.file_type`: the llama.cpp ftype enum (e.g. 15 = Q4_K_M).
    pub fn file_type(&self) -> Option<u64> {
        self.get_u64("general.file_type")
    }

    /// Bytes of all tensor data; `None` if a tensor has an unknown type (or a hostile size).
    pub fn tensor_bytes(&self) -> Option<u64> {
        self.tensors.iter().try_fold(0u64, |acc, t| acc.checked_add(t.byte_size()?))
    }

    /// Checks that the tensors describe exactly a file of `file_len` bytes, the way llama.cpp's
    /// loader lays them out: every type known, every row a whole number of blocks, each tensor at
    /// the offset where the previous one ends (padded to the alignment), and the file ending where
    /// the last tensor's data ends (its padding optional). Reads nothing: a truncated download or
    /// an unloadable type is caught from the header and the file's length alone.
    pub fn check_layout(&self, file_len: u64) -> Result<()> {
        let mut expected = 0u64; // running offset in the data section, as gguf.cpp computes it
        let mut data_end = self.header_bytes; // a file with no tensors may stop after its header
        let mut padded_end = self.data_offset;
        for t in &self.tensors {
            let bad = |why: String| Error::BadTensor { tensor: t.name.clone(), why };
            if t.ggml_type.name().is_none() {
                let (tensor, ggml_type) = (t.name.clone(), t.ggml_type.0);
                return Err(Error::UnknownTensorType { tensor, ggml_type });
            }
            let row = *t.dims.first().unwrap_or(&1);
            if t.ggml_type.row_bytes(row).is_none() {
                return Err(bad(format!(
                    "a row of {row} values is not a whole number of {} blocks",
                    t.ggml_type.name().unwrap_or("?")
                )));
            }
            let overflow = || bad(format!("{:?} values run past any file size", t.dims));
            let size = t.byte_size().ok_or_else(overflow)?;
            if t.offset != expected {
                return Err(bad(format!(
                    "its data starts at offset {} of the data section, where {expected} was expected",
                    t.offset
                )));
            }
            let end = self.data_offset.checked_add(t.offset).and_then(|o| o.checked_add(size));
            data_end = end.ok_or_else(overflow)?;
            expected = size
                .checked_next_multiple_of(self.alignment)
                .and_then(|p| expected.checked_add(p))
                .ok_or_else(overflow)?;
            padded_end = self.data_offset.checked_add(expected).ok_or_else(overflow)?;
        }
        if file_len < data_end {
            return Err(Error::TooShort { file_len, data_end });
        }
        if file_len > padded_end {
            return Err(Error::TooLong { file_len, data_end });
        }
        Ok(())
    }

    /// Weight bytes of each block `0..block_count`, summed exactly from the tensor infos, and
    /// the bytes outside any block (embeddings, output head).
    pub fn bytes_per_block(&self) -> Option<(Vec<u64>, u64)> {
        // A hostile count must not size an allocation: no model has a million blocks.
        let blocks = usize::try_from(self.block_count()?).ok().filter(|&b| b <= 1 << 20)?;
        let mut per = vec![0u64; blocks];
        let mut other = 0u64;
        for t in &self.tensors {
            let size = t.byte_size()?;
            match t.block_index().map(|b| b as usize) {
                Some(b) if b < blocks => per[b] = per[b].saturating_add(size),
                _ => other = other.saturating_add(size),
            }
        }
        Some((per, other))
    }

    /// The token embedding's bytes (`token_embd.*`) and whether the output layer shares it (no
    /// `output.weight`: llama.cpp then loads a copy of the embedding as the output layer).
    /// llama.cpp keeps the embedding (the input layer) on the CPU however many layers go to a
    /// GPU.
    pub fn embedding_bytes(&self) -> (u64, bool) {
        let embd = (self.tensors.iter())
            .filter(|t| t.name.starts_with("token_embd."))
            .filter_map(TensorInfo::byte_size)
            .fold(0u64, u64::saturating_add);
        (embd, !self.tensors.iter().any(|t| t.name == "output.weight"))
    }

    /// Bytes of the expert tensors ([`TensorInfo::is_expert`]) of each block (0 for a dense
    /// block); `None` as for [`Self::bytes_per_block`].
    pub fn expert_bytes_per_block(&self) -> Option<Vec<u64>> {
        let blocks = usize::try_from(self.block_count()?).ok().filter(|&b| b <= 1 << 20)?;
        let mut per = vec![0u64; blocks];
        for t in self.tensors.iter().filter(|t| t.is_expert()) {
            let size = t.byte_size()?;
            if let Some(b) = t.block_index().map(|b| b as usize).filter(|&b| b < blocks) {
                per[b] = per[b].saturating_add(size);
            }
        }
        Some(per)
    }
}
