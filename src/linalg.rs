//! Single-precision matrix products on `matrixmultiply` (its AVX2/AVX-512 FMA kernels natively, simd128 in wasm):
//! the crate's one call into it, with the sizes checked.

/// `c[m, n] = a[m, k] . b`, all row-major, where `b` is `[k, n]`, or `[n, k]` when `b_transposed` (then the product
/// is `a . b^T`). `c` is overwritten.
///
/// # Panics
/// If a slice is shorter than the matrix its dimensions describe (a bug in the caller, never input data).
pub(crate) fn matmul(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], b_transposed: bool, c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "matmul: a slice is shorter than its matrix");
    if m == 0 || n == 0 {
        return;
    }
    let (rsb, csb) = if b_transposed { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the slices hold at least the matrices the dimensions and strides describe (asserted above).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}
