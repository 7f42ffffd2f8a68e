//! Portable kernels, and the reference for the SIMD ones.
//!
//! Every 32-element block decodes to integer codes q with w = d·q + offset, so
//! w·a summed over a block = d_w·d_a·Σ q·a_q + offset·d_a·Σ a_q.

use super::{BlockKind, Q8Act, BLOCK};
use half::f16;

#[inline]
pub(super) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Integer codes of one block and its (scale, offset).
fn decode_block(kind: BlockKind, b: &[u8], q: &mut [i32; BLOCK]) -> (f32, f32) {
    let nibbles = |q: &mut [i32; BLOCK], qs: &[u8]| {
        for j in 0..16 {
            q[j] = (qs[j] & 0x0F) as i32;
            q[j + 16] = (qs[j] >> 4) as i32;
        }
    };
    let high_bits = |q: &mut [i32; BLOCK], qh: &[u8]| {
        let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        for (j, v) in q.iter_mut().enumerate() {
            *v |= (((qh >> j) & 1) << 4) as i32;
        }
    };
    let d = f16_at(b, 0);
    match kind {
        BlockKind::Q4_0 => {
            nibbles(q, &b[2..18]);
            (d, -8.0 * d)
        }
        BlockKind::Q4_1 => {
            nibbles(q, &b[4..20]);
            (d, f16_at(b, 2))
        }
        BlockKind::Q5_0 => {
            nibbles(q, &b[6..22]);
            high_bits(q, &b[2..6]);
            (d, -16.0 * d)
        }
        BlockKind::Q5_1 => {
            nibbles(q, &b[8..24]);
            high_bits(q, &b[4..8]);
            (d, f16_at(b, 2))
        }
        BlockKind::Q8_0 => {
            for (j, v) in q.iter_mut().enumerate() {
                *v = b[2 + j] as i8 as i32;
            }
            (d, 0.0)
        }
    }
}

pub(super) fn dot(kind: BlockKind, row: &[u8], act: &[Q8Act]) -> f32 {
    let bb = kind.block_bytes();
    let mut q = [0i32; BLOCK];
    let mut total = 0f32;
    for (b, a) in row.chunks_exact(bb).zip(act) {
        let (d, offset) = decode_block(kind, b, &mut q);
        let isum: i32 = q.iter().zip(&a.qs).map(|(&w, &x)| w * x as i32).sum();
        total += d * a.d * isum as f32 + offset * a.dsum;
    }
    total
}
