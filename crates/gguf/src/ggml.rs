//! ggml tensor types and their storage sizes (block size in elements, bytes per block), as in
//! ggml's type traits table (checked against ggml.h / ggml-common.h of llama.cpp build 11434, the
//! one the test tier builds: types 0–42, with 4, 5, 31–33 and 36–38 removed from GGUF files).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: Self = Self(0);
    pub const F16: Self = Self(1);
    pub const Q4_0: Self = Self(2);
    pub const Q8_0: Self = Self(8);
    pub const Q4_K: Self = Self(12);
    pub const Q6_K: Self = Self(14);
    pub const BF16: Self = Self(30);

    /// (name, elements per block, bytes per block)
    fn traits(self) -> Option<(&'static str, u64, u64)> {
        Some(match self.0 {
            0 => ("F32", 1, 4),
            1 => ("F16", 1, 2),
            2 => ("Q4_0", 32, 18),
            3 => ("Q4_1", 32, 20),
            6 => ("Q5_0", 32, 22),
            7 => ("Q5_1", 32, 24),
            8 => ("Q8_0", 32, 34),
            9 => ("Q8_1", 32, 36),
            10 => ("Q2_K", 256, 84),
            11 => ("Q3_K", 256, 110),
            12 => ("Q4_K", 256, 144),
            13 => ("Q5_K", 256, 176),
            14 => ("Q6_K", 256, 210),
            15 => ("Q8_K", 256, 292),
            16 => ("IQ2_XXS", 256, 66),
            17 => ("IQ2_XS", 256, 74),
            18 => ("IQ3_XXS", 256, 98),
            19 => ("IQ1_S", 256, 50),
            20 => ("IQ4_NL", 32, 18),
            21 => ("IQ3_S", 256, 110),
            22 => ("IQ2_S", 256, 82),
            23 => ("IQ4_XS", 256, 136),
            24 => ("I8", 1, 1),
            25 => ("I16", 1, 2),
            26 => ("I32", 1, 4),
            27 => ("I64", 1, 8),
            28 => ("F64", 1, 8),
            29 => ("IQ1_M", 256, 56),
            30 => ("BF16", 1, 2),
            34 => ("TQ1_0", 256, 54),
            35 => ("TQ2_0", 256, 66),
            39 => ("MXFP4", 32, 17),
            40 => ("NVFP4", 64, 36),
            41 => ("Q1_0", 128, 18),
            42 => ("Q2_0", 64, 18),
            _ => return None,
        })
    }

    pub fn name(self) -> Option<&'static str> {
        self.traits().map(|t| t.0)
    }

    /// Bytes of one row of `elements` values; `None` for an unknown type, a row that is not a
    /// whole number of blocks, or one too long for `u64` (only a hostile header has one).
    pub fn row_bytes(self, elements: u64) -> Option<u64> {
        let (_, block, size) = self.traits()?;
        (elements / block).checked_mul(size).filter(|_| elements.is_multiple_of(block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_ggml() {
        // A 4096-wide row in a few common types, against ggml_row_size().
        for (t, want) in [
            (GgmlType::F32, 16384),
            (GgmlType::F16, 8192),
            (GgmlType::Q4_0, 2304),
            (GgmlType::Q8_0, 4352),
            (GgmlType::Q4_K, 2304),
            (GgmlType::Q6_K, 3360),
            (GgmlType(39), 2176),
            (GgmlType(40), 2304), // NVFP4: 64 per block, 4 scale bytes + 32 nibble bytes
            (GgmlType(41), 576),  // Q1_0: 128 per block, f16 scale + 16 bytes
            (GgmlType(42), 1152), // Q2_0: 64 per block, f16 scale + 16 bytes
        ] {
            assert_eq!(t.row_bytes(4096), Some(want), "{:?}", t.name());
        }
        assert_eq!(GgmlType::Q4_K.row_bytes(100), None, "not whole blocks");
        assert_eq!(GgmlType(4).row_bytes(32), None, "removed type");
        assert_eq!(GgmlType(43).row_bytes(256), None, "past the last known type");
        assert_eq!(GgmlType(28).row_bytes(1 << 62), None, "2^62 f64 values: past u64");
    }
}
