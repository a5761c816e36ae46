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
/// positions are real, and each row's next position.
///
/// A model's [`super::Policy::decode`] calls [`KvCache::advance`] once per
/// chunk of new tokens (positions and attention mask), then
/// [`KvCache::append`] once per layer with the chunk's keys and values,
/// and attends over what `append` returns:
///
/// ```
/// use candle_core::{Device, Tensor};
/// use cgpo::policy::{KvCache, TokenBatch};
/// let dev = Device::Cpu;
/// let mut cache = KvCache::new();
/// // Two rows, the second left-padded by one.
/// let step = cache.advance(&TokenBatch::left_padded(&[vec![5, 6], vec![7]], 0)?)?;
/// assert_eq!(step.positions, [0, 1, 0, 0]);
/// let mask = step.mask_tensor(&dev)?.unwrap(); // [rows, 1, new, cached + new]
/// assert_eq!(mask.dims(), [2, 1, 2, 2]);
/// let kv = Tensor::zeros((2, 1, 2, 4), candle_core::DType::F32, &dev)?; // [rows, heads, new, dim]
/// let (k, _v) = cache.append(0, kv.clone(), kv)?;
/// assert_eq!(k.dims(), [2, 1, 2, 4]);
/// let step = cache.advance(&TokenBatch::column(&[8, 9]))?;
/// assert_eq!((step.positions, cache.len()), (vec![2, 1], 3));
/// # Ok::<(), cgpo::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// `[rows][cached len]`: whether each cached position is a real token.
    valid: Vec<Vec<bool>>,
    /// Each row's position of its next token (real tokens so far).
    next_pos: Vec<u32>,
}

/// What [`KvCache::advance`] gives a model for one chunk of new tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheStep {
    /// Row-major `[rows, new]`: each token's position (rotary or learned),
    /// continuing the row's real tokens; padding does not count.
    pub positions: Vec<u32>,
    /// Row-major `[rows, 1, new, cached + new]` additive attention mask: 0
    /// where a query may see a key (real keys up to itself, and always
    /// itself, so that padding rows stay finite), -inf elsewhere.
    pub mask: Vec<f32>,
    pub rows: usize,
    pub new: usize,
    /// Cached positions after this chunk (`cached + new`).
    pub total: usize,
}

impl CacheStep {
    /// The positions as a `[rows * new]` u32 tensor.
    pub fn positions_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.positions,
            self.rows * self.new,
            device,
        )?)
    }

    /// The mask as a `[rows, 1, new, total]` f32 tensor, or `None` when it
    /// masks nothing.
    pub fn mask_tensor(&self, device: &Device) -> Result<Option<Tensor>> {
        if self.mask.iter().all(|&m| m == 0.0) {
            return Ok(None);
        }
        Ok(Some(Tensor::from_slice(
            &self.mask,
            (self.rows, 1, self.new, self.total),
            device,
        )?))
    }
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

    /// Appends one chunk's keys and values of `layer` (`[rows, heads, new,
    /// dim]`, positions on dimension 2) after the cached ones and returns
    /// the layer's whole keys and values.
    pub fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let (k, v) = match &self.layers[layer] {
            Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
            None => (k, v),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// The cached keys and values of `layer`, if any.
    pub fn layer(&self, layer: usize) -> Option<(&Tensor, &Tensor)> {
        self.layers.get(layer)?.as_ref().map(|(k, v)| (k, v))
    }

    /// Records `batch` (one chunk of new tokens per row; the first chunk
    /// fixes the number of rows) and returns its positions and attention
    /// mask.
    pub fn advance(&mut self, batch: &TokenBatch) -> Result<CacheStep> {
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
        Ok(CacheStep {
            positions,
            mask,
            rows,
            new,
            total,
        })
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
        let step = cache.advance(&b).unwrap();
        let (pos, mask) = (step.positions, step.mask);
        assert_eq!(pos, [0, 1, 0, 0]);
        let inf = f32::NEG_INFINITY;
        // Row 1: the pad query sees only itself; the real one sees itself only.
        assert_eq!(&mask[4..], &[0.0, inf, inf, 0.0]);
        let step = cache.advance(&TokenBatch::column(&[8, 9])).unwrap();
        let (pos, mask) = (step.positions, step.mask);
        assert_eq!(pos, [2, 1]);
        assert_eq!(mask, [0.0, 0.0, 0.0, inf, 0.0, 0.0]);
    }
}
