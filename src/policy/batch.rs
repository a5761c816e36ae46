//! Padded token batches and the key/value cache of incremental decoding.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// A `[rows, len]` batch of token ids with a mask of the real tokens.
/// Prompts are left-padded so that every row's last prompt token is in
/// the last column; responses appended after them may be right-padded.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    ids: Vec<u32>,
    mask: Vec<bool>,
    rows: usize,
    len: usize,
}

impl TokenBatch {
    /// Row-major ids and mask of `rows` rows of `len` tokens each.
    pub fn new(ids: Vec<u32>, mask: Vec<bool>, rows: usize, len: usize) -> Result<Self> {
        if ids.len() != rows * len || mask.len() != rows * len {
            return Err(Error::Rollout(format!(
                "token batch of {rows} x {len} needs {} ids and mask entries, got {} and {}",
                rows * len,
                ids.len(),
                mask.len()
            )));
        }
        Ok(Self {
            ids,
            mask,
            rows,
            len,
        })
    }

    /// Left-pads `seqs` with `pad` to the longest one.
    pub fn left_padded(seqs: &[Vec<u32>], pad: u32) -> Result<Self> {
        let len = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(seqs.len() * len);
        let mut mask = Vec::with_capacity(seqs.len() * len);
        for s in seqs {
            let padding = len - s.len();
            ids.extend(std::iter::repeat_n(pad, padding).chain(s.iter().copied()));
            mask.extend(
                std::iter::repeat_n(false, padding).chain(std::iter::repeat_n(true, s.len())),
            );
        }
        Self::new(ids, mask, seqs.len(), len)
    }

    /// One column of real tokens, one per row (a decoding step).
    pub fn column(tokens: &[u32]) -> Self {
        Self {
            ids: tokens.to_vec(),
            mask: vec![true; tokens.len()],
            rows: tokens.len(),
            len: 1,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0 || self.len == 0
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    pub fn mask(&self) -> &[bool] {
        &self.mask
    }

    /// The ids of row `r`.
    pub fn row(&self, r: usize) -> &[u32] {
        &self.ids[r * self.len..(r + 1) * self.len]
    }

    /// The ids as a `[rows, len]` u32 tensor.
    pub fn ids_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.ids,
            (self.rows, self.len),
            device,
        )?)
    }

    /// The mask as a `[rows, len]` f32 tensor of 0/1.
    pub fn mask_tensor(&self, device: &Device) -> Result<Tensor> {
        let m: Vec<f32> = self.mask.iter().map(|&m| f32::from(u8::from(m))).collect();
        Ok(Tensor::from_vec(m, (self.rows, self.len), device)?)
    }
}

/// The keys and values of the tokens decoded so far, one pair per layer,
/// plus the bookkeeping that makes padding invisible: which cached
/// positions are real, and each row's next rotary position.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    pub(crate) layers: Vec<Option<(Tensor, Tensor)>>,
    /// `[rows][cached len]`: whether each cached position is a real token.
    pub(crate) valid: Vec<Vec<bool>>,
    /// Each row's position of its next token (real tokens so far).
    pub(crate) next_pos: Vec<u32>,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cached positions per row (padding included).
    pub fn len(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rotary positions of `batch`'s tokens (continuing the cache) and the
    /// additive attention mask `[rows, 1, new, cached + new]`: a query sees
    /// the real keys up to itself, and always itself (so that padding rows
    /// stay finite). Records the new tokens in the bookkeeping.
    pub(crate) fn advance(&mut self, batch: &TokenBatch) -> Result<(Vec<u32>, Vec<f32>)> {
        let (rows, new) = (batch.rows(), batch.len());
        if self.valid.is_empty() {
            self.valid = vec![Vec::new(); rows];
            self.next_pos = vec![0; rows];
        } else if self.valid.len() != rows {
            return Err(Error::Rollout(format!(
                "the cache holds {} rows, the batch has {rows}",
                self.valid.len()
            )));
        }
        let old = self.len();
        let total = old + new;
        let mut positions = Vec::with_capacity(rows * new);
        let mut mask = vec![f32::NEG_INFINITY; rows * new * total];
        for r in 0..rows {
            let row_mask = &batch.mask()[r * new..(r + 1) * new];
            for (i, &real) in row_mask.iter().enumerate() {
                positions.push(self.next_pos[r]);
                if real {
                    self.next_pos[r] += 1;
                }
                self.valid[r].push(real);
                let q = &mut mask[(r * new + i) * total..(r * new + i + 1) * total];
                for (k, slot) in q.iter_mut().enumerate().take(old + i + 1) {
                    if self.valid[r][k] || k == old + i {
                        *slot = 0.0;
                    }
                }
            }
        }
        Ok((positions, mask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_padding_and_mask() {
        let b = TokenBatch::left_padded(&[vec![1, 2, 3], vec![4]], 0).unwrap();
        assert_eq!(b.ids(), &[1, 2, 3, 0, 0, 4]);
        assert_eq!(b.mask(), &[true, true, true, false, false, true]);
        assert!(TokenBatch::new(vec![1], vec![true, true], 1, 1).is_err());
    }

    #[test]
    fn cache_positions_skip_padding_and_mask_hides_it() {
        let mut cache = KvCache::new();
        let b = TokenBatch::left_padded(&[vec![5, 6], vec![7]], 0).unwrap();
        let (pos, mask) = cache.advance(&b).unwrap();
        assert_eq!(pos, [0, 1, 0, 0]);
        let inf = f32::NEG_INFINITY;
        // Row 1: the pad query sees only itself; the real one sees itself only.
        assert_eq!(&mask[4..], &[0.0, inf, inf, 0.0]);
        let (pos, mask) = cache.advance(&TokenBatch::column(&[8, 9])).unwrap();
        assert_eq!(pos, [2, 1]);
        assert_eq!(mask, [0.0, 0.0, 0.0, inf, 0.0, 0.0]);
    }
}
