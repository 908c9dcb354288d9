//! Geometry of a 2-D convolution layer, shared by the integer forward pass,
//! the float forward pass, both circuits and the commitment.
//!
//! A convolution is a linear map with shared weights, so every layer of a
//! quantized network is "output `o` sums `W[row][col] * a[input]` over its
//! taps, plus `bias[row]`". A dense layer has one row per output and taps
//! every input; a convolution has one row per output *channel* and taps the
//! `in_channels * kernel^2` inputs under its window. [`Conv2d::taps`] lists
//! them; the arithmetic (quant, circuit) is the same for both.
//!
//! Layout (PyTorch/ONNX): activations are CHW-flattened,
//! `index = (c * h + y) * w + x`; a kernel row is flattened `(ic, ky, kx)`
//! (`weight.reshape(out_channels, -1)`); cross-correlation with zero padding:
//! `out[c][y][x] = bias[c] + sum W[c][ic][ky][kx] *
//! in[ic][y*stride + ky - padding][x*stride + kx - padding]`.

use serde::{Deserialize, Serialize};

/// Largest supported kernel side, stride, padding and image side.
pub const MAX_CONV_SIDE: usize = 256;

/// A 2-D convolution (stride and zero padding the same on both axes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2d {
    /// Input channels.
    pub in_channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output channels (rows of the weight matrix).
    pub out_channels: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
}

impl Conv2d {
    /// Checks the geometry; says what is wrong.
    pub fn check(&self) -> std::result::Result<(), String> {
        let sides = [self.in_h, self.in_w, self.kernel, self.stride];
        if self.in_channels == 0 || self.out_channels == 0 || sides.contains(&0) {
            return Err(format!("conv {self:?}: a zero size"));
        }
        if sides
            .iter()
            .chain([&self.padding])
            .any(|&s| s > MAX_CONV_SIDE)
            || self.in_channels > MAX_CONV_SIDE
            || self.out_channels > MAX_CONV_SIDE
        {
            return Err(format!("conv {self:?}: a size above {MAX_CONV_SIDE}"));
        }
        if self.padding >= self.kernel
            || self.kernel > self.in_h + 2 * self.padding
            || self.kernel > self.in_w + 2 * self.padding
        {
            return Err(format!(
                "conv {self:?}: the kernel must fit the padded image and padding be below the kernel"
            ));
        }
        Ok(())
    }

    /// Output height.
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Output width.
    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Flattened input length.
    pub fn in_len(&self) -> usize {
        self.in_channels * self.in_h * self.in_w
    }

    /// Flattened output length.
    pub fn out_len(&self) -> usize {
        self.out_channels * self.out_h() * self.out_w()
    }

    /// Length of a kernel row (taps of an interior output).
    pub fn fan_in(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }

    /// For output `o` (CHW): its weight row (the output channel) and the
    /// `(column, input index)` pairs it sums; taps in the padding are left
    /// out (they multiply zero).
    pub fn taps(&self, o: usize) -> (usize, Vec<(usize, usize)>) {
        let (oh, ow) = (self.out_h(), self.out_w());
        let (c, pos) = (o / (oh * ow), o % (oh * ow));
        let (y, x) = (pos / ow, pos % ow);
        let k = self.kernel;
        let mut taps = Vec::with_capacity(self.fan_in());
        for ic in 0..self.in_channels {
            for ky in 0..k {
                let iy = (y * self.stride + ky).checked_sub(self.padding);
                for kx in 0..k {
                    let ix = (x * self.stride + kx).checked_sub(self.padding);
                    if let (Some(iy), Some(ix)) = (iy, ix) {
                        if iy < self.in_h && ix < self.in_w {
                            let col = (ic * k + ky) * k + kx;
                            taps.push((col, (ic * self.in_h + iy) * self.in_w + ix));
                        }
                    }
                }
            }
        }
        (c, taps)
    }

    /// The integers that bind this geometry in a model commitment.
    pub fn header(&self) -> [u64; 7] {
        [
            self.in_channels,
            self.in_h,
            self.in_w,
            self.out_channels,
            self.kernel,
            self.stride,
            self.padding,
        ]
        .map(|v| v as u64)
    }
}

/// A layer's `(input length, output length)`: dense (`conv` is `None`) with
/// `rows` outputs of `row_len` inputs, or the convolution's.
pub fn layer_dims(conv: Option<&Conv2d>, rows: usize, row_len: usize) -> (usize, usize) {
    conv.map_or((row_len, rows), |c| (c.in_len(), c.out_len()))
}

/// A layer's taps for output `o`: its weight row and `(column, input)`
/// pairs. Dense: row `o`, every input `i` at column `i`.
pub fn layer_taps(conv: Option<&Conv2d>, row_len: usize, o: usize) -> (usize, Vec<(usize, usize)>) {
    match conv {
        Some(c) => c.taps(o),
        None => (o, (0..row_len).map(|i| (i, i)).collect()),
    }
}

/// Checks a layer's weight matrix against its geometry: `rows` rows of
/// `row_len`, and for a convolution one row per output channel of
/// `fan_in` columns.
pub fn check_layer(
    conv: Option<&Conv2d>,
    rows: usize,
    row_len: usize,
) -> std::result::Result<(), String> {
    let Some(c) = conv else { return Ok(()) };
    c.check()?;
    if rows != c.out_channels || row_len != c.fan_in() {
        return Err(format!(
            "conv weights are {rows}x{row_len}, the geometry wants {}x{} (out channels x in channels*kernel^2)",
            c.out_channels,
            c.fan_in()
        ));
    }
    Ok(())
}
